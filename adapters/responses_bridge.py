"""The Responses API over chat completions, for providers without a Responses API of
their own (Gemini, DeepSeek, and any provider reached through chat translation).

Pure translation, both ways:

- ``to_chat(request)``: ``instructions`` and input items to messages (text, images,
  assistant history, function calls and their outputs), flat function tools to chat
  tools, ``tool_choice``, ``text.format`` to ``response_format``, ``max_output_tokens``,
  ``reasoning.effort``, ``temperature``, ``top_p``. What a chat provider cannot do is an
  ``Unsupported`` error naming the field: built-in tools (web search, file search, ...),
  server-side state (``previous_response_id``, ``conversation``, stored ``prompt``
  templates), file inputs, and OpenAI's own ``background`` mode. Fields that only tune
  OpenAI's service (``store``, ``include``, ``metadata``, ``user``, ``safety_identifier``,
  ``service_tier``, ``prompt_cache_key``, ``truncation``, ``stream_options``, ...) are
  dropped: a bridged response is never stored, so nothing depends on them.
- ``to_response(completion, request, ...)``: a ``chat.completion`` as a ``response``
  object (``function_call`` items, then the ``message``); ``finish_reason: "length"``
  becomes ``status: "incomplete"``.
- ``StreamBridge``: chat chunks in, the Responses event sequence out (``response.created``
  ... ``response.completed``), ``sequence_number`` from 0.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Mapping
from typing import Any

from adapters.errors import Unsupported

_DROPPED = frozenset(
    {
        "store", "include", "metadata", "user", "safety_identifier", "service_tier",
        "prompt_cache_key", "prompt_cache_options", "prompt_cache_retention", "truncation",
        "stream_options", "parallel_tool_calls", "max_tool_calls", "top_logprobs",
        "context_management", "moderation",
    }
)  # fmt: skip
_REFUSED = {
    "previous_response_id": "keeps no conversation state",
    "conversation": "keeps no conversation state",
    "prompt": "has no stored prompt templates",
    "background": "has no background mode (defer with X-Latency-Tolerance instead)",
}
_KNOWN = frozenset(
    {"model", "input", "instructions", "tools", "tool_choice", "text", "reasoning",
     "max_output_tokens", "temperature", "top_p", "stream"}
)  # fmt: skip
_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def new_id(prefix: str, length: int = 32) -> str:
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(length))


# --- request --------------------------------------------------------------------------------


def to_chat(request: Mapping[str, Any], *, provider: str) -> dict[str, Any]:
    """The chat completions body for a Responses request (``model`` as given)."""
    for name, why in _REFUSED.items():
        value = request.get(name)
        if value not in (None, False):
            raise Unsupported(f"'{name}' is not supported: {provider} {why}.", param=name)
    unknown = sorted(set(request) - _KNOWN - _DROPPED - set(_REFUSED))
    if unknown:
        raise Unsupported(
            f"'{unknown[0]}' is not supported for {provider} models.", param=unknown[0]
        )
    messages: list[dict[str, Any]] = []
    if request.get("instructions"):
        messages.append({"role": "system", "content": str(request["instructions"])})
    messages += _messages(request.get("input"))
    chat: dict[str, Any] = {"model": request.get("model"), "messages": messages}
    tools = _tools(request.get("tools"), provider)
    if tools:
        chat["tools"] = tools
    if request.get("tool_choice") is not None:
        chat["tool_choice"] = _tool_choice(request["tool_choice"])
    fmt = _format(request.get("text"))
    if fmt is not None:
        chat["response_format"] = fmt
    if request.get("max_output_tokens") is not None:
        chat["max_tokens"] = request["max_output_tokens"]
    effort = (request.get("reasoning") or {}).get("effort")
    if effort is not None:
        chat["reasoning_effort"] = effort
    for name in ("temperature", "top_p"):
        if request.get(name) is not None:
            chat[name] = request[name]
    if request.get("stream") is True:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


def _messages(given: Any) -> list[dict[str, Any]]:
    if given is None:
        raise Unsupported("Missing required parameter: 'input'.", param="input")
    if isinstance(given, str):
        return [{"role": "user", "content": given}]
    if not isinstance(given, list):
        raise Unsupported("'input' must be a string or an array of items.", param="input")
    messages: list[dict[str, Any]] = []
    for index, item in enumerate(given):
        where = f"input[{index}]"
        if not isinstance(item, Mapping):
            raise Unsupported(f"{where} must be an object.", param=where)
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise Unsupported(f"{where}.role must be user, assistant, system or developer.",
                                  param=f"{where}.role")  # fmt: skip
            messages.append({"role": role, "content": _content(item.get("content"), where)})
        elif kind == "function_call":
            call = {
                "id": item.get("call_id"),
                "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments", "")},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            if not isinstance(output, str):
                raise Unsupported(f"{where}.output must be a string here.", param=f"{where}.output")
            messages.append(
                {"role": "tool", "tool_call_id": item.get("call_id"), "content": output}
            )
        elif kind == "reasoning":
            continue  # another model's reasoning: nothing a chat provider can read
        else:
            raise Unsupported(f"Input items of type '{kind}' are not supported here.",
                              param=f"{where}.type")  # fmt: skip
    return messages


def _content(content: Any, where: str) -> Any:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise Unsupported(
            f"{where}.content must be a string or an array.", param=f"{where}.content"
        )
    parts: list[dict[str, Any]] = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind in ("input_text", "output_text"):
            parts.append({"type": "text", "text": part.get("text", "")})
        elif kind == "input_image" and part.get("image_url"):
            image = {"url": part["image_url"]}
            if part.get("detail") in ("low", "high", "auto"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        else:
            raise Unsupported(
                f"Content parts of type '{kind}' are not supported here (files and file ids "
                "are kept by OpenAI only).",
                param=f"{where}.content[{index}]",
            )
    if parts and all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)  # assistant history must be text
    return parts


def _tools(tools: Any, provider: str) -> list[dict[str, Any]]:
    out = []
    for index, tool in enumerate(tools or []):
        kind = tool.get("type") if isinstance(tool, Mapping) else None
        if kind != "function":
            raise Unsupported(
                f"Built-in tool '{kind}' is not available for {provider} models; only "
                "function tools are.",
                param=f"tools[{index}]",
            )
        function = {"name": tool.get("name"), "parameters": tool.get("parameters") or {}}
        if tool.get("description"):
            function["description"] = tool["description"]
        if tool.get("strict") is not None:
            function["strict"] = tool["strict"]
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any) -> Any:
    if choice in ("none", "auto", "required"):
        return choice
    if isinstance(choice, Mapping) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    raise Unsupported("tool_choice must be none, auto, required or a function.",
                      param="tool_choice")  # fmt: skip


def _format(text: Any) -> dict[str, Any] | None:
    fmt = text.get("format") if isinstance(text, Mapping) else None
    if not isinstance(fmt, Mapping) or fmt.get("type") in (None, "text"):
        return None
    if fmt.get("type") == "json_object":
        return {"type": "json_object"}
    if fmt.get("type") == "json_schema":
        inner = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        return {"type": "json_schema", "json_schema": inner}
    raise Unsupported(f"text.format '{fmt.get('type')}' is not supported.", param="text.format")


# --- reply ----------------------------------------------------------------------------------


def to_response(
    completion: Mapping[str, Any], request: Mapping[str, Any], *, response_id: str
) -> dict[str, Any]:
    choices = completion.get("choices") or [{}]
    choice = choices[0]
    message = choice.get("message") or {}
    output: list[dict[str, Any]] = [
        _call_item(call) for call in message.get("tool_calls") or [] if isinstance(call, Mapping)
    ]
    if message.get("content") is not None or not output:
        output.append(_message_item(str(message.get("content") or ""), new_id("msg_")))
    incomplete = choice.get("finish_reason") == "length"
    created = int(completion.get("created") or 0)
    return _envelope(
        request,
        response_id=response_id,
        model=str(completion.get("model") or request.get("model")),
        created=created,
        status="incomplete" if incomplete else "completed",
        output=output,
        usage=response_usage(completion.get("usage")),
    )


def _envelope(
    request: Mapping[str, Any],
    *,
    response_id: str,
    model: str,
    created: int,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
) -> dict[str, Any]:
    text = request.get("text")
    done = status in ("completed", "incomplete")
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": status,
        "background": False,
        "completed_at": created if status == "completed" else None,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "model": model,
        "output": output,
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": {"effort": (request.get("reasoning") or {}).get("effort"), "summary": None},
        "service_tier": "default",
        "temperature": request.get("temperature", 1.0),
        "text": text if isinstance(text, dict) else {"format": {"type": "text"}},
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": request.get("tools") or [],
        "top_p": request.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": usage if done else None,
        "metadata": request.get("metadata") or {},
    }


def _message_item(text: str, item_id: str, status: str = "completed") -> dict[str, Any]:
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"type": "message", "id": item_id, "status": status, "role": "assistant",
            "content": [part]}  # fmt: skip


def _call_item(call: Mapping[str, Any], status: str = "completed") -> dict[str, Any]:
    function = call.get("function") or {}
    return {
        "type": "function_call",
        "id": new_id("fc_"),
        "call_id": str(call.get("id") or new_id("call_", 24)),
        "name": str(function.get("name") or ""),
        "arguments": str(function.get("arguments") or ""),
        "status": status,
    }


def response_usage(usage: Any) -> dict[str, Any] | None:
    if not isinstance(usage, Mapping):
        return None
    details = usage.get("prompt_tokens_details") or {}
    output_details = usage.get("completion_tokens_details") or {}
    cached = details.get("cached_tokens") or usage.get("prompt_cache_hit_tokens") or 0
    prompt, completion = (
        int(usage.get("prompt_tokens") or 0),
        int(usage.get("completion_tokens") or 0),
    )
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": int(cached), "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {
            "reasoning_tokens": int(output_details.get("reasoning_tokens") or 0)
        },
        "total_tokens": int(usage.get("total_tokens") or prompt + completion),
    }


# --- stream ---------------------------------------------------------------------------------


class StreamBridge:
    """Chat chunks in (parsed), Responses events out. Text and tool-call deltas are
    relayed as they come; every item is closed, and ``response.completed`` (or
    ``response.incomplete``) sent, when the chat stream ends."""

    def __init__(self, request: Mapping[str, Any], *, response_id: str, created: int) -> None:
        self._request = request
        self._id = response_id
        self._created = created
        self._model = str(request.get("model") or "")
        self._seq = 0
        self._output: list[dict[str, Any]] = []  # items as they grow
        self._text_index: int | None = None
        self._calls: dict[int, int] = {}  # chat tool-call index -> output index
        self._finish: str | None = None
        self._usage: dict[str, Any] | None = None

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return event

    def _snapshot(self, status: str) -> dict[str, Any]:
        return _envelope(self._request, response_id=self._id, model=self._model,
                         created=self._created, status=status, output=list(self._output),
                         usage=self._usage)  # fmt: skip

    def start(self) -> Iterator[dict[str, Any]]:
        yield self._event("response.created", response=self._snapshot("in_progress"))
        yield self._event("response.in_progress", response=self._snapshot("in_progress"))

    def feed(self, chunk: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        if chunk.get("model"):
            self._model = str(chunk["model"])
        usage = response_usage(chunk.get("usage"))
        if usage is not None:
            self._usage = usage
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                yield from self._text(str(delta["content"]))
            for call in delta.get("tool_calls") or []:
                yield from self._call(call)
            if choice.get("finish_reason"):
                self._finish = str(choice["finish_reason"])

    def _text(self, piece: str) -> Iterator[dict[str, Any]]:
        if self._text_index is None:
            self._text_index = len(self._output)
            item = _message_item("", new_id("msg_"), status="in_progress")
            item["content"] = []
            self._output.append(item)
            yield self._event("response.output_item.added", output_index=self._text_index,
                              item=dict(item, content=[]))  # fmt: skip
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            item["content"] = [part]
            yield self._event(
                "response.content_part.added",
                item_id=item["id"],
                output_index=self._text_index,
                content_index=0,
                part=dict(part),
            )
        item = self._output[self._text_index]
        item["content"][0]["text"] += piece
        yield self._event("response.output_text.delta", item_id=item["id"],
                          output_index=self._text_index, content_index=0, delta=piece,
                          logprobs=[])  # fmt: skip

    def _call(self, call: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        index = int(call.get("index") or 0)
        function = call.get("function") or {}
        if index not in self._calls:
            self._calls[index] = len(self._output)
            item = _call_item({"id": call.get("id"), "function": {"name": function.get("name")}},
                              status="in_progress")  # fmt: skip
            self._output.append(item)
            yield self._event("response.output_item.added", output_index=self._calls[index],
                              item=dict(item))  # fmt: skip
        where = self._calls[index]
        item = self._output[where]
        piece = str(function.get("arguments") or "")
        if piece:
            item["arguments"] += piece
            yield self._event("response.function_call_arguments.delta", item_id=item["id"],
                              output_index=where, delta=piece)  # fmt: skip

    def finish(self) -> Iterator[dict[str, Any]]:
        for where, item in enumerate(self._output):
            item["status"] = "completed"
            if item["type"] == "message":
                part = item["content"][0]
                yield self._event("response.output_text.done", item_id=item["id"],
                                  output_index=where, content_index=0, text=part["text"],
                                  logprobs=[])  # fmt: skip
                yield self._event("response.content_part.done", item_id=item["id"],
                                  output_index=where, content_index=0, part=dict(part))  # fmt: skip
            else:
                yield self._event("response.function_call_arguments.done", item_id=item["id"],
                                  output_index=where, name=item["name"],
                                  arguments=item["arguments"])  # fmt: skip
            yield self._event("response.output_item.done", output_index=where, item=dict(item))
        if self._finish == "length":
            final = self._snapshot("incomplete")
            yield self._event("response.incomplete", response=final)
        else:
            yield self._event("response.completed", response=self._snapshot("completed"))
