"""Limits on what callers and upstreams can make the proxy hold: request body size (413
before the body is read), message count, upstream response size (JSON, SSE events,
Gemini), and upstreams that drip bytes to dodge the timeout. Header sizes and stalled
clients are in test_slow_clients.py (they need the real ``costroute serve``)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.hardening.stack import CLIENT_A, MESSAGES, HardStack, hard_stack
from tests.support import ServerThread

UPSTREAM_LIMIT = 200_000


class Rogue:
    """An upstream that misbehaves on purpose: mode "huge" sends 16 MiB (an SSE event
    with no end, or JSON without a Content-Length), "drip" one byte every 0.3 s for 5 s
    (longer than the stack's 3 s upstream_timeout)."""

    def __init__(self) -> None:
        self.mode = "huge"
        self.sent = 0
        self.drips = 17
        self.huge_chunks = 256

    def app(self) -> Starlette:
        async def chat(request: Request) -> Response:
            body = await request.json()
            self.sent = 0
            stream = bool(body.get("stream"))
            media = "text/event-stream" if stream else "application/json"
            return StreamingResponse(self._body(stream), media_type=media)

        return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])

    async def _body(self, stream: bool) -> AsyncIterator[bytes]:
        if self.mode == "drip":
            yield b": ping\n\n" if stream else b"{"
            for _ in range(self.drips):
                await asyncio.sleep(0.3)
                self.sent += 1
                yield b": ping\n\n" if stream else b" "
            return
        yield b'data: {"x": "' if stream else b'{"x": "'
        chunk = b"x" * 65536
        for _ in range(self.huge_chunks):
            self.sent += len(chunk)
            yield chunk
            await asyncio.sleep(0)


@pytest.fixture(scope="module")
def rogue() -> Iterator[tuple[Rogue, ServerThread]]:
    made = Rogue()
    server = ServerThread(made.app()).start()
    try:
        yield made, server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, rogue: tuple[Rogue, ServerThread]
) -> Iterator[HardStack]:
    _, server = rogue
    with hard_stack(
        tmp_path_factory.mktemp("limits"),
        server={"max_upstream_response_bytes": UPSTREAM_LIMIT},
        providers={"rogue": {"type": "openai", "base_url": server.url + "/v1",
                             "api_key_env": "HARD_OPENAI_KEY"}},
        models={"rogue-model": {"provider": "rogue"}},
    ) as built:  # fmt: skip
        yield built


def _raw(port: int, head: bytes, body_parts: list[bytes], wait: float = 5) -> bytes:
    """Send ``head`` and ``body_parts`` (stopping early if the server already answered),
    then read what the server says within ``wait`` seconds."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(head)
        for part in body_parts:
            try:
                sock.sendall(part)
            except OSError:
                break
        sock.settimeout(wait)
        answer = b""
        try:
            while b"\r\n\r\n" not in answer or len(answer) < 200:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
        except TimeoutError:
            pass
    return answer


def _head(length: str | None, *, chunked: bool = False) -> bytes:
    lines = [
        "POST /v1/chat/completions HTTP/1.1",
        "Host: proxy.test",
        f"Authorization: Bearer {CLIENT_A}",
        "Content-Type: application/json",
    ]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_a_declared_oversized_body_is_refused_before_it_is_sent(fresh: HardStack) -> None:
    started = time.monotonic()
    answer = _raw(fresh.proxy.port, _head("500000000"), [b'{"model":'])
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"request_too_large"' in answer
    assert time.monotonic() - started < 3  # it did not wait for 500 MB that never came


def test_a_chunked_oversized_body_is_refused_as_soon_as_it_passes_the_limit(
    fresh: HardStack,
) -> None:
    chunk = 16 * 1024
    parts = [f"{chunk:x}\r\n".encode() + b"x" * chunk + b"\r\n" for _ in range(5)]
    # 80 KiB sent against a 64 KiB limit, and the body never ends: the answer must not
    # wait for the end.
    answer = _raw(fresh.proxy.port, _head(None, chunked=True), parts)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_message_count_limit(fresh: HardStack) -> None:
    limit = fresh.settings.server.max_messages
    with fresh.http(CLIENT_A) as a:
        ok = a.post("/v1/chat/completions",
                    json={"model": "gpt-4o-mini", "messages": MESSAGES * limit})  # fmt: skip
        too_many = a.post(
            "/v1/chat/completions",
            json=_chat("gpt-4o-mini", MESSAGES * (limit + 1)),
        )
    assert ok.status_code == 200, ok.text
    assert too_many.status_code == 400
    assert too_many.json()["error"]["param"] == "messages"
    assert fresh.openai.app.state.requests[-1]["json"]["messages"] == MESSAGES * limit


def test_an_oversized_upstream_json_reply_is_a_502(fresh: HardStack) -> None:
    huge = {"huge": "x" * (2 * UPSTREAM_LIMIT)}
    fresh.openai.app.state.faults.add(status=200, body=huge, times=-1)
    with fresh.http(CLIENT_A) as a:
        response = a.post(
            "/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": MESSAGES}
        )
        assert response.status_code == 502
        assert "larger than" in response.json()["error"]["message"]
        assert len(response.content) < 1000
        fresh.openai.app.state.faults.clear()
        again = a.post("/v1/chat/completions", json=_chat("gpt-4o-mini"))
        assert again.status_code == 200


def test_an_oversized_upstream_reply_without_length_is_cut_off(
    fresh: HardStack, rogue: tuple[Rogue, ServerThread]
) -> None:
    made, _ = rogue
    made.mode = "huge"
    with fresh.http(CLIENT_A) as a:
        response = a.post(
            "/v1/chat/completions", json={"model": "rogue-model", "messages": MESSAGES}
        )
    assert response.status_code == 502
    assert made.sent < 8 * 1024 * 1024  # stopped reading well before the 16 MiB


def test_an_endless_upstream_sse_event_is_cut_off(
    fresh: HardStack, rogue: tuple[Rogue, ServerThread]
) -> None:
    made, _ = rogue
    made.mode = "huge"
    # 4 MiB in one event that never ends. (Kept small: today the proxy buffers it with a
    # quadratic copy and relays it whole; and a caller hanging up is only noticed at the
    # next byte sent, so a longer event would keep the proxy busy after the test.)
    made.huge_chunks = 64
    try:
        with fresh.http(CLIENT_A, timeout=10) as a:
            response = a.post("/v1/chat/completions", json={**_chat("rogue-model"), "stream": True})
    finally:
        made.huge_chunks = 256
    assert b'"error"' in response.content  # an in-band error, not a hang
    assert len(response.content) < UPSTREAM_LIMIT  # and none of the oversized event


def test_an_oversized_gemini_reply_is_a_502(fresh: HardStack) -> None:
    text = "y" * (2 * UPSTREAM_LIMIT)
    reply = {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]},
                             "finishReason": "STOP"}]}  # fmt: skip
    fresh.gemini.app.state.faults.add(status=200, body=reply, times=-1)
    with fresh.http(CLIENT_A) as a:
        response = a.post(
            "/v1/chat/completions", json={"model": "gemini-2.5-flash", "messages": MESSAGES}
        )
    assert response.status_code == 502


def test_a_dripping_upstream_is_cut_at_the_upstream_timeout(
    tmp_path: Path, rogue: tuple[Rogue, ServerThread]
) -> None:
    made, server = rogue
    made.mode, made.drips = "drip", 8  # 2.4 s of drops, against a 1 s budget
    with hard_stack(
        tmp_path,
        server={"upstream_timeout": "1s"},
        retry={"max_retries": 0},
        providers={"rogue": {"type": "openai", "base_url": server.url + "/v1",
                             "api_key_env": "HARD_OPENAI_KEY"}},
        models={"rogue-model": {"provider": "rogue"}},
    ) as s, s.http(CLIENT_A) as a:  # fmt: skip
        started = time.monotonic()
        response = a.post("/v1/chat/completions", json=_chat("rogue-model"))
        elapsed = time.monotonic() - started
    made.drips = 17
    assert response.status_code == 504
    assert elapsed < 2


def _chat(model: str, messages: list[dict[str, str]] | None = None) -> dict[str, object]:
    return {"model": model, "messages": messages or MESSAGES}


def test_limits_are_configurable(tmp_path: Path) -> None:
    limits = {"max_body_bytes": 1024, "max_messages": 2}
    with hard_stack(tmp_path, server=limits) as s, s.http(CLIENT_A) as a:
        big = a.post(
            "/v1/chat/completions",
            json={
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": "z" * 2000}],
            },
        )
        many = a.post("/v1/chat/completions", json=_chat("gpt-4o-mini", MESSAGES * 3))
    assert big.status_code == 413
    assert many.status_code == 400
