"""The raw aiohttp upstream client that carries every real-time call: keep-alive reuse
(also after a stream, which must be read past ``[DONE]`` to be reusable), dropping a
connection left half-read, timeouts (with the flex override), and transport failures
mapped to adapter errors. A real aiohttp server on loopback plays the provider and
counts the connections it accepts."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import orjson
import pytest
from aiohttp import web

from adapters.errors import (
    UpstreamProtocolError,
    UpstreamStatus,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from adapters.http import AiohttpUpstream, read_capped
from adapters.openai.chat import OpenAIAdapter

COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-mini",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


@dataclass
class Provider:
    url: str
    peers: set[tuple[str, int]] = field(default_factory=set)
    auth: list[str] = field(default_factory=list)


def _chunk(n: int) -> bytes:
    body = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    body["choices"] = [{"index": 0, "delta": {"content": str(n)}, "finish_reason": None}]
    return b"data: " + orjson.dumps(body) + b"\n\n"


@pytest.fixture
async def provider() -> AsyncIterator[Provider]:
    state = Provider(url="")

    async def chat(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        state.peers.add(request.transport.get_extra_info("peername"))
        state.auth.append(request.headers.get("authorization", ""))
        body = await request.json()
        if request.path.startswith("/slow"):
            await asyncio.sleep(0.5)
        if request.path.startswith("/limited"):
            error = {"error": {"message": "slow down", "type": "rate_limit", "code": None}}
            return web.json_response(error, status=429, headers={"retry-after": "1"})
        if request.path.startswith("/cut"):
            # Declares more than it sends, then closes: a connection lost mid-body.
            response = web.StreamResponse(headers={"content-length": "1000"})
            await response.prepare(request)
            await response.write(b'{"id": "chatcmpl-1", ')
            assert request.transport is not None
            request.transport.close()
            return response
        if not body.get("stream"):
            return web.json_response(COMPLETION, headers={"x-request-id": "req-1"})
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        endless = request.path.startswith("/endless")
        for n in range(10_000 if endless else 3):
            await response.write(_chunk(n))
            if endless:
                await asyncio.sleep(0.01)
        await response.write(b"data: [DONE]\n\n")
        if request.path.startswith("/lagging"):
            # The body's end comes in a later packet than [DONE], as it may on a network.
            await asyncio.sleep(0.02)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/{prefix:.*}/chat/completions", chat)
    app.router.add_post("/chat/completions", chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state.url = f"http://127.0.0.1:{port}"
    yield state
    await runner.cleanup()


def _adapter(base_url: str, timeout: float = 600.0) -> OpenAIAdapter:
    return OpenAIAdapter(AiohttpUpstream(base_url, timeout=timeout), api_key="sk-provider")


REQUEST = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


async def test_replies_pass_through_over_one_kept_alive_connection(provider: Provider) -> None:
    adapter = _adapter(provider.url)
    try:
        for _ in range(5):
            reply = await adapter.complete(dict(REQUEST), headers={})
            assert orjson.loads(reply.body) == COMPLETION
            assert reply.parsed == COMPLETION
            assert reply.headers == {"x-request-id": "req-1"}
    finally:
        await adapter.aclose()
    assert len(provider.peers) == 1
    assert provider.auth == ["Bearer sk-provider"] * 5


async def test_a_finished_stream_gives_its_connection_back(provider: Provider) -> None:
    adapter = _adapter(provider.url + "/lagging")
    try:
        for _ in range(3):
            stream = await adapter.open_stream({**REQUEST, "stream": True}, headers={})
            try:
                events = [e async for e in stream.events()]
            finally:
                await stream.aclose()
            assert events[-1] == b"data: [DONE]\n\n"
            assert len(events) == 4
    finally:
        await adapter.aclose()
    # Without reading past [DONE] to the end of the body, each stream would need its own.
    assert len(provider.peers) == 1


async def test_a_stream_left_half_read_is_dropped_not_reused(provider: Provider) -> None:
    adapter = _adapter(provider.url + "/endless")
    try:
        stream = await adapter.open_stream({**REQUEST, "stream": True}, headers={})
        events = stream.events()
        await anext(events)
        await events.aclose()
        await stream.aclose()
        reply = await adapter.complete(dict(REQUEST), headers={})
        assert reply.parsed == COMPLETION
    finally:
        await adapter.aclose()
    assert len(provider.peers) == 2


async def test_a_status_error_keeps_its_body_and_headers(provider: Provider) -> None:
    adapter = _adapter(provider.url + "/limited")
    try:
        with pytest.raises(UpstreamStatus) as caught:
            await adapter.complete(dict(REQUEST), headers={})
    finally:
        await adapter.aclose()
    assert caught.value.status == 429
    assert caught.value.error_object()["message"] == "slow down"


async def test_read_timeout_and_its_flex_override(provider: Provider) -> None:
    short = _adapter(provider.url + "/slow", timeout=0.1)
    flex = OpenAIAdapter(
        AiohttpUpstream(provider.url + "/slow", timeout=0.1), api_key=None, flex_timeout=5.0
    )
    try:
        with pytest.raises(UpstreamTimeout):
            await short.complete(dict(REQUEST), headers={})
        # service_tier=flex waits as long as flex_timeout allows.
        reply = await flex.complete({**REQUEST, "service_tier": "flex"}, headers={})
        assert reply.parsed == COMPLETION
    finally:
        await short.aclose()
        await flex.aclose()


async def test_refused_and_cut_connections_are_unreachable(provider: Provider) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    refused = _adapter(f"http://127.0.0.1:{closed_port}")
    cut = _adapter(provider.url + "/cut")
    try:
        with pytest.raises(UpstreamUnreachable):
            await refused.complete(dict(REQUEST), headers={})
        with pytest.raises(UpstreamUnreachable):
            await cut.complete(dict(REQUEST), headers={})
    finally:
        await refused.aclose()
        await cut.aclose()


async def test_bodies_over_the_cap_are_refused(provider: Provider) -> None:
    upstream = AiohttpUpstream(provider.url)
    try:
        response = await upstream.post("/chat/completions", orjson.dumps(REQUEST), {})
        try:
            # The declared Content-Length already says too much: nothing is read.
            with pytest.raises(UpstreamProtocolError):
                await response.read(10)
        finally:
            await response.close()
        response = await upstream.post("/chat/completions", orjson.dumps(REQUEST), {})
        try:
            # Counted while reading (the path for bodies of unknown length).
            with pytest.raises(UpstreamProtocolError):
                await read_capped(response, 10)
        finally:
            await response.close()
    finally:
        await upstream.aclose()
