"""Anthropic Message Batches end to end: the official ``anthropic`` SDK's batch calls
against the emulator, and deferred Claude requests from the official ``openai`` SDK
through costroute (under uvicorn) into Message Batches, at half price, with managed
prompt caching stacking on top. Proxy and emulator share one ManualClock."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion

from adapters.clock import ManualClock
from adapters.emulators.anthropic.batches import BatchSettings
from adapters.emulators.anthropic.server import AnthropicEmulatorConfig
from adapters.emulators.anthropic.server import create_app as anthropic_emulator
from proxy.app import create_app
from proxy.settings import parse_settings
from tests.sdk_checks import strict
from tests.support import ServerThread

CLIENT = "sk-anthropic-batch-client-00"
OPS = "sk-anthropic-batch-ops-00000"
PROVIDER = "sk-ant-batch-provider-0000"
ENV = {"TEAM": CLIENT, "OPS": OPS, "ANTHROPIC_API_KEY": PROVIDER}
MODEL = "claude-sonnet-4-5"
RUN = 100.0  # the emulator's processing time
# A system prompt well over Sonnet's 1,024-token cacheable minimum.
LONG_SYSTEM = "You are the support agent of a large bookshop. " + " ".join(
    f"Policy {n}: be courteous, accurate and brief about order {n}." for n in range(300)
)


@dataclass
class Stack:
    proxy: ServerThread
    emulator: ServerThread
    clock: ManualClock

    def sdk(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.proxy.url + "/v1", api_key=CLIENT, max_retries=0)

    def defer(self, messages: list[dict[str, Any]]) -> str:
        raw = self.sdk().chat.completions.with_raw_response.create(
            model=MODEL, messages=messages, extra_headers={"X-Latency-Tolerance": "6h"}
        )  # type: ignore[call-overload]
        assert raw.status_code == 202, raw.http_response.text
        accepted = raw.http_response.json()
        assert accepted["lane"] == "batch"
        return str(accepted["id"])

    def run(self, ids: list[str]) -> list[dict[str, Any]]:
        with httpx.Client(base_url=self.proxy.url, timeout=70) as client:
            flushed = client.post("/admin/flush", headers={"authorization": f"Bearer {OPS}"})
            assert flushed.status_code == 200, flushed.text
            self.clock.advance(RUN + 1)
            done = []
            for ticket_id in ids:
                response = client.get(
                    f"/v1/tickets/{ticket_id}", params={"wait": 20},
                    headers={"authorization": f"Bearer {CLIENT}"},
                )  # fmt: skip
                assert response.status_code == 200, response.text
                done.append(response.json())
        return done

    def routes(self, ids: list[str]) -> list[dict[str, Any]]:
        services = self.proxy.app.state.services

        async def fetch() -> list[dict[str, Any]]:
            await services.routelog.flush()
            rows = await services.db.fetchall("SELECT * FROM routes ORDER BY id")
            return [dict(row) for row in rows]

        rows: list[dict[str, Any]] = self.proxy.call(fetch())
        return [r for r in rows if r["ticket_id"] in ids and r["status"] == 200]


@pytest.fixture(scope="module")
def s(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp: Path = tmp_path_factory.mktemp("anthropic-batches")
    clock = ManualClock()
    config = AnthropicEmulatorConfig(
        api_keys=frozenset({PROVIDER}), batches=BatchSettings(complete_after=RUN)
    )
    emulator = ServerThread(anthropic_emulator(config, clock=clock)).start()
    settings = parse_settings(
        {
            "store": {"path": str(tmp / "costroute.db")},
            "auth": {"keys": [{"name": "team", "key_env": "TEAM"},
                              {"name": "ops", "key_env": "OPS", "admin": True}]},
            "providers": {"anthropic": {"type": "anthropic", "base_url": emulator.url + "/v1",
                                        "api_key_env": "ANTHROPIC_API_KEY"}},
            "models": {MODEL: {"provider": "anthropic", "max_tokens_default": 1000}},
            "batch": {"poll_interval": "1s", "flush_interval": "1s"},
            "retry": {"max_retries": 1, "backoff_base": 0.01, "backoff_max": 0.05},
        }
    )  # fmt: skip
    proxy = ServerThread(create_app(settings, clock=clock, environ=ENV)).start()
    try:
        yield Stack(proxy, emulator, clock)
    finally:
        proxy.stop()
        emulator.stop()


def test_the_anthropic_sdk_drives_message_batches_on_the_emulator(s: Stack) -> None:
    client = anthropic.Anthropic(base_url=s.emulator.url, api_key=PROVIDER, max_retries=0)
    params: Any = {"model": MODEL, "max_tokens": 100,
                   "messages": [{"role": "user", "content": "Hello"}]}  # fmt: skip
    batch = client.messages.batches.create(
        requests=[
            {"custom_id": "first", "params": params},
            {"custom_id": "second", "params": params},
            # Validated only when it runs: an errored result, not a refused batch.
            {"custom_id": "bad", "params": {**params, "max_tokens": 0}},
        ]
    )
    assert batch.processing_status == "in_progress"
    assert batch.results_url is None
    assert batch.request_counts.processing == 3
    assert batch.request_counts.succeeded == 0
    s.clock.advance(RUN / 2)
    running = client.messages.batches.retrieve(batch.id)
    assert (running.request_counts.processing, running.request_counts.succeeded) == (3, 0)
    assert batch.id in [b.id for b in client.messages.batches.list(limit=5)]
    s.clock.advance(RUN)
    ended = client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended"
    assert ended.ended_at is not None
    assert ended.results_url is not None
    assert ended.request_counts.succeeded == 2
    assert ended.request_counts.errored == 1
    results = {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}
    assert set(results) == {"first", "second", "bad"}
    first = results["first"]
    assert first.type == "succeeded"
    assert first.message.usage.service_tier == "batch"
    assert results["bad"].type == "errored"
    # A custom_id outside ^[a-zA-Z0-9_-]{1,64}$ refuses the whole create.
    with pytest.raises(anthropic.BadRequestError):
        client.messages.batches.create(requests=[{"custom_id": "no spaces", "params": params}])
    # Cancel: canceling, then ended with the unrun requests canceled.
    other = client.messages.batches.create(
        requests=[{"custom_id": f"c{n}", "params": params} for n in range(4)]
    )
    cancelling = client.messages.batches.cancel(other.id)
    assert cancelling.processing_status == "canceling"
    with pytest.raises(anthropic.BadRequestError):
        client.messages.batches.delete(other.id)  # still processing
    s.clock.advance(5)
    cancelled = client.messages.batches.retrieve(other.id)
    assert cancelled.processing_status == "ended"
    assert cancelled.request_counts.canceled == 4
    assert client.messages.batches.delete(other.id).type == "message_batch_deleted"
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve(other.id)


def test_deferred_claude_requests_complete_through_a_message_batch(s: Stack) -> None:
    ids = [s.defer([{"role": "user", "content": f"Question {n}?"}]) for n in range(3)]
    for done in s.run(ids):
        assert done["status"] == "completed"
        completion = strict(ChatCompletion, done["result"])
        assert completion.model == MODEL
        assert completion.choices[0].message.content
    rows = s.routes(ids)
    assert [r["lane"] for r in rows] == ["batch"] * 3
    for row in rows:
        # Every token at half price.
        assert row["cost_usd"] == pytest.approx(row["baseline_usd"] / 2)
    sent = [r for r in s.emulator.app.state.requests
            if r["path"] == "/v1/messages/batches" and r["method"] == "POST"]  # fmt: skip
    assert sent[-1]["headers"]["x-api-key"] == PROVIDER
    assert CLIENT not in str(sent[-1]["headers"])


def test_prompt_caching_stacks_with_the_batch_discount(s: Stack) -> None:
    def ask(n: int) -> list[dict[str, Any]]:
        return [{"role": "system", "content": LONG_SYSTEM},
                {"role": "user", "content": f"Where is order {n}?"}]  # fmt: skip

    ids = [s.defer(ask(n)) for n in range(4)]
    done = s.run(ids)
    assert {d["status"] for d in done} == {"completed"}
    rows = [r for r in s.routes(ids)]
    # In the batch's order, the first sighting of the prefix gets no breakpoint, the
    # second writes it (a 1-hour entry: batch items run far apart), the others read it.
    plain = [r for r in rows if r["lane"] == "batch"]
    writes = [r for r in rows if r["lane"] == "batch+cache" and not r["cached_tokens"]]
    reads = [r for r in rows if r["lane"] == "batch+cache" and r["cached_tokens"]]
    assert (len(plain), len(writes), len(reads)) == (1, 1, 2)
    for row in plain:
        assert row["cost_usd"] == pytest.approx(row["baseline_usd"] / 2)
    # The 1-hour write premium (100 % of the input price) is halved by the batch too, and
    # here costs more than the batch saves on that one request.
    assert writes[0]["cost_usd"] > writes[0]["baseline_usd"] / 2
    for row in reads:
        uncached = row["prompt_tokens"] - row["cached_tokens"]
        # Cache reads at 10 % of the input price, halved again by the batch: 5 %.
        expected = (uncached * 3.0 * 0.5 + row["cached_tokens"] * 0.30 * 0.5
                    + row["completion_tokens"] * 15.0 * 0.5) / 1_000_000  # fmt: skip
        assert row["cost_usd"] == pytest.approx(expected)
        assert row["cost_usd"] < row["baseline_usd"] / 2
    # Over the four requests, caching paid for its write.
    total = sum(r["cost_usd"] for r in rows)
    assert total < sum(r["baseline_usd"] for r in rows) / 2
