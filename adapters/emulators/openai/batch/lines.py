"""Result lines of an OpenAI batch (providers.md §2.7) and per-line fault injection.

Output and error files hold one JSON object per line:
``{"id": "batch_req_…", "custom_id", "response": {"status_code", "request_id", "body"} | null,
"error": {"code", "message"} | null}``. An HTTP-level failure keeps ``error: null`` and
carries the endpoint's error envelope in ``response.body``; a non-HTTP failure (expiry,
cancellation, an injected ``code``) has ``response: null``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Self

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

EXPIRED = (
    "batch_expired",
    "This request could not be executed before the completion window expired.",
)
# Not in OpenAI's docs: third-party emulators of the Batch API write this for requests
# a cancel stopped, so a consumer sees every custom_id in one of the two files.
CANCELLED = ("batch_cancelled", "This request was not executed because the batch was cancelled.")

_DEFAULT_ERRORS: dict[int, dict[str, Any]] = {
    400: {"message": "Invalid request.", "type": "invalid_request_error"},
    429: {
        "message": "Rate limit reached for requests. Please try again later.",
        "type": "requests",
        "code": "rate_limit_exceeded",
    },
}
_SERVER_ERROR = {
    "message": "The server had an error while processing your request. Sorry about that!",
    "type": "server_error",
}


def default_error(status: int) -> dict[str, Any]:
    base = _DEFAULT_ERRORS.get(status, _SERVER_ERROR if status >= 500 else _DEFAULT_ERRORS[400])
    return {
        "message": base["message"],
        "type": base["type"],
        "param": None,
        "code": base.get("code"),
    }


class LineFault(BaseModel):
    """Force a failure on matching lines: HTTP-shaped (``status_code`` and optional
    ``error`` object) or non-HTTP (``code`` and optional ``message``). A fault matches
    one ``custom_id`` exactly, or ``every`` Nth input line (1-based line numbers)."""

    model_config = ConfigDict(extra="forbid")

    custom_id: str | None = None
    every: int | None = Field(None, ge=1)
    status_code: int | None = Field(None, ge=400, le=599)
    error: dict[str, Any] | None = None
    code: str | None = None
    message: str | None = None

    @model_validator(mode="after")
    def _one_match_one_shape(self) -> Self:
        if (self.custom_id is None) == (self.every is None):
            raise ValueError("give exactly one of custom_id or every")
        if (self.status_code is None) == (self.code is None):
            raise ValueError("give exactly one of status_code (HTTP-shaped) or code (non-HTTP)")
        return self

    def matches(self, custom_id: str, line: int) -> bool:
        if self.custom_id is not None:
            return custom_id == self.custom_id
        return self.every is not None and line % self.every == 0


@dataclass
class LineFaultPlan:
    faults: list[LineFault] = field(default_factory=list)

    def add(self, fault: LineFault | None = None, /, **kwargs: Any) -> LineFault:
        item = fault if fault is not None else LineFault(**kwargs)
        self.faults.append(item)
        return item

    def clear(self) -> None:
        self.faults.clear()

    def match(self, custom_id: str, line: int) -> LineFault | None:
        if not self.faults:  # the common case, once per line of 50,000
            return None
        return next((f for f in self.faults if f.matches(custom_id, line)), None)


@dataclass(slots=True)
class UsageTotals:
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    total_tokens: int = 0

    def add(self, usage: Any) -> None:
        """Add one response's ``usage`` (chat/embeddings ``prompt_tokens`` style or
        responses ``input_tokens`` style)."""
        if not isinstance(usage, dict):
            return
        prompt = _int(usage.get("prompt_tokens", usage.get("input_tokens")))
        completion = _int(usage.get("completion_tokens", usage.get("output_tokens")))
        details_in = usage.get("prompt_tokens_details") or usage.get("input_tokens_details")
        details_out = usage.get("completion_tokens_details") or usage.get("output_tokens_details")
        self.input_tokens += prompt
        self.output_tokens += completion
        self.cached_tokens += (
            _int(details_in.get("cached_tokens")) if isinstance(details_in, dict) else 0
        )
        self.reasoning_tokens += (
            _int(details_out.get("reasoning_tokens")) if isinstance(details_out, dict) else 0
        )
        self.total_tokens += _int(usage.get("total_tokens", prompt + completion))

    def to_json(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "input_tokens_details": {"cached_tokens": self.cached_tokens},
            "output_tokens": self.output_tokens,
            "output_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
            "total_tokens": self.total_tokens,
        }


def response_line(custom_id: str, status: int, body: Any, rng: random.Random) -> bytes:
    response = {
        "status_code": status,
        "request_id": f"req_{rng.getrandbits(128):032x}",
        "body": body,
    }
    return _line(custom_id, response, None, rng)


def error_line(custom_id: str, code: str, message: str, rng: random.Random) -> bytes:
    return _line(custom_id, None, {"code": code, "message": message}, rng)


def fault_line(fault: LineFault, custom_id: str, rng: random.Random) -> bytes:
    if fault.status_code is not None:
        return response_line(
            custom_id,
            fault.status_code,
            {"error": fault.error or default_error(fault.status_code)},
            rng,
        )
    code = fault.code or "server_error"
    return error_line(custom_id, code, fault.message or f"This request failed ({code}).", rng)


def _line(custom_id: str, response: Any, error: Any, rng: random.Random) -> bytes:
    record = {
        "id": f"batch_req_{rng.getrandbits(128):032x}",
        "custom_id": custom_id,
        "response": response,
        "error": error,
    }
    return orjson.dumps(record) + b"\n"


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
