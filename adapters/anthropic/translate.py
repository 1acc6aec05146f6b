"""OpenAI chat requests as Anthropic Messages requests (providers-2.md §2.2, §2.3, §2.7).
Pure.

- ``system`` and ``developer`` messages are hoisted into ``system`` (joined with "\\n");
  consecutive same-role turns are merged (Anthropic requires alternation); a run of
  ``tool`` messages becomes one user turn of ``tool_result`` blocks.
- Images: data URLs become base64 sources, http(s) URLs url sources.
- Tools: ``{type: function, function: {name, description, parameters, strict}}`` become
  ``{name, description, input_schema, strict}``; ``tool_choice`` auto/none/required/a
  function becomes auto/none/any/tool; ``parallel_tool_calls: false`` sets
  ``disable_parallel_tool_use``.
- ``max_tokens``/``max_completion_tokens`` become ``max_tokens``, which Anthropic
  requires: the model's configured default when the caller gives none.
- JSON: ``response_format`` ``json_schema`` becomes ``output_config.format`` (Anthropic's
  structured outputs, which constrain decoding to the schema); ``json_object`` becomes an
  object schema with any properties. Chosen over the "forced tool" technique because the
  reply stays an ordinary text block, which is what an OpenAI caller parses.
- ``reasoning_effort`` becomes ``thinking`` with a budget (low 1,024, medium 4,096, high
  16,384 tokens, at most ``max_tokens`` - 1) for models configured as thinking models.
- ``stop`` becomes ``stop_sequences``; ``temperature`` (capped at 1.0), ``top_p`` and
  ``user`` (``metadata.user_id``) carry over.

Dropped as harmless (Anthropic has no such knob and the answer does not depend on it):
``store``, ``metadata``, ``service_tier``, ``seed``, ``logit_bias``, ``presence_penalty``,
``frequency_penalty``, ``prediction``, ``modalities``, ``stream_options``. Refused with a
400 naming the field: ``n`` other than 1, ``logprobs``/``top_logprobs``, ``audio``, and
content parts Anthropic cannot read (audio, files).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from adapters.errors import Unsupported

_DROPPED = frozenset(
    {
        "store", "metadata", "service_tier", "seed", "logit_bias", "presence_penalty",
        "frequency_penalty", "prediction", "modalities", "stream_options", "safety_identifier",
        "prompt_cache_key", "verbosity", "web_search_options",
    }
)  # fmt: skip
_HANDLED = frozenset(
    {
        "model", "messages", "max_tokens", "max_completion_tokens", "tools", "tool_choice",
        "parallel_tool_calls", "response_format", "reasoning_effort", "stop", "temperature",
        "top_p", "user", "stream", "n", "cache_control", "top_k",
    }
)  # fmt: skip
_REFUSED = {
    "logprobs": "logprobs",
    "top_logprobs": "logprobs",
    "audio": "audio output",
    "functions": "legacy functions (use tools)",
    "function_call": "legacy functions",
}
_BUDGETS = {"minimal": 1024, "low": 1024, "medium": 4096, "high": 16384}
_DATA_URL = re.compile(r"^data:(image/(?:jpeg|png|gif|webp));base64,(.+)$", re.DOTALL)
_TOOL_ID = re.compile(r"[^a-zA-Z0-9_-]")


def build_request(
    body: Mapping[str, Any], *, max_tokens_default: int, thinking: bool = False
) -> dict[str, Any]:
    """The Messages body for a chat request (``model`` already the upstream model)."""
    for name, what in _REFUSED.items():
        if body.get(name) not in (None, False, 0):
            raise Unsupported(f"Anthropic models do not support {what}.", param=name)
    unknown = sorted(set(body) - _HANDLED - _DROPPED - set(_REFUSED))
    if unknown:
        raise Unsupported(f"'{unknown[0]}' is not supported for Anthropic models.",
                          param=unknown[0])  # fmt: skip
    if body.get("n") not in (None, 1):
        raise Unsupported("Anthropic models return one choice: n must be 1.", param="n")
    system, messages = _messages(body.get("messages"))
    limit = body.get("max_completion_tokens") or body.get("max_tokens") or max_tokens_default
    out: dict[str, Any] = {"model": body["model"], "max_tokens": int(limit), "messages": messages}
    if system:
        out["system"] = system
    tools = body.get("tools")
    if tools:
        out["tools"] = [_tool(tool, i) for i, tool in enumerate(tools)]
    choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
    if choice is not None:
        out["tool_choice"] = choice
    fmt = _format(body.get("response_format"))
    if fmt is not None:
        out["output_config"] = {"format": fmt}
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("temperature") is not None:
        out["temperature"] = min(float(body["temperature"]), 1.0)
    for name in ("top_p", "top_k"):
        if body.get(name) is not None:
            out[name] = body[name]
    if body.get("user"):
        out["metadata"] = {"user_id": str(body["user"])}
    effort = body.get("reasoning_effort")
    if effort is not None and effort != "none" and thinking:
        budget = min(_BUDGETS.get(str(effort), 4096), int(limit) - 1)
        if budget >= 1024:
            out["thinking"] = {"type": "enabled", "budget_tokens": budget}
            out.pop("temperature", None)  # thinking requires the default temperature
    if body.get("cache_control") is not None:
        out["cache_control"] = body["cache_control"]  # the caller's own, respected as is
    if body.get("stream"):
        out["stream"] = True
    return out


def _messages(given: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    if not isinstance(given, list) or not given:
        raise Unsupported("messages must be a non-empty array.", param="messages")
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for index, message in enumerate(given):
        where = f"messages[{index}]"
        if not isinstance(message, Mapping):
            raise Unsupported(f"{where} must be an object.", param=where)
        role = message.get("role")
        if role in ("system", "developer"):
            system += _system_blocks(message.get("content"), where)
            continue
        if role == "tool":
            block = {"type": "tool_result", "tool_use_id": _tool_id(message.get("tool_call_id")),
                     "content": _tool_content(message.get("content"), where)}  # fmt: skip
            _append(turns, "user", [block])
        elif role == "assistant":
            blocks = _blocks(message.get("content"), where, assistant=True)
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                try:
                    arguments = orjson.loads(function.get("arguments") or "{}")
                except orjson.JSONDecodeError:
                    raise Unsupported(f"{where}.tool_calls arguments must be JSON.",
                                      param=f"{where}.tool_calls") from None  # fmt: skip
                blocks.append({"type": "tool_use", "id": _tool_id(call.get("id")),
                               "name": function.get("name"), "input": arguments})  # fmt: skip
            _append(turns, "assistant", blocks)
        elif role == "user":
            _append(turns, "user", _blocks(message.get("content"), where, assistant=False))
        else:
            raise Unsupported(f"{where}.role {role!r} is not supported.", param=f"{where}.role")
    if not turns:
        raise Unsupported("At least one user message is required.", param="messages")
    if turns[0]["role"] != "user":
        # Anthropic's first turn must be the user's.
        turns.insert(0, {"role": "user", "content": [{"type": "text", "text": "(continue)"}]})
    return system, turns


def _append(turns: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    if not blocks:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"].extend(blocks)  # Anthropic requires alternating roles
    else:
        turns.append({"role": role, "content": blocks})


def _system_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    blocks = _blocks(content, where, assistant=False)
    if any(block["type"] != "text" for block in blocks):
        raise Unsupported("System messages may only hold text.", param=f"{where}.content")
    return blocks


def _blocks(content: Any, where: str, *, assistant: bool) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise Unsupported(
            f"{where}.content must be a string or an array.", param=f"{where}.content"
        )
    blocks: list[dict[str, Any]] = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "text":
            block: dict[str, Any] = {"type": "text", "text": part.get("text", "")}
            if part.get("cache_control") is not None:
                block["cache_control"] = part["cache_control"]
            blocks.append(block)
        elif kind == "image_url" and not assistant:
            blocks.append(_image(part.get("image_url") or {}, f"{where}.content[{index}]"))
        elif kind == "refusal" and assistant:
            blocks.append({"type": "text", "text": part.get("refusal", "")})
        else:
            raise Unsupported(f"Content parts of type {kind!r} are not supported for Anthropic.",
                              param=f"{where}.content[{index}]")  # fmt: skip
    return blocks


def _image(image: Mapping[str, Any], where: str) -> dict[str, Any]:
    url = str(image.get("url") or "")
    found = _DATA_URL.match(url)
    if found is not None:
        source = {"type": "base64", "media_type": found.group(1), "data": found.group(2)}
        return {"type": "image", "source": source}
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise Unsupported("Images must be https URLs or base64 data URLs of jpeg, png, gif or "
                      "webp.", param=where)  # fmt: skip


def _tool_content(content: Any, where: str) -> Any:
    if isinstance(content, str):
        return content
    return _blocks(content, where, assistant=False)


def _tool_id(value: Any) -> str:
    # Anthropic ids match ^[a-zA-Z0-9_-]+$; ids from other providers may not.
    return _TOOL_ID.sub("_", str(value or "call")) or "call"


def _tool(tool: Any, index: int) -> dict[str, Any]:
    function = tool.get("function") if isinstance(tool, Mapping) else None
    if not isinstance(tool, Mapping) or tool.get("type") != "function" or not function:
        raise Unsupported("Only function tools are supported.", param=f"tools[{index}]")
    schema = function.get("parameters") or {"type": "object", "properties": {}}
    out = {"name": function.get("name"), "input_schema": schema}
    if function.get("description"):
        out["description"] = function["description"]
    if function.get("strict") is not None:
        out["strict"] = function["strict"]
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if choice is None and parallel is not False:
        return None
    if choice in (None, "auto"):
        out: dict[str, Any] = {"type": "auto"}
    elif choice == "none":
        return {"type": "none"}
    elif choice == "required":
        out = {"type": "any"}
    elif isinstance(choice, Mapping) and choice.get("type") == "function":
        out = {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    else:
        raise Unsupported("tool_choice must be none, auto, required or a function.",
                          param="tool_choice")  # fmt: skip
    if parallel is False:
        out["disable_parallel_tool_use"] = True
    return out


def _format(fmt: Any) -> dict[str, Any] | None:
    if not isinstance(fmt, Mapping) or fmt.get("type") in (None, "text"):
        return None
    if fmt.get("type") == "json_object":
        return {"type": "json_schema", "schema": {"type": "object"}}
    if fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema") or {"type": "object"}
        return {"type": "json_schema", "schema": schema}
    raise Unsupported(f"response_format {fmt.get('type')!r} is not supported.",
                      param="response_format")  # fmt: skip
