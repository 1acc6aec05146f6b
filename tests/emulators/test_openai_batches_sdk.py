"""The OpenAI Files + Batch emulator driven by the official ``openai`` SDK, every reply
validated strictly against the SDK's own pydantic types."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai.types import Batch, FileObject
from starlette.applications import Starlette

from adapters.clock import ManualClock
from adapters.emulators.openai.batch.emulator import BatchEmulator, BatchEmulatorConfig
from tests.sdk_checks import strict

KEY = "sk-batch-sdk-key-0001"
MODEL = "gpt-4o-mini"


def execute(endpoint: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    text = str(body["messages"][-1]["content"])
    return 200, {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": body["model"],
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text[::-1]},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    }


def jsonl(count: int) -> bytes:
    return b"".join(
        orjson.dumps(
            {
                "custom_id": f"ticket-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": MODEL, "messages": [{"role": "user", "content": f"abc {i}"}]},
            }
        )
        + b"\n"
        for i in range(count)
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def emu(clock: ManualClock) -> AsyncIterator[BatchEmulator]:
    config = BatchEmulatorConfig(
        api_key=KEY, validation_delay=1, processing_time=60, finalize_delay=1, cancel_delay=10
    )
    emulator = BatchEmulator(clock=clock, execute=execute, config=config)
    yield emulator
    emulator.close()


@pytest.fixture
async def sdk(emu: BatchEmulator) -> AsyncIterator[openai.AsyncOpenAI]:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(Starlette(routes=emu.routes())))
    client = openai.AsyncOpenAI(
        base_url="http://emulator.test/v1", api_key=KEY, http_client=http, max_retries=0
    )
    yield client
    await client.close()


def check_batch(raw: Any) -> Batch:
    data = raw.http_response.json()
    assert set(data) == set(Batch.model_fields)
    return strict(Batch, data)


def check_file(raw: Any) -> FileObject:
    return strict(FileObject, raw.http_response.json())


async def test_sdk_batch_round_trip(
    sdk: openai.AsyncOpenAI, clock: ManualClock, emu: BatchEmulator
) -> None:
    uploaded = check_file(
        await sdk.files.with_raw_response.create(file=("tickets.jsonl", jsonl(6)), purpose="batch")
    )
    assert (uploaded.purpose, uploaded.status, uploaded.bytes) == (
        "batch",
        "processed",
        len(jsonl(6)),
    )
    assert uploaded.expires_at == uploaded.created_at + 30 * 86_400

    created = check_batch(
        await sdk.batches.with_raw_response.create(
            input_file_id=uploaded.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"costroute_batch": "local-1"},
        )
    )
    assert created.status == "validating"
    assert created.metadata == {"costroute_batch": "local-1"}

    clock.advance(31)
    running = check_batch(await sdk.batches.with_raw_response.retrieve(created.id))
    assert running.status == "in_progress"
    assert running.request_counts is not None
    assert (running.request_counts.total, running.request_counts.completed) == (6, 3)
    assert running.model == MODEL

    clock.advance(100)
    done = check_batch(await sdk.batches.with_raw_response.retrieve(created.id))
    assert done.status == "completed"
    assert done.usage is not None
    assert done.usage.total_tokens == 60
    assert done.output_file_id is not None
    assert done.error_file_id is None

    output = check_file(await sdk.files.with_raw_response.retrieve(done.output_file_id))
    assert output.purpose == "batch_output"
    content = await sdk.files.content(done.output_file_id)
    lines = [orjson.loads(line) for line in content.content.splitlines()]
    answers = {line["custom_id"]: line["response"]["body"] for line in lines}
    assert sorted(answers) == sorted(f"ticket-{i}" for i in range(6))
    for i in range(6):
        reply = openai.types.chat.ChatCompletion.model_validate(answers[f"ticket-{i}"])
        assert reply.choices[0].message.content == f"abc {i}"[::-1]

    purposes = [f.purpose async for f in sdk.files.list()]
    assert sorted(purposes) == ["batch", "batch_output"]
    deleted = await sdk.files.delete(uploaded.id)
    assert deleted.deleted is True
    with pytest.raises(openai.NotFoundError):
        await sdk.files.retrieve(uploaded.id)


async def test_sdk_cancel_and_list_pages(sdk: openai.AsyncOpenAI, clock: ManualClock) -> None:
    uploaded = await sdk.files.create(file=("t.jsonl", jsonl(4)), purpose="batch")
    ids = []
    for _ in range(23):
        batch = await sdk.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        ids.append(batch.id)
        clock.advance(1)
    clock.advance(20)
    cancelling = check_batch(await sdk.batches.with_raw_response.cancel(ids[-1]))
    assert cancelling.status == "cancelling"
    assert cancelling.cancelling_at is not None
    clock.advance(10)
    cancelled = await sdk.batches.retrieve(ids[-1])
    assert cancelled.status == "cancelled"
    assert cancelled.request_counts is not None
    assert cancelled.request_counts.completed + cancelled.request_counts.failed == 4

    first_page = await sdk.batches.list(limit=10)
    assert [b.id for b in first_page.data] == ids[::-1][:10]
    assert first_page.has_more is True
    raw_page = await sdk.batches.with_raw_response.list(limit=5, after=ids[5])
    for item in raw_page.http_response.json()["data"]:
        strict(Batch, item)
    # The SDK's auto-pagination follows after=last id to the end.
    assert [b.id async for b in sdk.batches.list(limit=7)] == ids[::-1]


async def test_sdk_error_classes(
    sdk: openai.AsyncOpenAI, emu: BatchEmulator, clock: ManualClock
) -> None:
    with pytest.raises(openai.BadRequestError) as bad_format:
        await sdk.files.create(file=("tickets.csv", b"a,b\n"), purpose="batch")
    assert bad_format.value.message.endswith("Invalid file format for Batch API. Must be .jsonl")

    uploaded = await sdk.files.create(
        file=("t.jsonl", jsonl(1)),
        purpose="batch",
        expires_after={"anchor": "created_at", "seconds": 7200},
    )
    assert uploaded.expires_at == uploaded.created_at + 7200

    with pytest.raises(openai.BadRequestError) as window:
        await sdk.batches.create(
            input_file_id=uploaded.id,
            endpoint="/v1/chat/completions",
            completion_window="48h",  # type: ignore[arg-type]
        )
    assert window.value.param == "completion_window"

    with pytest.raises(openai.NotFoundError):
        await sdk.batches.retrieve("batch_missing")

    emu.fail_next_create(429, retry_after=1)
    with pytest.raises(openai.RateLimitError):
        await sdk.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    emu.fail_next_create(503)
    with pytest.raises(openai.InternalServerError):
        await sdk.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )

    wrong = openai.AsyncOpenAI(
        base_url="http://emulator.test/v1",
        api_key="sk-wrong",
        http_client=httpx.AsyncClient(
            transport=httpx.ASGITransport(Starlette(routes=emu.routes()))
        ),
        max_retries=0,
    )
    with pytest.raises(openai.AuthenticationError):
        await wrong.batches.list()
    await wrong.close()


async def test_sdk_sees_failed_validation(sdk: openai.AsyncOpenAI, clock: ManualClock) -> None:
    bad = jsonl(2) + b"not json\n"
    uploaded = await sdk.files.create(file=("bad.jsonl", bad), purpose="batch")
    batch = await sdk.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    clock.advance(5)
    failed = check_batch(await sdk.batches.with_raw_response.retrieve(batch.id))
    assert failed.status == "failed"
    assert failed.errors is not None
    assert failed.errors.data is not None
    [error] = failed.errors.data
    assert (error.code, error.line, error.param) == ("invalid_json_line", 3, None)
    assert error.message == "This line is not parseable as valid JSON."
