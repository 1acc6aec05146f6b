"""Relaying an upstream SSE stream to the caller.

Events pass through byte for byte. Adapters always deliver the final usage chunk (the
proxy forces ``include_usage`` upstream to meter streams); it is read for the routing log
and dropped again when the caller did not ask for it. An upstream failure after the first
byte becomes an in-band ``{"error": ...}`` event, which the OpenAI SDKs raise as an
``APIError``, so the caller never hangs on a half-finished stream.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.responses import StreamingResponse

from adapters.base import StreamReply
from adapters.errors import AdapterError
from adapters.wire import DONE_EVENT, extract_usage, frame
from proxy.context import Services
from proxy.errors import envelope
from proxy.lanes.planner import Decision
from proxy.ops import accounting
from proxy.ops.log_context import LogContext

_USAGE_NULL = (b'"usage":null', b'"usage": null')


def relay_stream(
    services: Services,
    ctx: LogContext,
    stream: StreamReply,
    include_usage: bool,
    upstream_started: float,
    decision: Decision,
) -> StreamingResponse:
    lane = accounting.lane_of(decision, stream.notes)
    headers = {
        **stream.headers,
        "x-costroute-lane": lane,
        "x-request-id": ctx.request_id,
        "cache-control": "no-cache",
    }
    return StreamingResponse(
        _events(services, ctx, stream, include_usage, upstream_started, decision, lane),
        media_type="text/event-stream",
        headers=headers,
    )


async def _events(
    services: Services,
    ctx: LogContext,
    stream: StreamReply,
    include_usage: bool,
    upstream_started: float,
    decision: Decision,
    lane: str,
) -> AsyncIterator[bytes]:
    usage_payload: dict[str, Any] | None = None
    status, code = 200, None

    def relayed(event: bytes) -> bytes | None:
        nonlocal usage_payload
        if event is DONE_EVENT or event == DONE_EVENT:
            return event
        if b'"usage"' in event and not any(marker in event for marker in _USAGE_NULL):
            chunk = orjson.loads(event[6:])
            if isinstance(chunk, dict) and isinstance(chunk.get("usage"), dict):
                usage_payload = chunk
                if not include_usage:
                    if not chunk.get("choices"):
                        return None
                    chunk["usage"] = None
                    return frame(orjson.dumps(chunk))
        elif not include_usage and b'"usage":null' in event:
            # Upstream added usage:null because we forced include_usage; a caller who
            # did not ask sees the field exactly as OpenAI would send it (absent).
            return event.replace(b',"usage":null', b"")
        return event

    try:
        # One write per upstream read (several events), not one per event.
        async for group in _groups(stream):
            out = [e for e in map(relayed, group) if e is not None]
            if out:
                yield b"".join(out)
    except AdapterError as error:
        status, code = error.status, error.code
        yield frame(envelope(error.error_object()))
    except BaseException:
        # The caller went away (cancellation) or something unexpected: still log it.
        status, code = 499, "client_closed_request"
        raise
    finally:
        ctx.upstream_ms = (time.perf_counter() - upstream_started) * 1000.0
        await stream.aclose()
        notes = stream.notes
        if status == 200:
            payload = usage_payload
            if payload is not None and extract_usage(payload) is None:
                payload = None
            accounting.record_success(
                services, ctx, decision, lane=lane, payload=payload, notes=notes
            )
        else:
            ctx.lane = lane
            accounting.record_failure(services, ctx, status=status, code=code)


async def _groups(stream: StreamReply) -> AsyncIterator[list[bytes]]:
    grouped = getattr(stream, "event_groups", None)
    if grouped is not None:
        async for group in grouped():
            yield group
        return
    async for event in stream.events():
        yield [event]
