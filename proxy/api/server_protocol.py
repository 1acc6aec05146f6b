"""uvicorn's HTTP/1.1 protocols with a deadline and a size bound for request headers.

uvicorn times out idle keep-alive connections but not a client that has started a
request: one that sends half its headers and stalls holds its connection forever (and a
few thousand of them exhaust file descriptors). These protocols close a connection whose
request headers are not complete ``header_timeout`` seconds after the connection opened
or the previous response ended. The body is bounded separately, in
``proxy.api.http_io.read_body``.

``costroute serve`` uses httptools (with uvloop) when installed, since the benchmarks
measured it markedly faster than h11 under concurrency, and h11 otherwise; both get the
same guard. httptools has no limit on header size of its own, so its subclass counts.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools not installed: h11 only
    HttpToolsProtocol = None  # type: ignore[assignment,misc]


class _HeaderDeadline:
    """Mixin over a uvicorn protocol: close the connection when the next request's headers
    take longer than ``header_timeout``."""

    header_timeout: float = 30.0
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    _header_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._expire)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _expire(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    # Placed before the uvicorn protocol in the bases, so ``super()`` is that protocol.
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if not self.transport.is_closing():
            self._arm()


class GuardedH11Protocol(_HeaderDeadline, H11Protocol):
    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a new request's headers arrived
            self._disarm()


def _guarded_httptools() -> type[Any] | None:
    if HttpToolsProtocol is None:
        return None

    class GuardedHttpToolsProtocol(_HeaderDeadline, HttpToolsProtocol):
        max_header_bytes: int = 64 * 1024
        _header_bytes = 0

        def on_message_begin(self) -> None:
            self._header_bytes = 0
            super().on_message_begin()

        def on_url(self, url: bytes) -> None:
            self._count(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count(len(name) + len(value))
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def _count(self, size: int) -> None:
            self._header_bytes += size
            if self._header_bytes > self.max_header_bytes and not self.transport.is_closing():
                self.send_400_response("Request headers too large.")

    return GuardedHttpToolsProtocol


def server_protocol(header_timeout: float, max_header_bytes: int) -> type[Any]:
    """The guarded protocol class for ``uvicorn.run(http=...)``: httptools when installed."""
    base = _guarded_httptools() or GuardedH11Protocol
    attrs = {"header_timeout": header_timeout, "max_header_bytes": max_header_bytes}
    return type(base.__name__, (base,), attrs)


class HeaderLimit:
    """Refuses (431) a request whose headers total more than ``max_bytes``.

    h11's ``max_incomplete_event_size`` only bounds what is buffered while headers are
    still incomplete; headers that arrive in one read pass it, so the total is checked
    here too, before any handler runs.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            size = sum(len(name) + len(value) + 4 for name, value in scope["headers"])
            if size > self.max_bytes:
                body = (
                    b'{"error":{"message":"Request headers are larger than this proxy '
                    b'accepts.","type":"invalid_request_error","param":null,'
                    b'"code":"request_header_fields_too_large"}}'
                )
                await send(
                    {
                        "type": "http.response.start",
                        "status": 431,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
