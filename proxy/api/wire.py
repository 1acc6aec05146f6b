"""Pydantic models of the OpenAI request surface the proxy accepts.

Only what the proxy needs is declared; every other field (tools, response_format, seed,
...) is allowed and passed through untouched, since the body sent upstream is the
caller's own dict, not a re-serialisation of these models.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)

from proxy.errors import BadRequest


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Message(_Open):
    role: Literal["developer", "system", "user", "assistant", "tool", "function"]
    content: str | list[Any] | None = None
    tool_call_id: str | None = None


class StreamOptions(_Open):
    include_usage: StrictBool | None = None


class ChatRequest(_Open):
    model: StrictStr = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    stream: StrictBool | None = False
    stream_options: StreamOptions | None = None
    n: StrictInt | None = Field(None, ge=1, le=128)

    @field_validator("messages")
    @classmethod
    def _tool_messages_name_their_call(cls, messages: list[Message]) -> list[Message]:
        for index, message in enumerate(messages):
            if message.role == "tool" and not message.tool_call_id:
                raise ValueError(f"messages[{index}]: a tool message needs tool_call_id")
        return messages


class EmbeddingsRequest(_Open):
    model: StrictStr = Field(min_length=1)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: StrictInt | None = Field(None, ge=1)

    @field_validator("input")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        if value == "" or value == []:
            raise ValueError("input must not be empty")
        return value


def validate_body(model: type[_Open], payload: Any, *, max_messages: int | None = None) -> Any:
    """Validate ``payload`` or raise ``BadRequest`` naming the first bad field."""
    if not isinstance(payload, dict):
        raise BadRequest("The request body must be a JSON object.")
    try:
        parsed = model.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(part) for part in first["loc"])
        param = str(first["loc"][0]) if first["loc"] else None
        if first["type"] == "missing":
            message = f"Missing required parameter: '{loc}'."
        else:
            message = f"Invalid value for '{loc}': {first['msg']}."
        raise BadRequest(message, param=param) from None
    if (
        max_messages is not None
        and isinstance(parsed, ChatRequest)
        and len(parsed.messages) > max_messages
    ):
        raise BadRequest(
            f"Too many messages: {len(parsed.messages)} (this proxy accepts {max_messages}).",
            param="messages",
        )
    return parsed
