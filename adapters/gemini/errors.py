"""Gemini error envelopes to adapter errors carrying OpenAI-shaped error objects. Pure.

Gemini: ``{"error": {"code": 429, "message": "...", "status": "RESOURCE_EXHAUSTED",
"details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}]}}``.
The HTTP status is kept (INVALID_ARGUMENT 400, PERMISSION_DENIED 403, NOT_FOUND 404,
RESOURCE_EXHAUSTED 429, UNAVAILABLE 503, ...); the RPC status, lower-cased, becomes the
OpenAI ``code``; ``RetryInfo.retryDelay`` (else a ``Retry-After`` header) becomes
``retry_after``. Errors inside a 200 stream have no HTTP status of their own, so the
envelope's ``code`` or the RPC status decides.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from adapters.errors import RateLimited, UpstreamStatus
from adapters.wire import parse_retry_after

RPC_STATUS = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "ABORTED": 409,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INTERNAL": 500,
    "DATA_LOSS": 500,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}
_TYPES = {401: "authentication_error", 403: "permission_error"}
_DURATION = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)s\s*")


def parse_duration(text: Any) -> float | None:
    """Seconds in a protobuf Duration string (``"37s"``, ``"1.5s"``)."""
    if not isinstance(text, str):
        return None
    match = _DURATION.fullmatch(text)
    return float(match.group(1)) if match else None


def status_error(
    status: int | None, content: bytes | Mapping[str, Any], headers: Mapping[str, str]
) -> UpstreamStatus:
    """The adapter error for a Gemini error reply (or an in-stream error event)."""
    parsed: Any
    if isinstance(content, Mapping):
        parsed = content
    else:
        try:
            parsed = orjson.loads(content) if content else None
        except orjson.JSONDecodeError:
            parsed = None
    envelope = parsed.get("error") if isinstance(parsed, Mapping) else None
    if isinstance(envelope, list) and envelope and isinstance(envelope[0], Mapping):
        envelope = envelope[0]  # the JSON-array stream format wraps errors in a list
    if not isinstance(envelope, Mapping):
        envelope = {}
    rpc = str(envelope.get("status") or "")
    if status is None or status < 400:
        code = envelope.get("code")
        status = code if isinstance(code, int) and code >= 400 else RPC_STATUS.get(rpc, 502)
    message = envelope.get("message")
    error: dict[str, Any] = {
        "message": str(message) if message else f"Gemini returned HTTP {status}",
        "code": rpc.lower() or None,
        "param": None,
    }
    if status in _TYPES:
        error["type"] = _TYPES[status]
    elif 400 <= status < 500 and status != 429:
        error["type"] = "invalid_request_error"
    retry_after = _retry_delay(envelope.get("details"))
    if retry_after is None:
        retry_after = parse_retry_after({k.lower(): v for k, v in headers.items()})
    if status == 429:
        return RateLimited(error, retry_after=retry_after)
    return UpstreamStatus(status, error, retry_after=retry_after)


def is_cache_gone(error: UpstreamStatus) -> bool:
    """Whether an error on a request that used ``cachedContent`` means the cache is gone.

    providers.md §3.6: the exact status is not documented (403 "CachedContent not found
    (or permission denied)" and 404 are both seen), so any 4xx other than a request-shape
    INVALID_ARGUMENT, a rate limit or a conflict counts; a 400 counts only when it talks
    about the cache being expired or missing.
    """
    if not 400 <= error.status < 500 or error.status in (408, 409, 429):
        return False
    if error.status == 400:
        text = error.message.lower()
        return "cache" in text and any(w in text for w in ("expired", "not found", "deleted"))
    return True


def is_too_small(error: UpstreamStatus) -> bool:
    """The 400 a cache creation gets when the prefix is below the model's minimum."""
    text = error.message.lower()
    return error.status == 400 and ("too small" in text or "min_total_token_count" in text)


def _retry_delay(details: Any) -> float | None:
    if not isinstance(details, list):
        return None
    for detail in details:
        if isinstance(detail, Mapping) and str(detail.get("@type", "")).endswith(
            "google.rpc.RetryInfo"
        ):
            return parse_duration(detail.get("retryDelay"))
    return None
