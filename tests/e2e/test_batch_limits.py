"""Batch limits per model, and what a forced flush means, end to end: the openai SDK ->
the proxy under uvicorn -> the OpenAI emulator, on one ManualClock.

Tried as a new user would: two models, ``max_active_batches`` left at its default (1).
One model's batch is still running (slow) when the other model's tickets arrive."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion

from adapters.clock import ManualClock
from adapters.emulators.openai.batch.emulator import BatchEmulatorConfig
from adapters.emulators.openai.server import OpenAIEmulatorConfig
from adapters.emulators.openai.server import create_app as openai_emulator
from proxy.app import create_app
from proxy.settings import parse_settings
from tests.sdk_checks import strict
from tests.support import ServerThread

TEAM = "sk-limits-team-000000000"
OPS = "sk-limits-ops-0000000000"
ENV = {"TEAM": TEAM, "OPS": OPS, "OPENAI": "sk-up"}
RUN = 103.0  # emulator: validate 1 s + run 100 s + finalize 1 s


class World:
    def __init__(self, tmp: Path, scope: str | None) -> None:
        self.clock = ManualClock()
        config = BatchEmulatorConfig(validation_delay=1, processing_time=100, finalize_delay=1)
        self.emulator = ServerThread(
            openai_emulator(OpenAIEmulatorConfig(), clock=self.clock, batch_config=config)
        ).start()
        provider: dict[str, Any] = {
            "type": "openai", "base_url": self.emulator.url + "/v1", "api_key_env": "OPENAI",
        }  # fmt: skip
        if scope is not None:
            provider["batch_limit_scope"] = scope
        settings = parse_settings(
            {
                "store": {"path": str(tmp / "costroute.db")},
                "auth": {"keys": [{"name": "team", "key_env": "TEAM"},
                                  {"name": "ops", "key_env": "OPS", "admin": True}]},
                "providers": {"openai": provider},
                "models": {"gpt-4o-mini": {"provider": "openai"},
                           "gpt-4o": {"provider": "openai"}},
                # max_wait far away: only a forced flush (or its memory) sends anything.
                "batch": {"poll_interval": "1s", "flush_interval": "1s", "max_wait": "6h"},
            }
        )  # fmt: skip
        self.proxy = ServerThread(create_app(settings, clock=self.clock, environ=ENV)).start()

    def stop(self) -> None:
        self.proxy.stop()
        self.emulator.stop()

    def defer(self, model: str, content: str) -> str:
        sdk = openai.OpenAI(base_url=self.proxy.url + "/v1", api_key=TEAM, max_retries=0)
        raw = sdk.chat.completions.with_raw_response.create(
            model=model,
            messages=[{"role": "user", "content": content}],
            extra_headers={"X-Latency-Tolerance": "1d"},
        )
        assert raw.status_code == 202
        return str(raw.http_response.json()["id"])

    def flush(self) -> dict[str, Any]:
        with httpx.Client(base_url=self.proxy.url, timeout=60) as client:
            response = client.post("/admin/flush", headers={"authorization": f"Bearer {OPS}"})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def provider_batches(self) -> int:
        """How many batches the emulator holds: a claimed ticket is ``submitted`` before
        its batch reaches the provider, so a test waits on this before moving the clock."""
        reply = httpx.get(
            self.emulator.url + "/v1/batches",
            headers={"authorization": "Bearer sk-up"},
            timeout=10,
        )
        return len(reply.json()["data"])

    def ticket(self, ticket_id: str, wait: int = 0) -> dict[str, Any]:
        with httpx.Client(base_url=self.proxy.url, timeout=wait + 30) as client:
            response = client.get(
                f"/v1/tickets/{ticket_id}",
                params={"wait": wait},
                headers={"authorization": f"Bearer {TEAM}"},
            )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


def until(condition: Callable[[], bool], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.05)


@pytest.fixture
def per_model(tmp_path: Path) -> Iterator[World]:
    world = World(tmp_path, None)
    try:
        yield world
    finally:
        world.stop()


@pytest.fixture
def per_provider(tmp_path: Path) -> Iterator[World]:
    world = World(tmp_path, "provider")
    try:
        yield world
    finally:
        world.stop()


def test_a_slow_batch_of_one_model_does_not_hold_another_model(per_model: World) -> None:
    w = per_model
    slow = w.defer("gpt-4o-mini", "a long job")
    assert len(w.flush()["batches"]) == 1
    w.clock.advance(50)  # the first batch is half way through
    other = w.defer("gpt-4o", "another model")
    summary = w.flush()
    assert summary["tickets"] == 1, summary
    assert w.ticket(other)["status"] == "submitted"
    assert w.ticket(slow)["status"] == "submitted"
    w.clock.advance(RUN)
    for ticket_id in (slow, other):
        done = w.ticket(ticket_id, wait=20)
        assert done["status"] == "completed", done
        strict(ChatCompletion, done["result"])


def test_a_forced_flush_drains_a_held_queue_when_the_limit_frees(per_provider: World) -> None:
    """With the per-provider cap, the second model waits for the first batch; the forced
    flush still stands, so it goes at the next flush tick, hours before its max_wait."""
    w = per_provider
    first = w.defer("gpt-4o-mini", "first")
    w.flush()
    held = w.defer("gpt-4o", "held")
    summary = w.flush()
    assert summary["batches"] == []
    assert any("openai max_active_batches (1)" in reason for reason in summary["held"])
    w.clock.advance(RUN)  # the first batch ends; max_wait (6 h) is far away
    assert w.ticket(first, wait=20)["status"] == "completed"
    until(lambda: w.ticket(held)["status"] == "submitted")
    until(lambda: w.provider_batches() == 2)
    w.clock.advance(RUN)
    done = w.ticket(held, wait=20)
    assert done["status"] == "completed", done
    strict(ChatCompletion, done["result"])
