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
from adapters.gemini_translate_schema import convert_schema

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
_REJECTED = {
    "logit_bias": "logit_bias",
    "prediction": "predicted outputs",
    "audio": "audio output",
    "web_search_options": "web search",
}
_THINKING_BUDGET = {"none": 0, "minimal": 1024, "low": 1024, "medium": 8192, "high": 24576}
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
        payload["tools"] = [{"functionDeclarations": _declarations(tools)}]
    tool_config = _tool_config(body.get("tool_choice"), has_tools=bool(tools))
    if tool_config is not None:
        payload["toolConfig"] = tool_config
    generation = _generation_config(body)
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


# --- tools ---------------------------------------------------------------------------


def _declarations(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise Unsupported("tools must be an array.", param="tools")
    declarations: list[dict[str, Any]] = []
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        kind = tool.get("type") if isinstance(tool, Mapping) else None
        if kind != "function":
            raise Unsupported(
                f"{where}.type {kind!r} cannot be expressed for Gemini (function tools only).",
                param=f"{where}.type",
            )
        fn = tool.get("function")
        name = fn.get("name") if isinstance(fn, Mapping) else None
        if not isinstance(fn, Mapping) or not isinstance(name, str) or not name:
            raise Unsupported(f"{where}.function.name is required.", param=where)
        declaration: dict[str, Any] = {"name": name}
        if isinstance(fn.get("description"), str):
            declaration["description"] = fn["description"]
        parameters = fn.get("parameters")
        # Gemini rejects an OBJECT with no properties, which is how OpenAI callers spell
        # "no arguments": leave parameters out instead.
        if isinstance(parameters, Mapping) and parameters.get("properties"):
            declaration["parameters"] = convert_schema(
                parameters, param=f"{where}.function.parameters"
            )
        declarations.append(declaration)
    return declarations


def _tool_config(choice: Any, *, has_tools: bool) -> dict[str, Any] | None:
    if choice is None or (choice == "none" and not has_tools):
        return None
    if not has_tools:
        raise Unsupported("tool_choice requires tools.", param="tool_choice")
    if choice in ("none", "auto", "required"):
        mode = {"none": "NONE", "auto": "AUTO", "required": "ANY"}[choice]
        return {"functionCallingConfig": {"mode": mode}}
    if isinstance(choice, Mapping) and choice.get("type") == "function":
        fn = choice.get("function")
        name = fn.get("name") if isinstance(fn, Mapping) else None
        if isinstance(name, str) and name:
            return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}
    if isinstance(choice, Mapping) and choice.get("type") == "allowed_tools":
        allowed = choice.get("allowed_tools")
        if isinstance(allowed, Mapping) and allowed.get("mode") == "required":
            names = [
                t["function"]["name"]
                for t in allowed.get("tools") or []
                if isinstance(t, Mapping) and isinstance(t.get("function"), Mapping)
            ]
            return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": names}}
        raise Unsupported(
            "tool_choice allowed_tools with mode auto cannot be expressed for Gemini "
            "(it restricts functions only when a call is required).",
            param="tool_choice",
        )
    raise Unsupported(f"tool_choice {choice!r} is not supported for Gemini.", param="tool_choice")


# --- generation config ---------------------------------------------------------------


def _generation_config(body: Mapping[str, Any]) -> dict[str, Any]:
    for key, what in _REJECTED.items():
        if body.get(key):
            raise Unsupported(f"{what} ({key}) cannot be expressed for Gemini.", param=key)
    if body.get("logprobs") or body.get("top_logprobs"):
        raise Unsupported("logprobs are not supported for Gemini here.", param="logprobs")
    modalities = body.get("modalities")
    if isinstance(modalities, list) and any(m != "text" for m in modalities):
        raise Unsupported("Gemini is served for text output only.", param="modalities")

    config: dict[str, Any] = {}
    for source, target in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ):
        if body.get(source) is not None:
            config[target] = body[source]
    limit = body.get("max_completion_tokens")
    if limit is None:
        limit = body.get("max_tokens")
    if limit is not None:
        config["maxOutputTokens"] = limit
    stop = body.get("stop")
    if isinstance(stop, str):
        config["stopSequences"] = [stop]
    elif isinstance(stop, list) and stop:
        config["stopSequences"] = list(stop)
    n = body.get("n")
    if n is not None and n != 1:
        config["candidateCount"] = n
    config.update(_response_format(body.get("response_format")))
    effort = body.get("reasoning_effort")
    if effort is not None:
        if effort not in _THINKING_BUDGET:
            accepted = ", ".join(_THINKING_BUDGET)
            raise Unsupported(
                f"reasoning_effort {effort!r} has no Gemini thinking budget ({accepted}).",
                param="reasoning_effort",
            )
        config["thinkingConfig"] = {"thinkingBudget": _THINKING_BUDGET[effort]}
    return config


def _response_format(fmt: Any) -> dict[str, Any]:
    if fmt is None:
        return {}
    kind = fmt.get("type") if isinstance(fmt, Mapping) else None
    if kind == "text":
        return {}
    if kind == "json_object":
        return {"responseMimeType": "application/json"}
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        if schema is None:
            return {"responseMimeType": "application/json"}
        return {
            "responseMimeType": "application/json",
            "responseSchema": convert_schema(schema, param="response_format.json_schema.schema"),
        }
    raise Unsupported(f"response_format {kind!r} is not supported.", param="response_format")
