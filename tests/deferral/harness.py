"""A deferral stack in one process: the real OpenAI emulator (chat + Files/Batches) over
``httpx.ASGITransport``, a real store (SQLite file or PostgreSQL), the real routing log,
a ``ManualClock``, and the scheduler driven step by step. No sockets, no sleeping."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from starlette.applications import Starlette

from adapters.clock import ManualClock
from adapters.emulators.openai.batch.emulator import BatchEmulator, BatchEmulatorConfig
from adapters.emulators.openai.config import OpenAIEmulatorConfig
from adapters.emulators.openai.server import create_app as emulator_app
from adapters.http import HttpxUpstream
from adapters.openai.batch import OpenAIBatchAdapter
from adapters.openai.chat import OpenAIAdapter
from proxy.context import Caller, Services
from proxy.deferral.queue import deferral_of
from proxy.deferral.scheduler import Scheduler
from proxy.lanes.planner import plan
from proxy.ops.routelog import RouteLog
from proxy.settings import Settings, parse_settings
from proxy.store import tickets as tstore
from proxy.store.db import Database
from proxy.store.jobs import Ticket

CHAT = "/v1/chat/completions"
EMBED = "/v1/embeddings"
SECRET = "whsec-test-secret"
# Emulator timings (seconds of ManualClock): validate 1 s, run 100 s, finalize 1 s.
TIMINGS = {"validation_delay": 1.0, "processing_time": 100.0, "finalize_delay": 1.0}
RUN = 103.0


def settings_for(tmp: Path, **overrides: Any) -> Settings:
    data: dict[str, Any] = {
        "store": {"path": str(tmp / "costroute.db")},
        "providers": {
            "openai": {"type": "openai", "base_url": "http://openai.test/v1"},
            "deepseek": {
                "type": "deepseek",
                "base_url": "http://deepseek.test",
                "price_windows": [
                    {
                        "name": "peak",
                        "days": ["mon", "tue", "wed", "thu", "fri"],
                        "start": "01:00",
                        "end": "04:00",
                        "multiplier": 2.0,
                    }
                ],
            },
        },
        "models": {
            "gpt-4o-mini": {"provider": "openai", "flex": True},
            "gpt-4o": {"provider": "openai"},
            "text-embedding-3-small": {"provider": "openai", "kind": "embedding"},
            "deepseek-chat": {"provider": "deepseek", "upstream_model": "deepseek-v4-flash"},
        },
        "batch": {"min_tolerance": "1h", "max_wait": "10m", "poll_interval": "30s"},
        "webhooks": {"allowed_hosts": ["hooks.test"], "secret_env": "WEBHOOK_SECRET"},
    }
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(data.get(section), dict):
            data[section] = {**data[section], **values}
        else:
            data[section] = values
    return parse_settings(data)


@dataclass
class Stack:
    settings: Settings
    clock: ManualClock
    services: Services
    scheduler: Scheduler
    openai: Starlette
    hooks: list[httpx.Request] = field(default_factory=list)

    @property
    def emulator(self) -> BatchEmulator:
        batches: BatchEmulator = self.openai.state.batches
        return batches

    @property
    def db(self) -> Database:
        return self.services.db

    async def enqueue(
        self,
        content: str = "hello",
        *,
        model: str = "gpt-4o-mini",
        tolerance: int = 4 * 3600,
        key: str = "alice",
        headers: Mapping[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> tuple[int, dict[str, Any], Mapping[str, str]]:
        """What the lead's handler does on a deferred request: plan, then enqueue."""
        embedding = "embedding" in model
        endpoint = EMBED if embedding else CHAT
        if body is None:
            body = (
                {"model": model, "input": [content]}
                if embedding
                else {"model": model, "messages": [{"role": "user", "content": content}]}
            )
        decision = plan(
            model=model,
            endpoint=endpoint,
            tolerance=tolerance,
            settings=self.settings,
            now=self.clock.now(),
        )
        assert decision.deferred, decision.reason
        response = await deferral_of(self.services).enqueue(
            self.services,
            Caller(key, admin=False),
            endpoint=endpoint,
            model=model,
            body=body,
            decision=decision,
            headers={k.lower(): v for k, v in (headers or {}).items()},
            request_id=f"req_{content}",
        )
        return response.status_code, orjson.loads(bytes(response.body)), response.headers

    async def ticket(self, ticket_id: str) -> Ticket:
        found = await tstore.get_ticket(self.db, ticket_id)
        assert found is not None
        return found

    async def statuses(self, ids: list[str]) -> list[str]:
        return [(await self.ticket(i)).status.value for i in ids]

    async def run_batches(self, *, seconds: float = RUN, rounds: int = 1) -> None:
        """Flush, let the emulator finish, poll and ingest."""
        for _ in range(rounds):
            await self.scheduler.flush_once(force=True)
            self.clock.advance(seconds)
            await self.scheduler.poll_once()

    async def routes(self) -> list[dict[str, Any]]:
        routelog: RouteLog = self.services.routelog
        await routelog.flush()
        rows = await self.db.fetchall("SELECT * FROM routes ORDER BY id")
        return [dict(row) for row in rows]

    async def events(self, ticket_id: str) -> list[tuple[str | None, str, str]]:
        return await tstore.events_of(self.db, ticket_id)


def _hook_app(hooks: list[httpx.Request], answers: list[int]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        hooks.append(request)
        status = answers.pop(0) if answers else 200
        if 300 <= status < 400:
            return httpx.Response(status, headers={"location": "http://hooks.test/elsewhere"})
        return httpx.Response(status, json={"ok": status < 300})

    return httpx.MockTransport(handle)


@contextlib.asynccontextmanager
async def stack(
    tmp: Path,
    *,
    batch_config: Mapping[str, Any] | None = None,
    hook_answers: list[int] | None = None,
    target: str | None = None,
    **overrides: Any,
) -> AsyncIterator[Stack]:
    """``target``: the store (a SQLite path or a PostgreSQL URL; default a SQLite file
    in ``tmp``)."""
    settings = settings_for(tmp, **overrides)
    clock = ManualClock()
    openai = emulator_app(
        OpenAIEmulatorConfig(),
        clock=clock,
        batch_config=BatchEmulatorConfig(**{**TIMINGS, **(batch_config or {})}),
    )
    deepseek = emulator_app(OpenAIEmulatorConfig(flavour="deepseek"), clock=clock)
    db = await Database.open(target or settings.store.path)
    routelog = RouteLog(db, linger=0)
    routelog.start()
    services = Services(settings=settings, db=db, clock=clock, routelog=routelog)

    def client(app: Starlette, base: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=base, timeout=30)

    services.batch = {
        "openai": OpenAIBatchAdapter(client(openai, "http://openai.test/v1"), api_key="sk-test")
    }
    services.chat = {
        "openai": OpenAIAdapter(
            HttpxUpstream(client(openai, "http://openai.test/v1")), api_key="sk-test"
        ),
        "deepseek": OpenAIAdapter(
            HttpxUpstream(client(deepseek, "http://deepseek.test")), api_key="sk-ds"
        ),
    }
    hooks: list[httpx.Request] = []
    hook_client = httpx.AsyncClient(
        transport=_hook_app(hooks, list(hook_answers or [])), follow_redirects=False
    )
    scheduler = Scheduler(services, webhook_client=hook_client, environ={"WEBHOOK_SECRET": SECRET})
    scheduler.deferral.start()
    try:
        yield Stack(settings, clock, services, scheduler, openai, hooks)
    finally:
        await scheduler.stop()
        await hook_client.aclose()
        for adapter in [*services.batch.values(), *services.chat.values()]:
            await adapter.aclose()
        await routelog.stop()
        await db.close()
        openai.state.batches.close()
