"""Wire framing of Gemini streams and the faults that break them (providers.md §3.4).

``?alt=sse`` gives ``data: <GenerateContentResponse>`` events and **no** ``[DONE]``; without
it the same chunks arrive as one JSON array written piece by piece. A fault can cut the
connection after N events, put an in-band ``{"error": ...}`` after N events, or send
bytes that are not JSON. A cut raises the shared ``ConnectionDropped`` (an
``httpx.RemoteProtocolError``), see transport.py.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from adapters.emulators.transport import ConnectionDropped

# The default SSE line ending; see ``GeminiEmulatorConfig.sse_newline`` for why CRLF.
SSE_NEWLINE = "\r\n"
JSON_TYPE = "application/json; charset=UTF-8"


class DroppedResponse(Response):
    """Headers and the start of a body, then a cut connection."""

    def __init__(self) -> None:
        super().__init__(status_code=200)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", JSON_TYPE.encode()), (b"content-length", b"4096")],
            }
        )
        await send(
            {"type": "http.response.body", "body": b'{\n  "candidates": [', "more_body": True}
        )
        raise ConnectionDropped()


def stream_response(
    chunks: list[dict[str, Any]],
    *,
    sse: bool,
    newline: str = SSE_NEWLINE,
    drop_after: int | None = None,
    error_after: int | None = None,
    error: dict[str, Any] | None = None,
    malformed: bool = False,
) -> StreamingResponse:
    frame = _sse_frame(newline) if sse else _array_frame()
    events = _events(
        chunks,
        frame,
        drop_after=drop_after,
        error_after=error_after,
        error=error or {},
        malformed=malformed,
    )
    tail = b"" if sse else b"]"
    body = _with_tail(events, tail)
    media = "text/event-stream" if sse else JSON_TYPE
    return StreamingResponse(body, media_type=media)


async def _events(
    chunks: list[dict[str, Any]],
    frame: Callable[[str, int], bytes],
    *,
    drop_after: int | None,
    error_after: int | None,
    error: dict[str, Any],
    malformed: bool,
) -> AsyncIterator[bytes]:
    if malformed:
        yield frame('{"candidates": [{"content": ', 0)
        return
    for index, chunk in enumerate(chunks):
        if drop_after is not None and index >= drop_after:
            raise ConnectionDropped()
        if error_after is not None and index >= error_after:
            yield frame(json.dumps(error), index)
            return
        yield frame(json.dumps(chunk), index)
    # A fault counted past the end still happens, so a test never passes by accident.
    if drop_after is not None:
        raise ConnectionDropped()
    if error_after is not None:
        yield frame(json.dumps(error), len(chunks))


async def _with_tail(events: AsyncIterator[bytes], tail: bytes) -> AsyncIterator[bytes]:
    async for event in events:
        yield event
    if tail:
        yield tail


def _sse_frame(newline: str) -> Callable[[str, int], bytes]:
    def frame(text: str, index: int) -> bytes:
        return f"data: {text}{newline}{newline}".encode()

    return frame


def _array_frame() -> Callable[[str, int], bytes]:
    def frame(text: str, index: int) -> bytes:
        return (("[" if index == 0 else ",\r\n") + text).encode()

    return frame
