"""Batch items and results, provider-neutral: the upstream body of an item, and each
``BatchResult`` (``adapters.base``) classified one at a time. Results are joined on
``custom_id`` (the ticket id), never by position, because providers return them in any
order. Provider file formats live in the lanes (``adapters/<provider>/batch.py``).

Retryable failures (429 rate limits, 408/409, 5xx, ``batch_expired``, ``batch_cancelled``,
unknown non-HTTP codes) send the ticket back to the queue; permanent ones (other 4xx:
invalid request, content policy, token/context limits, quota) fail it with the provider's
error object.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import orjson

from adapters.base import BatchResult
from proxy.store.jobs import Outcome, TicketStatus

log = logging.getLogger(__name__)

_STREAM_KEYS = ("stream", "stream_options")
# Non-HTTP codes that are the provider's fault or the clock's, never the request's.
_RETRY_CODES = frozenset(
    {
        "batch_expired",
        "batch_cancelled",
        "rate_limit_exceeded",
        "rate_limit",
        "server_error",
        "internal_error",
        "timeout",
        "resource_unavailable",
    }
)
# Error ``type``s of rate limits (OpenAI says "tokens"/"requests") and server faults.
_RETRY_TYPES = frozenset({"rate_limit_exceeded", "server_error", "tokens", "requests"})
# 4xx/non-HTTP codes that no amount of retrying fixes.
_PERMANENT_CODES = frozenset(
    {
        "insufficient_quota",
        "invalid_request_error",
        "content_policy_violation",
        "content_filter",
        "context_length_exceeded",
        "token_limit_exceeded",
        "string_above_max_length",
        "model_not_found",
        "unsupported_parameter",
        "invalid_value",
    }
)


def upstream_body(body: dict[str, Any], upstream_model: str) -> bytes:
    """The exact body the provider will get: the upstream model, and no streaming
    (a batch line with ``stream`` fails validation)."""
    out = {key: value for key, value in body.items() if key not in _STREAM_KEYS}
    out["model"] = upstream_model
    return orjson.dumps(out)


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None


def usage_of(body: Any) -> Usage:
    usage = body.get("usage") if isinstance(body, dict) else None
    if not isinstance(usage, dict):
        return Usage()
    if "input_tokens" in usage:  # a Responses API ``response`` object
        details = usage.get("input_tokens_details")
        cached = details.get("cached_tokens") if isinstance(details, dict) else None
        return Usage(
            _int(usage.get("input_tokens")), _int(usage.get("output_tokens")), _int(cached)
        )
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return Usage(
        _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens")), _int(cached)
    )


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def retryable(status_code: int | None, error: dict[str, Any]) -> bool:
    code = str(error.get("code") or "")
    kind = str(error.get("type") or "")
    if code in _PERMANENT_CODES:
        return False
    if code in _RETRY_CODES or kind in _RETRY_TYPES:
        return True
    if status_code is None:
        # Unknown non-HTTP failure: the request itself was never judged; try again.
        return True
    return status_code in (408, 409, 429) or status_code >= 500


def error_object(raw: Any, *, status_code: int | None) -> dict[str, Any]:
    """The OpenAI error object (message, type, param, code) from either line shape."""
    error = raw if isinstance(raw, dict) else {}
    code = error.get("code")
    kind = error.get("type") or (
        "invalid_request_error" if status_code and 400 <= status_code < 500 else "batch_error"
    )
    return {
        "message": str(error.get("message") or f"batch request failed ({code or status_code})"),
        "type": str(kind),
        "param": error.get("param"),
        "code": None if code is None else str(code),
    }


def outcome_of(result: BatchResult) -> Outcome:
    """Classify one item's result: success, retryable (back to the queue) or permanent."""
    ticket_id = result.custom_id
    status_code = result.status_code
    if status_code is not None and 200 <= status_code < 300 and result.body is not None:
        usage = usage_of(result.body)
        return Outcome(
            ticket_id,
            TicketStatus.COMPLETED,
            result=orjson.dumps(result.body),
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens,
            detail="batch line succeeded",
            lane_suffix=result.notes.get("lane_suffix"),
            cache_storage_usd=float(result.notes.get("cache_storage_usd") or 0.0),
        )
    error = error_object(dict(result.error or {}), status_code=status_code)
    again = retryable(status_code, error)
    if status_code is not None:
        detail = f"batch line failed: HTTP {status_code} {error['code'] or error['type']}"
    else:
        detail = f"batch line failed: {error['code'] or 'unknown error'}"
    status = TicketStatus.QUEUED if again else TicketStatus.FAILED
    return Outcome(ticket_id, status, error=error, detail=detail)
