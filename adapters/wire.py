"""Pure helpers for the OpenAI wire format, shared by every OpenAI-compatible provider
(OpenAI, DeepSeek) and by the proxy: usage extraction, error parsing, SSE framing."""

from __future__ import annotations

import email.utils
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from adapters.errors import RateLimited, UpstreamProtocolError, UpstreamStatus
from adapters.http import UpstreamResponse

DONE_EVENT = b"data: [DONE]\n\n"


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0


def extract_usage(payload: Mapping[str, Any] | None) -> Usage | None:
    """Usage from a ``chat.completion``, a stream chunk, an embeddings list or a
    Responses API ``response`` object."""
    if not payload:
        return None
    usage = payload.get("usage")
    if not isinstance(usage, dict):
        return None
    if "input_tokens" in usage:
        return _responses_usage(usage)
    prompt = _int(usage.get("prompt_tokens"))
    details = usage.get("prompt_tokens_details")
    cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else 0
    if not cached:
        # DeepSeek reports its disk cache separately.
        cached = _int(usage.get("prompt_cache_hit_tokens"))
    completion_details = usage.get("completion_tokens_details")
    reasoning = (
        _int(completion_details.get("reasoning_tokens"))
        if isinstance(completion_details, dict)
        else 0
    )
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=_int(usage.get("completion_tokens")),
        cached_tokens=cached,
        reasoning_tokens=reasoning,
    )


def _responses_usage(usage: Mapping[str, Any]) -> Usage:
    details = usage.get("input_tokens_details")
    output_details = usage.get("output_tokens_details")
    return Usage(
        prompt_tokens=_int(usage.get("input_tokens")),
        completion_tokens=_int(usage.get("output_tokens")),
        cached_tokens=_int(details.get("cached_tokens")) if isinstance(details, dict) else 0,
        reasoning_tokens=(
            _int(output_details.get("reasoning_tokens")) if isinstance(output_details, dict) else 0
        ),
    )


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait, from ``retry-after-ms`` or ``retry-after`` (seconds or HTTP date)."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def parse_should_retry(headers: Mapping[str, str]) -> bool | None:
    value = headers.get("x-should-retry")
    if value == "true":
        return True
    if value == "false":
        return False
    return None


async def raise_for_status(response: UpstreamResponse, limit: int) -> None:
    """An error answer read (at most ``limit`` bytes), closed and raised as the OpenAI-
    style adapter error; a 2xx answer is left open for the caller to stream."""
    if response.status < 300:
        return
    try:
        content = await response.read(limit)
    finally:
        await response.close()
    raise status_error(response.status, content, response.headers)


def status_error(status: int, content: bytes, headers: Mapping[str, str]) -> UpstreamStatus:
    """The adapter error for a non-2xx OpenAI-style answer."""
    error: dict[str, Any]
    try:
        parsed = orjson.loads(content) if content else None
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        error = parsed["error"]
    elif isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
        error = {"message": parsed["error"]}
    else:
        error = {"message": f"upstream returned HTTP {status}"}
    retry_after = parse_retry_after(headers)
    should_retry = parse_should_retry(headers)
    if status == 429:
        return RateLimited(error, retry_after=retry_after, should_retry=should_retry)
    return UpstreamStatus(status, error, retry_after=retry_after, should_retry=should_retry)


async def sse_events(
    chunks: AsyncIterator[bytes], *, max_event_bytes: int = 16 * 1024 * 1024
) -> AsyncIterator[bytes]:
    """Complete SSE ``data`` payloads one by one (see ``sse_event_groups``)."""
    async for group in sse_event_groups(chunks, max_event_bytes=max_event_bytes):
        for payload in group:
            yield payload


async def sse_event_groups(
    chunks: AsyncIterator[bytes], *, max_event_bytes: int = 16 * 1024 * 1024
) -> AsyncIterator[list[bytes]]:
    """Re-frame a byte stream into complete SSE ``data`` payloads (without ``data: ``),
    grouped by the upstream read that completed them, so a relay can send them in one
    write.

    Events end at a blank line; comment lines and other fields are dropped; multi-line
    ``data`` fields are joined with ``\\n`` as the SSE spec says. An event larger than
    ``max_event_bytes`` is a protocol error, not something to buffer without end.
    """
    buffer = bytearray()
    scanned = 0  # bytes already searched for a separator (at most 3 need a re-look)
    crlf = False  # CRLF line ends seen: only then is the slower two-separator search needed
    async for chunk in chunks:
        buffer += chunk
        crlf = crlf or b"\r" in chunk
        group: list[bytes] = []
        start = 0  # events before this offset are done; cut from the buffer once per read
        while True:
            end, sep_len = _event_end(buffer, max(start, scanned - 3), crlf)
            if end < 0:
                scanned = len(buffer) - start
                if scanned > max_event_bytes:
                    raise UpstreamProtocolError(
                        f"An upstream stream event is larger than {max_event_bytes} bytes."
                    )
                break
            payload = _data_of(bytes(buffer[start:end]))
            start = end + sep_len
            scanned = 0
            if payload is not None:
                group.append(payload)
        if start:
            del buffer[:start]
        if group:
            yield group
    if bytes(buffer).strip():
        payload = _data_of(bytes(buffer))
        if payload is not None:
            yield [payload]


def _event_end(buffer: bytearray, start: int = 0, crlf: bool = True) -> tuple[int, int]:
    lf = buffer.find(b"\n\n", start)
    if not crlf:
        return lf, 2
    crlf_at = buffer.find(b"\r\n\r\n", start)
    if crlf_at >= 0 and (lf < 0 or crlf_at < lf):
        return crlf_at, 4
    return lf, 2


def _data_of(raw: bytes) -> bytes | None:
    if raw.startswith(b"data: ") and b"\n" not in raw and b"\r" not in raw:
        return raw[6:]  # the usual one-line event
    lines = []
    for line in raw.splitlines():
        if line.startswith(b"data:"):
            value = line[5:]
            lines.append(value[1:] if value.startswith(b" ") else value)
    if not lines:
        return None
    return b"\n".join(lines)


def frame(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"
