"""The emulator on a real loopback socket: cut connections as httpx and aiohttp see them,
and the standalone runner (``python -m adapters.emulators.run``) driven over HTTP."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from httpx_aiohttp import AiohttpTransport

from adapters.clock import ManualClock
from adapters.emulators.openai.server import create_app
from adapters.emulators.run import KINDS, build_app, main
from tests.emulators.conftest import AUTH, KEY
from tests.support import ServerThread

BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello there"}]}


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def read_stream(client: httpx.AsyncClient, into: list[bytes]) -> None:
    payload = {**BODY, "stream": True}
    async with client.stream("POST", "/v1/chat/completions", json=payload, headers=AUTH) as r:
        async for chunk in r.aiter_bytes():
            into.append(chunk)


async def sdk_stream(sdk: openai.AsyncOpenAI, into: list[Any]) -> None:
    stream = await sdk.chat.completions.create(
        model="gpt-4o",
        messages=BODY["messages"],  # type: ignore[arg-type]
        stream=True,
    )
    async for chunk in stream:
        into.append(chunk)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    running = ServerThread(create_app(clock=ManualClock())).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def uvicorn_errors() -> Iterator[_Records]:
    handler = _Records()
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


@pytest.mark.parametrize("transport", ["httpx", "aiohttp"])
async def test_drop_is_a_transport_error_on_the_wire(
    server: ServerThread, uvicorn_errors: _Records, transport: str
) -> None:
    server.app.state.faults.clear()
    chosen = AiohttpTransport() if transport == "aiohttp" else None
    async with httpx.AsyncClient(base_url=server.url, transport=chosen) as client:
        server.app.state.faults.add(drop=True)
        with pytest.raises(httpx.TransportError):
            await client.post("/v1/chat/completions", json=BODY, headers=AUTH)

        server.app.state.faults.add(drop_after_events=2)
        received: list[bytes] = []
        with pytest.raises(httpx.TransportError):
            await read_stream(client, received)
        assert b"".join(received).count(b"data: ") == 2

        assert (
            await client.post("/v1/chat/completions", json=BODY, headers=AUTH)
        ).status_code == 200
    # Injected drops do not spam uvicorn's error log.
    assert not [r for r in uvicorn_errors.records if r.exc_info]


async def test_sdk_stream_cut_mid_way_on_the_wire(server: ServerThread) -> None:
    server.app.state.faults.clear()
    server.app.state.faults.add(drop_after_events=3)
    sdk = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)
    chunks: list[Any] = []
    with pytest.raises(openai.APIConnectionError):
        await sdk_stream(sdk, chunks)
    assert len(chunks) == 3  # real sockets deliver what was sent before the cut
    await sdk.close()


async def test_runner_subprocess_with_manual_clock() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "adapters.emulators.run",
        "deepseek",
        "--port",
        "0",
        "--manual-clock",
        "--api-key",
        KEY,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        assert line.startswith("costroute emulator deepseek listening on http://127.0.0.1:")
        url = line.split()[-1]
        async with httpx.AsyncClient(base_url=url) as client:
            start = (await client.get("/_emulator/clock")).json()["now"]
            await client.post("/_emulator/clock", json={"advance": 3600})
            body = {"model": "deepseek-flash", "messages": BODY["messages"]}
            reply = await client.post("/chat/completions", json=body, headers=AUTH)
            assert reply.json()["created"] == int(start + 3600)
            denied = await client.post(
                "/chat/completions", json=body, headers={"authorization": "Bearer x"}
            )
            assert denied.status_code == 401
            await client.post("/_emulator/faults", json={"status": 503})
            assert (
                await client.post("/chat/completions", json=body, headers=AUTH)
            ).status_code == 503
            recorded = (await client.get("/_emulator/requests")).json()["data"]
            assert [r["path"] for r in recorded] == ["/chat/completions"] * 3
    finally:
        process.terminate()
        await process.wait()


def test_runner_kinds_and_bad_kind(capsys: pytest.CaptureFixture[str]) -> None:
    assert {"openai", "deepseek"} <= set(KINDS)
    assert main(["nosuch"]) == 2
    assert "unknown emulator" in capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown emulator"):
        build_app("nosuch")
    assert build_app("openai").state.config.flavour == "openai"
    assert isinstance(build_app("deepseek").state.clock, object)
