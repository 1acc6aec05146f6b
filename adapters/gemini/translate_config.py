"""OpenAI request fields outside the messages, for Gemini: ``tools``/``tool_choice`` to
``functionDeclarations``/``toolConfig``, and sampling, limits, ``stop``, ``n``, ``seed``,
``response_format`` and ``reasoning_effort`` to ``generationConfig``. Pure; what Gemini
cannot express raises ``Unsupported`` naming the field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.errors import Unsupported
from adapters.gemini.schema import convert_schema

_REJECTED = {
    "logit_bias": "logit_bias",
    "prediction": "predicted outputs",
    "audio": "audio output",
    "web_search_options": "web search",
}
_THINKING_BUDGET = {"none": 0, "minimal": 1024, "low": 1024, "medium": 8192, "high": 24576}


# --- tools ---------------------------------------------------------------------------


def declarations(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise Unsupported("tools must be an array.", param="tools")
    found: list[dict[str, Any]] = []
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
        found.append(declaration)
    return found


def tool_config(choice: Any, *, has_tools: bool) -> dict[str, Any] | None:
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


def generation_config(body: Mapping[str, Any]) -> dict[str, Any]:
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
        if not isinstance(effort, str) or effort not in _THINKING_BUDGET:
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
