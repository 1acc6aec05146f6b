"""Errors of the Gemini emulator, rendered in Google's envelope (providers.md §3.10):

{"error": {"code": 400, "message": "...", "status": "INVALID_ARGUMENT", "details": [...]}}

GeminiError                 any refusal; ``code`` is the HTTP status
├── invalid_argument()      400 INVALID_ARGUMENT (malformed bodies, cache rules)
├── api_key_invalid()       400 INVALID_ARGUMENT + ErrorInfo API_KEY_INVALID
├── permission_denied()     403 PERMISSION_DENIED
├── not_found()             404 NOT_FOUND (model, cache, batch)
└── for_status()            any status, e.g. injected faults (429 carries RetryInfo)
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    402: "RESOURCE_EXHAUSTED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_DEFAULT_MESSAGES = {
    401: "Request had invalid authentication credentials.",
    402: "Your prepayment credits are depleted.",
    429: (
        "You exceeded your current quota, please check your plan and billing details. For more "
        "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits."
    ),
    499: "The operation was cancelled.",
    500: "An internal error has occurred. Please retry or report in "
    "https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
    504: "Deadline expired before operation could complete.",
}
_SERVICE = "generativelanguage.googleapis.com"
API_KEY_MESSAGE = "API key not valid. Please pass a valid API key."


# google.rpc.Code numbers, used where Google nests a Status inside a 200 reply (batch
# results) instead of answering with an HTTP status.
RPC_CODES = {
    "CANCELLED": 1,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "NOT_IMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "UNAUTHENTICATED": 16,
}


class GeminiError(Exception):
    def __init__(
        self,
        code: int,
        message: str,
        *,
        details: list[dict[str, Any]] | None = None,
        status: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or STATUS_NAMES.get(code, "UNKNOWN")
        self.details = details or []

    def rpc_status(self) -> dict[str, Any]:
        """The error as a ``google.rpc.Status`` (numeric code), as batch results carry it."""
        body: dict[str, Any] = {"code": RPC_CODES.get(self.status, 2), "message": self.message}
        if self.details:
            body["details"] = self.details
        return body

    def envelope(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message, "status": self.status}
        if self.details:
            error["details"] = self.details
        return {"error": error}


def invalid_argument(message: str, *, field: str | None = None) -> GeminiError:
    details = None
    if field is not None:
        details = [
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": field, "description": message}],
            }
        ]
    return GeminiError(400, message, details=details)


def not_found(message: str) -> GeminiError:
    return GeminiError(404, message)


def failed_precondition(message: str) -> GeminiError:
    return GeminiError(400, message, status="FAILED_PRECONDITION")


def _api_key_invalid_info() -> dict[str, Any]:
    return {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "API_KEY_INVALID",
        "domain": "googleapis.com",
        "metadata": {"service": _SERVICE},
    }


def api_key_invalid() -> GeminiError:
    return GeminiError(
        400,
        API_KEY_MESSAGE,
        details=[
            _api_key_invalid_info(),
            {
                "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                "locale": "en-US",
                "message": API_KEY_MESSAGE,
            },
        ],
    )


def permission_denied(message: str = "The caller does not have permission") -> GeminiError:
    return GeminiError(403, message, details=[_api_key_invalid_info()])


def for_status(
    code: int, *, message: str | None = None, retry_delay: float | None = None, model: str = ""
) -> GeminiError:
    """The error Google sends for ``code``; 429 carries QuotaFailure and RetryInfo."""
    if code == 400:
        return invalid_argument(message or "Request contains an invalid argument.")
    if code == 403:
        return permission_denied(message or "The caller does not have permission")
    if code == 404:
        return not_found(message or "Requested entity was not found.")
    details: list[dict[str, Any]] = []
    if code == 429:
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": f"{_SERVICE}/generate_content_requests",
                        "quotaId": "GenerateRequestsPerMinutePerProjectPerModel",
                        "quotaDimensions": {"location": "global", "model": model},
                        "quotaValue": "10",
                    }
                ],
            }
        )
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": format_seconds(30.0 if retry_delay is None else retry_delay),
            }
        )
    text = message or _DEFAULT_MESSAGES.get(code, f"The service answered HTTP {code}.")
    return GeminiError(code, text, details=details)


def format_seconds(seconds: float) -> str:
    """A protobuf Duration in JSON ("30s", "1.5s")."""
    text = f"{seconds:.9f}".rstrip("0").rstrip(".")
    return f"{text}s"


def from_validation(error: ValidationError, *, root: str = "") -> GeminiError:
    """The first pydantic complaint, phrased the way Google's JSON parser phrases it."""
    first = error.errors()[0]
    loc = [part for part in first["loc"] if not str(part).startswith("function-")]
    path = field_path([root, *loc[:-1]] if first["type"] == "extra_forbidden" else [root, *loc])
    if first["type"] == "extra_forbidden":
        name = str(loc[-1]) if loc else "?"
        where = f" at '{path}'" if path else ""
        return invalid_argument(
            f'Invalid JSON payload received. Unknown name "{name}"{where}: Cannot find field.',
            field=path or None,
        )
    if first["type"] == "missing":
        return invalid_argument(f"* {path}: field is required", field=path)
    value = first.get("input")
    return invalid_argument(
        f"Invalid value at '{path}' ({first['msg']}), {_short(value)}", field=path
    )


def field_path(loc: list[Any]) -> str:
    """``["contents", 0, "parts"]`` -> ``contents[0].parts`` in snake_case, as Google prints."""
    text = ""
    for part in loc:
        if part == "":
            continue
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            name = snake(str(part))
            text = f"{text}.{name}" if text else name
    return text


def snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else f'"{value}"'
    return text if len(text) <= 80 else text[:77] + "..."
