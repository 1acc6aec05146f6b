"""Validation of ``POST /chat/completions`` bodies, with OpenAI's own messages.

The emulator is strict on purpose: the proxy must send what the real API accepts, so a
body the real API would refuse is refused here too, with the same ``param`` and ``code``
(providers.md §1.1, §1.2, §1.5). DeepSeek (§4) adds its own refusals.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from adapters.emulators.openai.config import OpenAIEmulatorConfig
from adapters.emulators.openai.errors import (
    deepseek_error,
    empty_array,
    invalid,
    missing,
    quote_list,
    wrong_type,
)
from adapters.emulators.openai.messages import validate_messages
from adapters.emulators.tokens import text_of

_TIERS = ("auto", "default", "flex", "scale", "priority", "fast")
_TIER_ECHO = {"flex": "flex", "scale": "scale", "priority": "priority", "fast": "priority"}
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """The facts of a valid request that shape the answer."""

    model: str
    messages: tuple[Mapping[str, Any], ...]
    n: int
    stream: bool
    include_usage: bool
    include_obfuscation: bool
    max_output: int | None
    tools: tuple[Mapping[str, Any], ...]
    tool_choice: Any
    response_format: Mapping[str, Any] | None
    service_tier: str
    thinking: bool
    stop: tuple[str, ...] = ()


def check_number(
    body: Mapping[str, Any], param: str, low: float, high: float, *, integer: bool = False
) -> None:
    value = body.get(param)
    if value is None:
        return
    kind = "integer" if integer else "decimal"
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if not ok or isinstance(value, bool):
        raise wrong_type(param, "an integer" if integer else "a decimal", value)
    if value < low:
        raise invalid(
            f"Invalid '{param}': {kind} below minimum value. Expected a value >= {low:g}, but "
            f"got {value:g} instead.",
            param=param,
            code=f"{kind}_below_min_value",
        )
    if value > high:
        raise invalid(
            f"Invalid '{param}': {kind} above maximum value. Expected a value <= {high:g}, but "
            f"got {value:g} instead.",
            param=param,
            code=f"{kind}_above_max_value",
        )


def validate_chat(body: Any, config: OpenAIEmulatorConfig) -> ChatRequest:
    """Check ``body`` like the real endpoint; raise ``EmulatorError`` on the first problem.

    Model existence is checked by the caller (it needs the clock for DeepSeek)."""
    if not isinstance(body, dict):
        raise wrong_type("body", "an object", body)
    model = body.get("model")
    if model is None:
        raise invalid("you must provide a model parameter")
    if not isinstance(model, str):
        raise wrong_type("model", "a string", model)
    if "messages" not in body:
        raise missing("messages")
    messages = body["messages"]
    if not isinstance(messages, list):
        raise wrong_type("messages", "an array", messages)
    if not messages:
        raise empty_array("messages")
    validate_messages(messages, deepseek=config.is_deepseek)

    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise wrong_type("stream", "a boolean", stream)
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise wrong_type("stream_options", "an object", options)
        if not stream:
            raise invalid(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                param="stream_options",
            )
    options = options or {}

    check_number(body, "n", 1, 128, integer=True)
    check_number(body, "temperature", 0, 2)
    check_number(body, "top_p", 0, 1)
    check_number(body, "presence_penalty", -2, 2)
    check_number(body, "frequency_penalty", -2, 2)
    check_number(body, "max_tokens", 1, 2**31, integer=True)
    check_number(body, "max_completion_tokens", 1, 2**31, integer=True)
    if config.is_reasoning(model):
        _check_reasoning_params(body)

    tier = body.get("service_tier")
    if tier is not None and tier not in _TIERS:
        raise invalid(
            f"Invalid value: '{tier}'. Supported values are: {quote_list(_TIERS)}.",
            param="service_tier",
            code="invalid_value",
        )
    tools = _validate_tools(body.get("tools"))
    tool_choice = _validate_tool_choice(body.get("tool_choice"), tools)
    response_format = _validate_response_format(body.get("response_format"), messages, config)
    stop = _validate_stop(body.get("stop"))
    thinking = body.get("thinking")
    thinking_on = isinstance(thinking, dict) and thinking.get("type") == "enabled"

    max_output = body.get("max_completion_tokens") or body.get("max_tokens")
    return ChatRequest(
        model=model,
        messages=tuple(messages),
        n=int(body.get("n") or 1),
        stream=bool(stream),
        include_usage=bool(options.get("include_usage")),
        include_obfuscation=options.get("include_obfuscation", True) is not False,
        max_output=int(max_output) if max_output is not None else None,
        tools=tools,
        tool_choice=tool_choice,
        response_format=response_format,
        service_tier=_TIER_ECHO.get(str(tier), "default"),
        thinking=thinking_on or (config.is_deepseek and "reasoner" in model),
        stop=stop,
    )


def _check_reasoning_params(body: Mapping[str, Any]) -> None:
    if body.get("max_tokens") is not None:
        raise invalid(
            "Unsupported parameter: 'max_tokens' is not supported with this model. Use "
            "'max_completion_tokens' instead.",
            param="max_tokens",
            code="unsupported_parameter",
        )
    if body.get("stop") is not None:
        raise invalid(
            "Unsupported parameter: 'stop' is not supported with this model.",
            param="stop",
            code="unsupported_parameter",
        )
    temperature = body.get("temperature")
    if temperature is not None and temperature != 1:
        raise invalid(
            f"Unsupported value: 'temperature' does not support {temperature} with this model. "
            "Only the default (1) value is supported.",
            param="temperature",
            code="unsupported_value",
        )


def _validate_stop(stop: Any) -> tuple[str, ...]:
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,)
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise wrong_type("stop", "one of a string or array of strings", stop)
    if len(stop) > 4:
        raise invalid(
            "Invalid 'stop': array too long. Expected an array with maximum length 4, but got "
            f"an array with length {len(stop)} instead.",
            param="stop",
            code="array_above_max_length",
        )
    return tuple(stop)


def _validate_tools(tools: Any) -> tuple[Mapping[str, Any], ...]:
    if tools is None:
        return ()
    if not isinstance(tools, list):
        raise wrong_type("tools", "an array", tools)
    if not tools:
        raise empty_array("tools")
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise wrong_type(f"tools[{i}]", "an object", tool)
        if tool.get("type") != "function":
            raise invalid(
                f"Invalid value: '{tool.get('type')}'. Supported values are: 'function' and "
                "'custom'.",
                param=f"tools[{i}].type",
                code="invalid_value",
            )
        function = tool.get("function")
        if not isinstance(function, dict):
            raise missing(f"tools[{i}].function")
        name = function.get("name")
        if not isinstance(name, str):
            raise missing(f"tools[{i}].function.name")
        if not _TOOL_NAME.match(name):
            raise invalid(
                f"Invalid 'tools[{i}].function.name': string does not match pattern. Expected "
                "a string that matches the pattern '^[a-zA-Z0-9_-]+$'.",
                param=f"tools[{i}].function.name",
                code="invalid_value",
            )
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise wrong_type(f"tools[{i}].function.parameters", "an object", parameters)
    return tuple(tools)


def _validate_tool_choice(choice: Any, tools: tuple[Mapping[str, Any], ...]) -> Any:
    if choice is None:
        return "auto" if tools else "none"
    if not tools and choice != "none":
        raise invalid(
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
            "specified.",
            param="tool_choice",
        )
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise invalid(
                f"Invalid value: '{choice}'. Supported values are: 'none', 'auto', and 'required'.",
                param="tool_choice",
                code="invalid_value",
            )
        return choice
    if not isinstance(choice, dict) or choice.get("type") != "function":
        raise wrong_type("tool_choice", "an object", choice)
    function = choice.get("function")
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str):
        raise missing("tool_choice.function.name")
    if name not in {t["function"]["name"] for t in tools}:
        raise invalid(
            f"Invalid value for 'tool_choice': function '{name}' not found in 'tools'.",
            param="tool_choice",
        )
    return choice


def _validate_response_format(
    fmt: Any, messages: list[Any], config: OpenAIEmulatorConfig
) -> Mapping[str, Any] | None:
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise wrong_type("response_format", "an object", fmt)
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        words = " ".join(text_of(m.get("content")) for m in messages if isinstance(m, dict))
        if "json" not in words.lower():
            raise invalid(
                "'messages' must contain the word 'json' in some form, to use 'response_format' "
                "of type 'json_object'.",
                param="messages",
            )
        return fmt
    if kind == "json_schema":
        if config.is_deepseek:
            raise deepseek_error(
                400, "This response_format type is unavailable now", "invalid_request_error"
            )
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict):
            raise missing("response_format.json_schema")
        if not isinstance(spec.get("name"), str):
            raise missing("response_format.json_schema.name")
        schema = spec.get("schema")
        if schema is not None and not isinstance(schema, dict):
            raise wrong_type("response_format.json_schema.schema", "an object", schema)
        return fmt
    raise invalid(
        f"Invalid value: '{kind}'. Supported values are: 'text', 'json_object', and 'json_schema'.",
        param="response_format.type",
        code="invalid_value",
    )
