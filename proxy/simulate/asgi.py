"""The simulated clients' side of the wire: a POST handed straight to the proxy's ASGI
app, as ``httpx.ASGITransport`` would hand it, without the client library around it.

The proxy sees what a client sends (method, path, every header, the body, then a
disconnect once its answer is out); what goes is httpx's per-request work on the
calling side (URL merging, cookie jars, header models), which was a fifth of a
simulated day's time. The proxy's own calls to the emulators stay on httpx: that is
the adapters' real path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message

_SERVER = ("costroute.simulated", 80)
_CLIENT = ("127.0.0.1", 123)


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]  # lower-cased names; a repeated header keeps its last value
    body: bytes


async def post(app: ASGIApp, path: str, headers: Mapping[str, str], body: bytes) -> Answer:
    raw = [
        (b"host", _SERVER[0].encode()),
        (b"content-length", str(len(body)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in headers.items()),
    ]
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "headers": raw,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "server": _SERVER,
        "client": _CLIENT,
        "root_path": "",
    }
    sent = False
    done = asyncio.Event()
    status = 0
    out_headers: dict[str, str] = {}
    chunks: list[bytes] = []

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            for name, value in message.get("headers", ()):
                out_headers[name.decode("latin-1").lower()] = value.decode("latin-1")
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                done.set()

    try:
        await app(scope, receive, send)
    finally:
        done.set()
    return Answer(status, out_headers, b"".join(chunks))
