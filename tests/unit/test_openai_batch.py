"""The OpenAI batch adapter: pure parsing on fixtures, and the I/O against the Files +
Batches emulator in process (streamed upload, listing, streamed result lines, errors)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette

from adapters.base import BatchStatus
from adapters.clock import ManualClock
from adapters.emulators.openai.batch.emulator import BatchEmulator, BatchEmulatorConfig
from adapters.emulators.openai.config import OpenAIEmulatorConfig
from adapters.emulators.openai.server import create_app
from adapters.errors import (
    RateLimited,
    UpstreamProtocolError,
    UpstreamStatus,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from adapters.openai.batch import OpenAIBatchAdapter, build_create, parse_batch

CHAT = "/v1/chat/completions"
BATCH_JSON: dict[str, Any] = {
    "id": "batch_abc",
    "object": "batch",
    "endpoint": CHAT,
    "errors": {"object": "list", "data": [{"code": "token_limit_exceeded", "message": "m",
                                           "param": None, "line": None}]},
    "input_file_id": "file-1",
    "completion_window": "24h",
    "status": "completed",
    "output_file_id": None,
    "error_file_id": "file-err",
    "created_at": 1_767_225_600,
    "request_counts": {"total": 3, "completed": 0, "failed": 3},
    "metadata": {"costroute_batch_id": "cb_1"},
}  # fmt: skip


def test_parse_batch_reads_every_field_we_use() -> None:
    info = parse_batch(BATCH_JSON)
    assert info.id == "batch_abc"
    assert info.status is BatchStatus.COMPLETED
    assert (info.total, info.completed, info.failed) == (3, 0, 3)
    assert info.output_file_id is None
    assert info.error_file_id == "file-err"
    assert info.errors[0]["code"] == "token_limit_exceeded"
    assert info.metadata == {"costroute_batch_id": "cb_1"}
    sparse = parse_batch({"id": "b", "status": "validating", "metadata": None, "errors": None})
    assert (sparse.metadata, sparse.errors, sparse.total) == ({}, (), 0)


@pytest.mark.parametrize("bad", [None, [], {"status": "completed"}, {"id": "b", "status": "odd"}])
def test_parse_batch_rejects_garbage(bad: Any) -> None:
    with pytest.raises(UpstreamProtocolError):
        parse_batch(bad)


def test_build_create_asks_for_the_only_window() -> None:
    assert build_create("file-1", CHAT, {"costroute_batch_id": "cb_1"}) == {
        "input_file_id": "file-1",
        "endpoint": CHAT,
        "completion_window": "24h",
        "metadata": {"costroute_batch_id": "cb_1"},
    }


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def app(clock: ManualClock) -> Starlette:
    config = BatchEmulatorConfig(validation_delay=1, processing_time=10, finalize_delay=1)
    built = create_app(
        OpenAIEmulatorConfig(api_keys=frozenset({"sk-good"})), clock=clock, batch_config=config
    )
    yield built  # type: ignore[misc]
    built.state.batches.close()


@pytest.fixture
async def adapter(app: Starlette) -> AsyncIterator[OpenAIBatchAdapter]:
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://e.test/v1")
    built = OpenAIBatchAdapter(client, api_key="sk-good")
    yield built
    await built.aclose()


def chat_line(i: int, pad: int = 0) -> bytes:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"q{i}" + "x" * pad}]}
    return (
        orjson.dumps({"custom_id": f"tkt_{i}", "method": "POST", "url": CHAT, "body": body}) + b"\n"
    )


async def lines(count: int, pad: int = 0, pulled: list[int] | None = None) -> AsyncIterator[bytes]:
    for i in range(count):
        if pulled is not None:
            pulled.append(i)
        yield chat_line(i, pad)


async def test_streamed_upload_create_poll_and_read_results(
    adapter: OpenAIBatchAdapter, app: Starlette, clock: ManualClock
) -> None:
    emulator: BatchEmulator = app.state.batches
    pulled: list[int] = []
    # ~2.6 MB: more than one 256 KB chunk, pulled from the generator as it is sent.
    file_id = await adapter.upload_jsonl(
        lines(2000, pad=1300, pulled=pulled), filename="cb_1.jsonl"
    )
    assert len(pulled) == 2000
    [stored] = emulator.files_state()
    assert stored["id"] == file_id
    assert stored["purpose"] == "batch"
    assert stored["filename"] == "cb_1.jsonl"
    assert stored["bytes"] == sum(len(chat_line(i, 1300)) for i in range(2000))

    info = await adapter.create_batch(
        input_file_id=file_id, endpoint=CHAT, metadata={"costroute_batch_id": "cb_1"}
    )
    assert info.status is BatchStatus.VALIDATING
    assert info.metadata == {"costroute_batch_id": "cb_1"}
    clock.advance(13)
    done = await adapter.retrieve_batch(info.id)
    assert done.status is BatchStatus.COMPLETED
    assert (done.total, done.completed, done.failed) == (2000, 2000, 0)
    assert done.output_file_id is not None
    seen = [
        orjson.loads(line)["custom_id"] async for line in adapter.file_lines(done.output_file_id)
    ]
    assert sorted(seen) == sorted(f"tkt_{i}" for i in range(2000))
    assert seen != [f"tkt_{i}" for i in range(2000)]  # random order: join by custom_id


async def test_list_batches_pages_through_everything(adapter: OpenAIBatchAdapter) -> None:
    file_id = await adapter.upload_jsonl(lines(1), filename="x.jsonl")
    made = [
        (
            await adapter.create_batch(input_file_id=file_id, endpoint=CHAT, metadata={"n": str(i)})
        ).id
        for i in range(105)
    ]
    listed = [info async for info in adapter.list_batches()]
    assert [info.id for info in listed] == list(reversed(made))  # newest first
    assert listed[0].metadata == {"n": "104"}


async def test_errors_are_mapped(app: Starlette, adapter: OpenAIBatchAdapter) -> None:
    with pytest.raises(UpstreamStatus) as missing:
        await adapter.retrieve_batch("batch_nope")
    assert missing.value.status == 404
    assert not missing.value.retryable
    app.state.batches.fail_next_create(429, retry_after=7)
    with pytest.raises(RateLimited) as limited:
        await adapter.create_batch(input_file_id="file-x", endpoint=CHAT, metadata={})
    assert limited.value.retryable
    assert limited.value.retry_after == 7
    with pytest.raises(UpstreamStatus) as bad:
        await adapter.create_batch(input_file_id="file-x", endpoint=CHAT, metadata={})
    assert bad.value.status == 400
    with pytest.raises(UpstreamStatus) as gone:
        async for _ in adapter.file_lines("file-missing"):
            pass
    assert gone.value.status == 404
    wrong_key = OpenAIBatchAdapter(
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://e.test/v1"),
        api_key="sk-bad",
    )
    with pytest.raises(UpstreamStatus) as denied:
        await wrong_key.retrieve_batch("batch_nope")
    assert denied.value.status == 401
    await wrong_key.aclose()


def mock_adapter(handler: Any) -> OpenAIBatchAdapter:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://m.test/v1")
    return OpenAIBatchAdapter(client, api_key="sk-1")


async def test_transport_failures_are_mapped() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    def garbage(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"<html>")

    with pytest.raises(UpstreamUnreachable):
        await mock_adapter(refuse).retrieve_batch("b")
    with pytest.raises(UpstreamTimeout):
        await mock_adapter(slow).retrieve_batch("b")
    with pytest.raises(UpstreamTimeout):
        async for _ in mock_adapter(slow).file_lines("f"):
            pass
    with pytest.raises(UpstreamProtocolError):
        await mock_adapter(garbage).retrieve_batch("b")


async def test_cancel_posts_to_the_cancel_path_with_auth() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={**BATCH_JSON, "status": "cancelling"})

    info = await mock_adapter(handle).cancel_batch("batch_abc")
    assert info.status is BatchStatus.CANCELLING
    assert seen[0].method == "POST"
    assert seen[0].url.path == "/v1/batches/batch_abc/cancel"
    assert seen[0].headers["authorization"] == "Bearer sk-1"


async def test_file_lines_splits_across_chunk_boundaries() -> None:
    content = b'{"a":1}\n{"b":2}\n\n{"c":3}'

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(content), 3):
            yield content[i : i + 3]

    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=chunks())

    got = [line async for line in mock_adapter(handle).file_lines("f")]
    assert got == [b'{"a":1}', b'{"b":2}', b'{"c":3}']
