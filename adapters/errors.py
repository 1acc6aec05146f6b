"""Errors raised by adapters. The proxy maps them to OpenAI envelopes and decides retries.

    AdapterError
    ├── UpstreamStatus        the provider answered with a non-2xx status
    │   └── RateLimited       429 (retry_after from the provider, if any)
    ├── UpstreamTimeout       no answer within the configured timeout
    ├── UpstreamUnreachable   connection refused / reset / DNS / TLS
    ├── UpstreamProtocolError the provider answered 2xx with something unparseable
    └── Unsupported           the request cannot be expressed for this provider (400)

Every error carries an OpenAI-style ``error`` object (``message``, ``type``, ``param``,
``code``) ready to be returned to callers, so translation adapters (Gemini) map their
provider's envelope once, here at the edge.
"""

from __future__ import annotations

from typing import Any


class AdapterError(Exception):
    status: int = 502
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        error_type: str = "upstream_error",
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error_type = error_type
        self.code = code
        self.param = param
        self.retry_after = retry_after
        # How many times the proxy tried before giving up (set by its retry loop).
        self.attempts = 1

    def error_object(self) -> dict[str, Any]:
        return {
            "message": self.message,
            "type": self.error_type,
            "param": self.param,
            "code": self.code,
        }


class UpstreamStatus(AdapterError):
    """The provider answered ``status``; ``error`` is its (OpenAI-shaped) error object."""

    def __init__(
        self,
        status: int,
        error: dict[str, Any],
        *,
        retry_after: float | None = None,
        should_retry: bool | None = None,
    ) -> None:
        message = str(error.get("message") or f"upstream returned HTTP {status}")
        super().__init__(
            message,
            error_type=str(error.get("type") or _default_type(status)),
            code=_str_or_none(error.get("code")),
            param=_str_or_none(error.get("param")),
            retry_after=retry_after,
        )
        self.status = status
        # x-should-retry from the provider wins over our status-based guess.
        if should_retry is not None:
            self.retryable = should_retry
        else:
            self.retryable = status in (408, 409, 429) or status >= 500


class RateLimited(UpstreamStatus):
    def __init__(
        self,
        error: dict[str, Any],
        *,
        retry_after: float | None = None,
        should_retry: bool | None = None,
    ) -> None:
        super().__init__(429, error, retry_after=retry_after, should_retry=should_retry)


class UpstreamTimeout(AdapterError):
    status = 504
    retryable = True

    def __init__(self, message: str = "The upstream provider did not answer in time.") -> None:
        super().__init__(message, error_type="upstream_timeout", code="upstream_timeout")


class UpstreamUnreachable(AdapterError):
    status = 502
    retryable = True

    def __init__(self, message: str = "The upstream provider could not be reached.") -> None:
        super().__init__(message, error_type="upstream_unreachable", code="upstream_unreachable")


class UpstreamProtocolError(AdapterError):
    status = 502
    retryable = True

    def __init__(self, message: str = "The upstream provider sent a malformed response.") -> None:
        super().__init__(message, error_type="upstream_error", code="bad_upstream_response")


class Unsupported(AdapterError):
    status = 400

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(
            message, error_type="invalid_request_error", code="unsupported_parameter", param=param
        )


def _default_type(status: int) -> str:
    if status == 429:
        return "rate_limit_exceeded"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)
