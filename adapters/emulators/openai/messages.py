"""Validation of the ``messages`` array (providers.md §1.2).

Besides shapes, OpenAI enforces the tool-call conversation order: an assistant message
with ``tool_calls`` must be followed by one ``tool`` message per call id, and a ``tool``
message must answer such a call. Proxies that reorder or drop messages break this, so
the emulator refuses it with the real messages (typo "preceeding" included).
"""

from __future__ import annotations

from typing import Any

from adapters.emulators.openai.errors import (
    EmulatorError,
    deepseek_error,
    invalid,
    missing,
    quote_list,
    wrong_type,
)

ROLES = ("system", "assistant", "user", "function", "tool", "developer")
_PART_TYPES: dict[str, tuple[str, ...]] = {
    "user": ("text", "image_url", "input_audio", "file"),
    "assistant": ("text", "refusal"),
}


def validate_messages(messages: list[Any], *, deepseek: bool) -> None:
    pending: list[str] = []  # call ids of the last assistant message not yet answered
    pending_at = 0
    for i, message in enumerate(messages):
        param = f"messages[{i}]"
        if not isinstance(message, dict):
            raise wrong_type(param, "an object", message)
        role = message.get("role")
        if role is None:
            raise missing(f"{param}.role")
        if role not in ROLES:
            raise invalid(
                f"Invalid value: '{role}'. Supported values are: {quote_list(ROLES)}.",
                param=f"{param}.role",
                code="invalid_value",
            )
        if pending and role != "tool":
            raise _unanswered(pending, pending_at)
        _check_fields(message, role, param)
        _check_content(message.get("content"), role, param, deepseek=deepseek)
        if role == "tool":
            call_id = message["tool_call_id"]
            if call_id not in pending:
                raise invalid(
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceeding message with 'tool_calls'.",
                    param=f"messages.[{i}].role",
                )
            pending.remove(call_id)
        elif role == "assistant" and message.get("tool_calls"):
            pending = _tool_call_ids(message["tool_calls"], param)
            pending_at = i
    if pending:
        raise _unanswered(pending, pending_at)


def _unanswered(pending: list[str], index: int) -> EmulatorError:
    return invalid(
        "An assistant message with 'tool_calls' must be followed by tool messages responding "
        "to each 'tool_call_id'. The following tool_call_ids did not have response messages: "
        + ", ".join(pending),
        param=f"messages.[{index}].role",
    )


def _check_fields(message: dict[str, Any], role: str, param: str) -> None:
    if role == "tool":
        if "tool_call_id" not in message:
            raise missing(f"{param}.tool_call_id")
        if not isinstance(message["tool_call_id"], str):
            raise wrong_type(f"{param}.tool_call_id", "a string", message["tool_call_id"])
    if role == "function" and not isinstance(message.get("name"), str):
        raise missing(f"{param}.name")
    has_calls = bool(message.get("tool_calls") or message.get("function_call"))
    if "content" not in message and not (role == "assistant" and has_calls):
        raise missing(f"{param}.content")


def _check_content(content: Any, role: str, param: str, *, deepseek: bool) -> None:
    if content is None:
        if role in ("assistant", "function"):
            return
        raise wrong_type(f"{param}.content", "one of a string or array of objects", content)
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise wrong_type(f"{param}.content", "one of a string or array of objects", content)
    allowed = _PART_TYPES.get(role, ("text",))
    for j, part in enumerate(content):
        where = f"{param}.content[{j}]"
        if not isinstance(part, dict):
            raise wrong_type(where, "an object", part)
        kind = part.get("type")
        if deepseek and kind != "text":
            # DeepSeek's deserializer speaks for it (observed wording).
            raise deepseek_error(
                400,
                "Failed to deserialize the JSON body into the target type: "
                f"{param}: unknown variant `{kind}`, expected `text` at line 1 column 1",
                "invalid_request_error",
            )
        if kind not in allowed:
            raise invalid(
                f"Invalid value: '{kind}'. Supported values are: "
                + (quote_list(allowed) if len(allowed) > 1 else f"'{allowed[0]}'")
                + ".",
                param=f"{where}.type",
                code="invalid_value",
            )
        if kind in ("text", "refusal") and not isinstance(part.get(kind), str):
            raise missing(f"{where}.{kind}")
        if kind == "image_url" and not isinstance(part.get("image_url"), dict):
            raise missing(f"{where}.image_url")


def _tool_call_ids(calls: Any, param: str) -> list[str]:
    if not isinstance(calls, list):
        raise wrong_type(f"{param}.tool_calls", "an array", calls)
    ids: list[str] = []
    for k, call in enumerate(calls):
        where = f"{param}.tool_calls[{k}]"
        if not isinstance(call, dict):
            raise wrong_type(where, "an object", call)
        call_id = call.get("id")
        if not isinstance(call_id, str):
            raise missing(f"{where}.id")
        function = call.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise missing(f"{where}.function")
        if not isinstance(function.get("arguments"), str):
            raise missing(f"{where}.function.arguments")
        ids.append(call_id)
    return ids
