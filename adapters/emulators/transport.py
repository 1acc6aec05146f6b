"""Raw ASGI answers the emulators need and Starlette's responses cannot give: a cut
connection, a body that is not JSON, and an SSE stream that can be cut or end in an
in-band error.

A cut connection must look to clients exactly as it does on a real network:

- Under uvicorn, ``DroppedResponse`` declares a ``Content-Length``, sends part of it and
  raises; uvicorn then closes the socket, so httpx raises ``RemoteProtocolError`` ("peer
  closed connection without sending complete message body") and aiohttp
  ``ClientPayloadError``. A stream is cut the same way (no final chunk).
- In-process, under ``httpx.ASGITransport``, the raised exception reaches the client
  as is; ``ConnectionDropped`` therefore *is* an ``httpx.RemoteProtocolError``, so code
  that handles ``httpx.TransportError`` (our adapters, the openai SDK) sees the same
  failure in both set-ups.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import httpx
import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from adapters.emulators.faults import Fault

DONE = b"data: [DONE]\n\n"
MALFORMED_BODY = (
    b'{"id": "chatcmpl-emulator", "object": "chat.completion", "choices": [{"index": 0, '
    b'"message": {"role": "assistant", "content": "this body was cut sho'
)


class ConnectionDropped(httpx.RemoteProtocolError):
    """Raised by the app to cut the connection (a fault, not a bug)."""

    def __init__(self) -> None:
        super().__init__("peer closed connection without sending complete message body")


class _QuietDrops(logging.Filter):
    # uvicorn logs every exception escaping the app; an injected drop is not news.
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, ConnectionDropped)


def quiet_uvicorn_drops() -> None:
    """Keep uvicorn's error log free of injected drops (idempotent)."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietDrops) for f in logger.filters):
        logger.addFilter(_QuietDrops())


def sse_event(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


class _RawResponse(Response):
    """A Starlette ``Response`` (so routes may return it, and callers may add headers)
    that sends its body itself."""

    def __init__(self, status: int, media_type: str, headers: Mapping[str, str] | None) -> None:
        super().__init__(None, status, headers, media_type)
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]


class DroppedResponse(_RawResponse):
    """Headers promising a JSON body, a few bytes of it, then a cut connection."""

    def __init__(self, status: int = 200, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status, "application/json", headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        promised = str(len(MALFORMED_BODY) * 4).encode()
        raw = [*self.raw_headers, (b"content-length", promised)]
        await send({"type": "http.response.start", "status": self.status_code, "headers": raw})
        await send({"type": "http.response.body", "body": MALFORMED_BODY, "more_body": True})
        raise ConnectionDropped()


class SSEResponse(_RawResponse):
    """Send ``events`` (complete ``data: ...\\n\\n`` frames) with an optional pause between
    them, obeying a fault's ``drop_after_events`` / ``error_after_events``."""

    def __init__(
        self,
        events: Iterable[bytes],
        *,
        delay: float = 0.0,
        fault: Fault | None = None,
        error: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(200, "text/event-stream", headers)
        self.events = events
        self.delay = delay
        self.drop_after = fault.drop_after_events if fault else None
        self.error_after = fault.error_after_events if fault else None
        self.error = error or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
        await send(start)
        for sent, event in enumerate(self.events):
            if self.drop_after is not None and sent >= self.drop_after:
                raise ConnectionDropped()
            if self.error_after is not None and sent >= self.error_after:
                error = sse_event(self.error)
                await send({"type": "http.response.body", "body": error, "more_body": True})
                break
            if self.delay and sent:
                await asyncio.sleep(self.delay)
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
