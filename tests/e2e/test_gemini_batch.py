"""Deferred Gemini requests through Gemini Batch Mode, end to end: the official openai SDK
talks to the proxy under uvicorn, which batches to the Gemini emulator on loopback."""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai.types.chat import ChatCompletion

from adapters.base import BatchInfo
from adapters.errors import UpstreamTimeout
from tests.e2e.conftest import ADMIN_KEY, CLIENT_KEY
from tests.e2e.gemini_stack import FLASH, PRO, GeminiStack, ask, long_system, running
from tests.sdk_checks import strict

pytestmark = pytest.mark.filterwarnings(
    "ignore:Inheritance class AiohttpClientSession:DeprecationWarning"
)
BATCH = {"poll_interval": "1s", "flush_interval": "1s"}
AUTH = {
    "keys": [
        {"name": "team-a", "key_env": "TEAM_A_KEY"},
        {"name": "ops", "key_env": "OPS_KEY", "admin": True},
    ]
}


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[GeminiStack]:
    with running(tmp_path, second_provider=False, batch=BATCH, auth=AUTH) as built:
        yield built


def defer(stack: GeminiStack, content: str, model: str = FLASH) -> str:
    raw = stack.client().chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "user", "content": content}],
        extra_headers={"X-Latency-Tolerance": "1d"},
    )
    assert raw.status_code == 202, raw.http_response.text
    accepted = raw.http_response.json()
    assert accepted["lane"] == "batch"
    return str(accepted["id"])


def flush(stack: GeminiStack) -> dict[str, Any]:
    with stack.http(ADMIN_KEY) as client:
        response = client.post("/admin/flush")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def ticket(stack: GeminiStack, ticket_id: str, wait: int = 0) -> dict[str, Any]:
    with stack.http(CLIENT_KEY) as client:
        response = client.get(f"/v1/tickets/{ticket_id}", params={"wait": wait}, timeout=wait + 30)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def advance(stack: GeminiStack, seconds: float) -> None:
    stack.emulator_clock.advance(seconds)
    stack.proxy_clock.advance(seconds)


def until(condition: Callable[[], bool], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.05)


def emulator_batches(stack: GeminiStack) -> list[Any]:
    batches, _ = stack.state.batches.page(1000, "")
    return list(batches)


def test_a_deferred_ticket_completes_through_a_gemini_batch(stack: GeminiStack) -> None:
    ids = [defer(stack, f"Summarise note {n}.") for n in range(3)]
    other = defer(stack, "A question for pro.", model=PRO)
    summary = flush(stack)
    assert summary["tickets"] == 4
    assert len(summary["batches"]) == 2  # one batch per model
    created = stack.sent(":batchGenerateContent", method="POST")
    assert len(created) == 2
    inline = created[0]["json"]["batch"]["inputConfig"]["requests"]["requests"]
    assert all(item["metadata"]["key"] in [*ids, other] for item in inline)
    assert all("contents" in item["request"] for item in inline)

    advance(stack, 61)  # the emulator finishes a batch after 60 s
    for ticket_id in [*ids, other]:
        done = ticket(stack, ticket_id, wait=20)
        assert done["status"] == "completed", done
        completion = strict(ChatCompletion, done["result"])
        assert completion.object == "chat.completion"
        assert completion.choices[0].message.content
        assert completion.usage is not None
        assert completion.usage.prompt_tokens > 0

    finals = [r for r in stack.routes() if r["ticket_id"] in ids and r["status"] == 200]
    assert len(finals) == 3
    for row in finals:
        assert row["lane"] == "batch"
        assert row["provider"] == "gemini"
        assert row["cost_usd"] == pytest.approx(row["baseline_usd"] / 2)
        assert row["saved_usd"] > 0


def test_a_crash_between_create_and_record_is_reconciled_without_a_second_batch(
    stack: GeminiStack,
) -> None:
    services = stack.proxy.app.state.services
    real = services.batch["gemini"]

    class LostAnswer:
        """The batch is created upstream, then the answer is lost (a timeout): the local
        batch stays ``created`` and only reconciliation may settle it."""

        provider_type = "gemini"
        limits = real.limits

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        async def submit(
            self,
            items: AsyncIterable[tuple[str, bytes]],
            *,
            endpoint: str,
            model: str,
            metadata: Mapping[str, str],
        ) -> BatchInfo:
            await real.submit(items, endpoint=endpoint, model=model, metadata=metadata)
            raise UpstreamTimeout()

    services.batch["gemini"] = LostAnswer()
    ids = [defer(stack, f"Lost answer {n}.") for n in range(2)]
    summary = flush(stack)
    assert summary["batches"] == []
    assert len(summary["failed"]) == 1
    assert len(emulator_batches(stack)) == 1
    services.batch["gemini"] = real

    # Forced flushes while the outcome is unknown never submit those tickets again.
    assert flush(stack)["tickets"] == 0
    # Past the batch's lease (30 s) and the reconciliation grace (120 s); the emulator
    # batch finishes too.
    advance(stack, 151)
    for ticket_id in ids:
        assert ticket(stack, ticket_id, wait=20)["status"] == "completed"
    assert len(emulator_batches(stack)) == 1
    assert len(stack.sent(":batchGenerateContent", method="POST")) == 1


def test_deferred_gemini_embeddings_stay_real_time(stack: GeminiStack) -> None:
    with httpx.Client(base_url=stack.url, timeout=30) as client:
        response = client.post(
            "/v1/embeddings",
            json={"model": "text-embedding-004", "input": "hello"},
            headers={"authorization": f"Bearer {CLIENT_KEY}", "X-Latency-Tolerance": "1d"},
        )
    assert response.status_code == 200, response.text
    assert response.headers["x-costroute-lane"] == "realtime"


def test_cache_and_batch_together_show_both_discounts(stack: GeminiStack) -> None:
    system = long_system("batch-and-cache")
    # Two real-time sightings make the managed cache (its economics say it pays).
    answers = [ask(stack, system, f"Real-time question {n}?") for n in range(2)]
    assert answers[-1].lane == "realtime+cache"
    [cache] = stack.live_caches()

    raw = stack.client().chat.completions.with_raw_response.create(
        model=FLASH,
        messages=[
            {"role": "system", "content": system},
            {"role": "user", "content": "A deferred question?"},
        ],
        extra_headers={"X-Latency-Tolerance": "1d"},
    )
    assert raw.status_code == 202
    ticket_id = raw.http_response.json()["id"]
    flush(stack)
    [created] = stack.sent(":batchGenerateContent", method="POST")
    [item] = created["json"]["batch"]["inputConfig"]["requests"]["requests"]
    assert item["request"]["cachedContent"] == cache.name
    assert item["metadata"]["key"] == f"{ticket_id}+cache"
    assert "systemInstruction" not in item["request"]  # the prefix lives in the cache

    advance(stack, 61)
    done = ticket(stack, ticket_id, wait=20)
    assert done["status"] == "completed", done
    completion = strict(ChatCompletion, done["result"])
    assert completion.usage is not None
    details = completion.usage.prompt_tokens_details
    assert details is not None
    assert details.cached_tokens
    assert details.cached_tokens >= 1024
    [row] = [r for r in stack.routes() if r["ticket_id"] == ticket_id and r["status"] == 200]
    assert row["lane"] == "batch+cache"
    assert row["cached_tokens"] == details.cached_tokens
    # Both discounts: cheaper than the batch price of the same tokens uncached.
    assert row["cost_usd"] < row["baseline_usd"] / 2
    assert row["saved_usd"] > row["baseline_usd"] / 2
    assert done["lane"] == "batch"  # the ticket's lane; the routing log shows the cache
