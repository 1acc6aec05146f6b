"""Errors the proxy returns, all rendered as OpenAI envelopes so SDKs raise the right class.

    ProxyError                      status / type / code known by each class
    ├── BadRequest          400     invalid_request_error
    │   └── InvalidHeader   400     a costroute header is malformed (param names it)
    ├── Unauthorized        401     invalid_api_key
    ├── Forbidden           403     permission_denied (admin only)
    ├── NotFound            404     not_found / model_not_found
    ├── RequestTimeout      408     the client was too slow sending its body
    ├── Conflict            409     conflict (e.g. cancelling a submitted ticket)
    ├── PayloadTooLarge     413     request_too_large
    └── UpstreamFailure     any     wraps adapters.errors.AdapterError unchanged

``render`` is the single place that turns any of them into a response.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from adapters.errors import AdapterError


class ProxyError(Exception):
    status: int = 500
    error_type: str = "server_error"
    code: str | None = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def error_object(self) -> dict[str, Any]:
        return {
            "message": self.message,
            "type": self.error_type,
            "param": self.param,
            "code": self.code,
        }


class BadRequest(ProxyError):
    status = 400
    error_type = "invalid_request_error"
    code: str | None = None


class InvalidHeader(BadRequest):
    code = "invalid_header"

    def __init__(self, header: str, message: str) -> None:
        super().__init__(f"Invalid {header} header: {message}", param=header)


class Unauthorized(ProxyError):
    status = 401
    error_type = "invalid_request_error"
    code = "invalid_api_key"


class Forbidden(ProxyError):
    status = 403
    error_type = "permission_denied"
    code = "permission_denied"


class NotFound(ProxyError):
    status = 404
    error_type = "invalid_request_error"
    code = "not_found"


class Conflict(ProxyError):
    status = 409
    error_type = "invalid_request_error"
    code = "conflict"


class RequestTimeout(ProxyError):
    status = 408
    error_type = "invalid_request_error"
    code = "request_timeout"


class PayloadTooLarge(ProxyError):
    status = 413
    error_type = "invalid_request_error"
    code = "request_too_large"


class UpstreamFailure(ProxyError):
    """An adapter error surfaced to the caller with the provider's status."""

    def __init__(self, error: AdapterError) -> None:
        headers: dict[str, str] = {}
        if error.retry_after is not None:
            headers["retry-after"] = str(max(1, round(error.retry_after)))
            headers["retry-after-ms"] = str(int(error.retry_after * 1000))
        super().__init__(error.message, param=error.param, headers=headers)
        self.status = error.status
        self.error_type = error.error_type
        self.code = error.code
        self.adapter_error = error


def envelope(error: dict[str, Any]) -> bytes:
    return orjson.dumps({"error": error})


def render(exc: ProxyError, *, extra_headers: dict[str, str] | None = None) -> Response:
    headers = dict(exc.headers)
    if extra_headers:
        headers.update(extra_headers)
    return Response(
        envelope(exc.error_object()),
        status_code=exc.status,
        media_type="application/json",
        headers=headers,
    )
