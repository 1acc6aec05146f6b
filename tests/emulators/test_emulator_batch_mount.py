"""The Files/Batch emulator mounted in the OpenAI app: batch lines are answered by the
same chat and embeddings logic as the real-time endpoints, and the mounted routes get
the app's recording, auth and faults. DeepSeek mounts none of it."""

from __future__ import annotations

import io
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai.types.chat import ChatCompletion
from starlette.applications import Starlette

from adapters.clock import ManualClock
from adapters.emulators.openai.batch.emulator import BatchEmulatorConfig
from adapters.emulators.openai.config import OpenAIEmulatorConfig
from adapters.emulators.openai.server import create_app
from adapters.emulators.tokens import count_messages
from tests.emulators.conftest import AUTH, sdk_for
from tests.sdk_checks import strict


def jsonl(bodies: list[dict[str, Any]]) -> bytes:
    lines = [
        {"custom_id": f"t-{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}
        for i, body in enumerate(bodies)
    ]
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


@pytest.fixture
def batch_app(clock: ManualClock) -> Starlette:
    timings = BatchEmulatorConfig(validation_delay=1, processing_time=10, finalize_delay=1)
    return create_app(OpenAIEmulatorConfig(), clock=clock, batch_config=timings)


async def test_batch_lines_use_the_real_chat_logic(
    batch_app: Starlette, clock: ManualClock
) -> None:
    good = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "batch me"}]}
    capped = {**good, "max_tokens": 2}
    bad = {"model": "gpt-4o-mini", "messages": []}
    sdk = sdk_for(batch_app)
    uploaded = await sdk.files.create(
        file=("in.jsonl", io.BytesIO(jsonl([good, capped, bad]))), purpose="batch"
    )
    batch = await sdk.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    clock.advance(60)
    done = await sdk.batches.retrieve(batch.id)
    assert done.status == "completed"
    assert done.output_file_id is not None
    lines = [
        orjson.loads(line)
        for line in (await sdk.files.content(done.output_file_id)).content.splitlines()
    ]
    if done.error_file_id:
        error_content = await sdk.files.content(done.error_file_id)
        lines += [orjson.loads(line) for line in error_content.content.splitlines()]
    by_id = {line["custom_id"]: line["response"] for line in lines}
    first = strict(ChatCompletion, by_id["t-0"]["body"])
    assert first.usage is not None
    assert first.usage.prompt_tokens == count_messages(good["messages"])  # type: ignore[arg-type]
    assert by_id["t-1"]["body"]["choices"][0]["finish_reason"] == "length"
    assert by_id["t-2"]["status_code"] == 400
    assert by_id["t-2"]["body"]["error"]["code"] == "empty_array"
    await sdk.close()


async def test_mounted_routes_are_recorded_and_take_faults(batch_app: Starlette) -> None:
    transport = httpx.ASGITransport(batch_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/v1/batches", headers=AUTH)).status_code == 200
        assert (await client.get("/v1/batches")).status_code == 401
        batch_app.state.faults.add(status=503, path="/v1/batches")
        assert (await client.get("/v1/batches", headers=AUTH)).status_code == 503
    assert [r["path"] for r in batch_app.state.requests] == ["/v1/batches"] * 3
    assert batch_app.state.batches is not None
    sdk = sdk_for(batch_app)
    batch_app.state.faults.add(status=500, path="/v1/files")
    with pytest.raises(openai.InternalServerError):
        await sdk.files.list()
    await sdk.close()


async def test_deepseek_has_no_batches(deepseek_app: Starlette) -> None:
    assert deepseek_app.state.batches is None
