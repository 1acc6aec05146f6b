"""OpenAI ``chat.completions`` request to Gemini ``generateContent`` (REST v1beta, camelCase).

Pure: ``build_request(body)`` returns the model and the request body, or raises
``Unsupported`` (a 400 naming the field) for what Gemini cannot express.

Mapping rules:

- ``system``/``developer`` messages become ``systemInstruction`` parts, in order, wherever
  they appear (Gemini has one system instruction and it is text only);
- ``user``/``tool`` become ``user`` turns, ``assistant`` becomes ``model``; consecutive
  turns of one role are merged, as Gemini wants strict alternation;
- empty text is dropped (Gemini rejects empty text parts), ``image_url``/``file`` data
  URLs and ``input_audio`` become ``inlineData``; remote URLs and file ids cannot be
  fetched by Gemini here and are rejected;
- assistant ``tool_calls`` become ``functionCall`` parts with parsed ``args`` (and their
  ``extra_content.google.thought_signature`` back as ``thoughtSignature``); ``tool``
  messages become ``functionResponse`` parts named after the call they answer (a JSON
  object result is sent as it is, anything else as ``{"content": text}``);
- ``tools``/``tool_choice`` become ``functionDeclarations``/``toolConfig``; sampling,
  ``stop``, ``n``, ``seed``, token limits, ``response_format`` and ``reasoning_effort``
  become ``generationConfig``.
"""

from __future__ import annotations

import base64
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from adapters.errors import Unsupported
from adapters.gemini.translate_config import declarations, generation_config, tool_config

# Fields that carry nothing Gemini needs (routing hints, bookkeeping, stream switches).
_IGNORED = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "user",
        "metadata",
        "store",
        "service_tier",
        "parallel_tool_calls",
        "prompt_cache_key",
        "prompt_cache_retention",
        "prompt_cache_options",
        "safety_identifier",
    }
)
_AUDIO_MIME = {"wav": "audio/wav", "mp3": "audio/mp3"}


@dataclass(frozen=True, slots=True)
class GeminiCall:
    """One translated request: ``model`` is the bare id used in ``models/{model}``."""

    model: str
    payload: dict[str, Any]


def build_request(body: Mapping[str, Any]) -> GeminiCall:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise Unsupported("model is required.", param="model")
    system, contents = _messages(body.get("messages"))
    payload: dict[str, Any] = {"contents": contents}
    if system:
        payload["systemInstruction"] = {"parts": system}
    tools = body.get("tools")
    if tools:
        payload["tools"] = [{"functionDeclarations": declarations(tools)}]
    config = tool_config(body.get("tool_choice"), has_tools=bool(tools))
    if config is not None:
        payload["toolConfig"] = config
    generation = generation_config(body)
    if generation:
        payload["generationConfig"] = generation
    return GeminiCall(model=model.removeprefix("models/"), payload=payload)


# --- messages ------------------------------------------------------------------------


def _messages(messages: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    if not isinstance(messages, list) or not messages:
        raise Unsupported("messages must be a non-empty array.", param="messages")
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise Unsupported(f"{where} must be an object.", param=where)
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_text_parts(message.get("content"), f"{where}.content", system=True))
            continue
        if role == "user":
            turn_role, parts = "user", _user_parts(message.get("content"), f"{where}.content")
        elif role == "assistant":
            turn_role, parts = "model", _assistant_parts(message, where, call_names)
        elif role == "tool":
            call_id = message.get("tool_call_id")
            name = call_names.get(call_id) if isinstance(call_id, str) else None
            if name is None:
                raise Unsupported(
                    f"{where}.tool_call_id {call_id!r} does not answer any earlier assistant "
                    "tool call; Gemini needs the function name.",
                    param=f"{where}.tool_call_id",
                )
            turn_role, parts = "user", [_function_response(name, message.get("content"), where)]
        elif role == "function":
            name = message.get("name")
            if not isinstance(name, str) or not name:
                raise Unsupported(f"{where}.name is required.", param=f"{where}.name")
            turn_role, parts = "user", [_function_response(name, message.get("content"), where)]
        else:
            raise Unsupported(f"{where}.role {role!r} is not supported.", param=f"{where}.role")
        if not parts:
            continue
        if contents and contents[-1]["role"] == turn_role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": turn_role, "parts": parts})
    if not contents:
        raise Unsupported(
            "Gemini needs at least one user or assistant message with content.",
            param="messages",
        )
    return system, contents


def _text_parts(content: Any, where: str, *, system: bool = False) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    if not isinstance(content, list):
        raise Unsupported(f"{where} must be a string or an array of parts.", param=where)
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind in ("text", "refusal"):
            text = part.get(kind)
            if not isinstance(text, str):
                raise Unsupported(f"{where}[{j}].{kind} must be a string.", param=where)
            if text:
                parts.append({"text": text})
        else:
            what = "Gemini's system instruction" if system else "this message"
            raise Unsupported(
                f"{where}[{j}]: content part {kind!r} is not supported in {what} (text only).",
                param=f"{where}[{j}]",
            )
    return parts


def _user_parts(content: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        return _text_parts(content, where)
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        at = f"{where}[{j}]"
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, Mapping) else image
            parts.append(_inline_data(url, f"{at}.image_url.url"))
        elif kind == "input_audio":
            audio = part.get("input_audio")
            fmt = audio.get("format") if isinstance(audio, Mapping) else None
            data = audio.get("data") if isinstance(audio, Mapping) else None
            if fmt not in _AUDIO_MIME or not isinstance(data, str):
                raise Unsupported(
                    f"{at}.input_audio needs base64 data and format wav or mp3.", param=at
                )
            parts.append({"inlineData": {"mimeType": _AUDIO_MIME[fmt], "data": data}})
        elif kind == "file":
            file = part.get("file")
            data = file.get("file_data") if isinstance(file, Mapping) else None
            if not isinstance(data, str):
                raise Unsupported(
                    f"{at}.file: only inline file_data (a data: URL) can be sent to Gemini; "
                    "file ids belong to another provider.",
                    param=at,
                )
            parts.append(_inline_data(data, f"{at}.file.file_data"))
        else:
            parts.extend(_text_parts([part], where))
    return parts


def _inline_data(url: Any, where: str) -> dict[str, Any]:
    if not isinstance(url, str) or not url.startswith("data:") or "," not in url:
        raise Unsupported(
            f"{where} must be a data: URL (base64); Gemini cannot fetch remote URLs here.",
            param=where,
        )
    header, data = url[5:].split(",", 1)
    fields = header.split(";")
    mime = fields[0] or "text/plain"
    if "base64" not in fields[1:]:
        data = base64.b64encode(urllib.parse.unquote_to_bytes(data)).decode("ascii")
    return {"inlineData": {"mimeType": mime, "data": data}}


def _assistant_parts(
    message: Mapping[str, Any], where: str, call_names: dict[str, str]
) -> list[dict[str, Any]]:
    if message.get("audio"):
        raise Unsupported(f"{where}.audio cannot be sent to Gemini.", param=f"{where}.audio")
    parts = _text_parts(message.get("content"), f"{where}.content")
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise Unsupported(f"{where}.tool_calls must be an array.", param=f"{where}.tool_calls")
    legacy = message.get("function_call")
    if isinstance(legacy, Mapping):
        calls = [*calls, {"id": None, "type": "function", "function": legacy}]
    for k, call in enumerate(calls):
        at = f"{where}.tool_calls[{k}]"
        fn = call.get("function") if isinstance(call, Mapping) else None
        name = fn.get("name") if isinstance(fn, Mapping) else None
        if not isinstance(fn, Mapping) or not isinstance(name, str) or not name:
            raise Unsupported(f"{at}.function.name is required.", param=at)
        args = _arguments(fn.get("arguments"), f"{at}.function.arguments")
        call_id = call.get("id")
        if isinstance(call_id, str):
            call_names[call_id] = name
        part: dict[str, Any] = {"functionCall": {"name": name, "args": args}}
        signature = _thought_signature(call)
        if signature is not None:
            part["thoughtSignature"] = signature
        parts.append(part)
    return parts


def _thought_signature(call: Any) -> str | None:
    # Gemini 3 refuses a tool loop whose function calls lost their thought signatures;
    # they travel as Google's own OpenAI-compatible endpoint carries them.
    extra = call.get("extra_content") if isinstance(call, Mapping) else None
    google = extra.get("google") if isinstance(extra, Mapping) else None
    signature = google.get("thought_signature") if isinstance(google, Mapping) else None
    return signature if isinstance(signature, str) and signature else None


def _arguments(raw: Any, where: str) -> dict[str, Any]:
    if raw is None or raw == "":
        return {}
    try:
        value = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
    except orjson.JSONDecodeError:
        raise Unsupported(f"{where} is not valid JSON.", param=where) from None
    if not isinstance(value, dict):
        raise Unsupported(f"{where} must be a JSON object for Gemini.", param=where)
    return value


def _function_response(name: str, content: Any, where: str) -> dict[str, Any]:
    text = "".join(part["text"] for part in _text_parts(content, f"{where}.content"))
    try:
        parsed = orjson.loads(text) if text else None
    except orjson.JSONDecodeError:
        parsed = None
    response = parsed if isinstance(parsed, dict) else {"content": text}
    return {"functionResponse": {"name": name, "response": response}}
