"""A proxy with a ``ManualClock`` and a seeded history, for the admin API tests and the
browser tier: routing-log rows over ten days, tickets, batches and failing webhooks,
written through the store's own functions (so they follow the schema as it changes).

The scheduler's loops tick once at start-up and then hourly (real time), so nothing
moves the seeded rows while a test runs. No provider is ever called: the configured
base URLs point at a closed loopback port.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
from starlette.applications import Starlette
from starlette.routing import Route

from adapters.clock import ManualClock
from proxy import app as app_module
from proxy.api.admin import admin_routes
from proxy.app import create_app
from proxy.context import Services
from proxy.settings import Settings, parse_settings
from proxy.store import batches as bstore
from proxy.store import tickets as tstore
from proxy.store.jobs import BatchState, NewTicket, Outcome, TicketStatus
from proxy.store.routes import COLUMNS, insert_routes
from tests.support import ServerThread, free_port

CLIENT_KEY = "sk-ops-test-team-a-7f3c9d1e2b"
OTHER_KEY = "sk-ops-test-team-b-0a9b8c7d6e"
ADMIN_KEY = "sk-ops-test-admin-5e4d3c2b1a"
OPENAI_KEY = "sk-provider-openai-ops-test-91827364"
DEEPSEEK_KEY = "sk-provider-deepseek-ops-test-1029384"
WEBHOOK_SECRET = "whsec-ops-test-secret-55aa"
HOOK_TOKEN = "hook-token-ops-test-8c8c8c"
SECRET_PROMPT = "ops-test private prompt: the launch code is 0000"
ENV = {
    "TEAM_A_KEY": CLIENT_KEY,
    "TEAM_B_KEY": OTHER_KEY,
    "OPS_KEY": ADMIN_KEY,
    "OPENAI_API_KEY": OPENAI_KEY,
    "DEEPSEEK_API_KEY": DEEPSEEK_KEY,
    "WEBHOOK_SECRET": WEBHOOK_SECRET,
}
SECRETS = (CLIENT_KEY, OTHER_KEY, ADMIN_KEY, OPENAI_KEY, DEEPSEEK_KEY, WEBHOOK_SECRET,
           HOOK_TOKEN, SECRET_PROMPT)  # fmt: skip
START = 1_768_046_400.0  # 2026-01-10T12:00:00Z
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
CHAT = "/v1/chat/completions"


def ops_settings(tmp: Path, **overrides: Any) -> Settings:
    closed = f"http://127.0.0.1:{free_port()}"
    data: dict[str, Any] = {
        "store": {"path": str(tmp / "costroute.db")},
        "auth": {
            "keys": [
                {"name": "team-a", "key_env": "TEAM_A_KEY"},
                {"name": "team-b", "key_env": "TEAM_B_KEY"},
                {"name": "ops", "key_env": "OPS_KEY", "admin": True},
            ]
        },
        "providers": {
            "openai": {"type": "openai", "base_url": f"{closed}/v1",
                       "api_key_env": "OPENAI_API_KEY"},
            "deepseek": {"type": "deepseek", "base_url": closed,
                         "api_key_env": "DEEPSEEK_API_KEY"},
        },
        "models": {
            "gpt-4o-mini": {"provider": "openai"},
            "deepseek-flash": {"provider": "deepseek"},
        },
        "batch": {"flush_interval": "1h", "poll_interval": "1h"},
        "webhooks": {"allowed_hosts": ["hooks.test"], "secret_env": "WEBHOOK_SECRET"},
    }  # fmt: skip
    for section, values in overrides.items():
        data.setdefault(section, {}).update(values)
    return parse_settings(data)


def mount_admin(app: Starlette) -> None:
    """Until the app mounts the admin routes itself, mount them the way it will."""
    if not any(isinstance(r, Route) and r.path == "/admin/routes" for r in app.routes):
        app.router.routes.extend(admin_routes(app_module._plain_endpoint))


@dataclass
class OpsStack:
    server: ServerThread
    clock: ManualClock
    settings: Settings

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def services(self) -> Services:
        services: Services = self.server.app.state.services
        return services

    @property
    def now_ms(self) -> int:
        return int(self.clock.now() * 1000)

    def http(self, key: str | None = ADMIN_KEY, **headers: str) -> httpx.Client:
        if key is not None:
            headers["authorization"] = f"Bearer {key}"
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def call(self, coro: Any) -> Any:
        return self.server.call(coro)

    def fetch(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """Read the database the way a test double-checks the API (read only)."""

        async def run() -> list[dict[str, Any]]:
            return [dict(row) for row in await self.services.db.fetchall(sql, params)]

        rows: list[dict[str, Any]] = self.call(run())
        return rows


@contextlib.contextmanager
def ops_stack(tmp: Path, *, seed: bool = True, **overrides: Any) -> Iterator[OpsStack]:
    clock = ManualClock(START)
    settings = ops_settings(tmp, **overrides)
    app = create_app(settings, clock=clock, environ=ENV)
    mount_admin(app)
    server = ServerThread(app).start()
    stack = OpsStack(server, clock, settings)
    try:
        if seed:
            stack.call(seed_history(stack.services, stack.now_ms))
        yield stack
    finally:
        server.stop()


# --- the seeded history ------------------------------------------------------------------

LANES = ("realtime", "realtime", "batch", "flex", "realtime+cache")
STATUSES = (200, 200, 200, 200, 200, 429, 502, 499)


def route_rows(now_ms: int, count: int = 120) -> list[dict[str, Any]]:
    """``count`` requests over the last ten days, newest last (ids grow with time)."""
    rng = random.Random(7)
    rows = []
    for i in range(count):
        ts = now_ms - (count - i) * (10 * DAY_MS // count)
        status = STATUSES[i % len(STATUSES)]
        lane = LANES[i % len(LANES)]
        ok = status < 400
        error = None if ok else ("rate_limit_exceeded" if status == 429 else "upstream")
        cost = round(rng.uniform(0.001, 0.02), 6) if ok else None
        saved = None if cost is None else (cost if lane in ("batch", "flex") else 0.0)
        rows.append(
            {
                "ts_ms": ts,
                "request_id": f"req_{i:04d}",
                "key_name": ("team-a", "team-b", "ops")[i % 3],
                "endpoint": CHAT,
                "model": "gpt-4o-mini" if i % 4 else "deepseek-flash",
                "provider": "openai" if i % 4 else "deepseek",
                "lane": lane,
                "reason": f"seeded request {i}: {lane} lane",
                "status": status,
                "error_code": error,
                "stream": i % 5 == 0,
                "latency_ms": 120.0 + i,
                "attempts": 1,
                "prompt_tokens": 1000 + i if ok else None,
                "completion_tokens": 200 + i if ok else None,
                "cost_usd": cost,
                "baseline_usd": None if cost is None else cost + (saved or 0.0),
                "saved_usd": saved,
            }
        )  # fmt: skip
    return rows


def new_ticket(
    i: int, now_ms: int, *, created_ms: int, key: str = "team-a", callback: str | None = None
) -> NewTicket:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": SECRET_PROMPT}]}
    return NewTicket(
        id=f"tkt_seed{i:028d}",
        key_name=key,
        request_id=f"req_t{i}",
        idempotency_key=f"idem-{i}",
        endpoint=CHAT,
        model="gpt-4o-mini",
        provider="openai",
        upstream_model="gpt-4o-mini",
        lane="batch",
        reason="deferred: tolerance 24h allows the batch lane",
        body=orjson.dumps(body),
        est_tokens=50,
        created_ms=created_ms,
        deadline_ms=now_ms + 2 * DAY_MS,
        not_before_ms=0,
        callback_url=callback,
    )


async def _batch(services: Services, batch_id: str, at_ms: int, provider_id: str) -> None:
    groups = [g for g in await bstore.queued_groups(services.db) if g.provider == "openai"]
    claimed = await bstore.claim(
        services.db, batch_id=batch_id, group=groups[0], now_ms=at_ms, max_lines=50_000,
        max_bytes=200_000_000, line_overhead=100, token_room=None,
    )  # fmt: skip
    assert claimed is not None
    await bstore.mark_submitted(
        services.db, batch_id, provider_batch_id=provider_id, input_file_id=f"file-{batch_id}",
        now_ms=at_ms, next_poll_ms=at_ms + 30_000,
    )  # fmt: skip


async def _tickets(services: Services, items: list[NewTicket]) -> None:
    async with services.db.transaction() as conn:
        await tstore.insert_tickets(conn, items)


async def seed_history(services: Services, now_ms: int) -> None:
    """Rows that raise every alert kind under the default thresholds:

    - batch ``cb_stuck``: submitted 8 h ago, still running (stuck_after 6h);
    - batch ``cb_done``: ended 3 h ago with 4 of its 8 lines failed (alert_failure_rate 20%);
    - 3 batch tickets queued 2 h ago (alert_queue_age 1h);
    - a webhook to hooks.test that failed 4 times in a row (alert_failures 3).
    """
    db = services.db
    async with db.transaction() as conn:
        await insert_routes(conn, [tuple(r.get(c) for c in COLUMNS) for r in route_rows(now_ms)])
    # Batch that ended with half of its lines failed.
    done_at = now_ms - 3 * HOUR_MS
    await _tickets(
        services, [new_ticket(i, now_ms, created_ms=done_at - 4 * HOUR_MS) for i in range(8)]
    )
    await _batch(services, "cb_done", done_at - 2 * HOUR_MS, "batch_prov_done")
    ids = await bstore.ticket_ids_of(db, "cb_done")
    outcomes = [
        Outcome(tid, TicketStatus.COMPLETED if n % 2 else TicketStatus.FAILED,
                result=b'{"id": "chatcmpl-x"}' if n % 2 else None,
                error=None if n % 2 else {"message": "line failed", "type": "server_error",
                                          "param": None, "code": "server_error"},
                prompt_tokens=10, completion_tokens=5, detail="seeded")
        for n, tid in enumerate(ids)
    ]  # fmt: skip
    await bstore.apply_outcomes(db, "cb_done", outcomes, now_ms=done_at, max_attempts=1)
    await bstore.close(db, "cb_done", BatchState.COMPLETED, now_ms=done_at, completed=4, failed=4)
    # Batch submitted 8 h ago and still running.
    stuck_at = now_ms - 8 * HOUR_MS
    await _tickets(
        services,
        [new_ticket(i, now_ms, created_ms=stuck_at - HOUR_MS, key="team-b") for i in range(10, 15)],
    )
    await _batch(services, "cb_stuck", stuck_at, "batch_prov_stuck")
    # Tickets waiting in the queue for 2 h, one with a webhook whose deliveries fail.
    hook = f"https://hooks.test/costroute?token={HOOK_TOKEN}"
    queued = [new_ticket(i, now_ms, created_ms=now_ms - 2 * HOUR_MS) for i in range(20, 23)]
    await _tickets(services, queued)
    await _failing_webhook(services, now_ms, hook)


async def _failing_webhook(services: Services, now_ms: int, url: str) -> None:
    ticket_new = new_ticket(30, now_ms, created_ms=now_ms - 5 * HOUR_MS, callback=url)
    await _tickets(services, [ticket_new])
    ticket = await tstore.get_ticket(services.db, ticket_new.id)
    assert ticket is not None
    async with services.db.transaction() as conn:
        await tstore.move(conn, [ticket.id], TicketStatus.QUEUED, TicketStatus.CANCELLED,
                          now_ms=now_ms - 4 * HOUR_MS, detail="seeded")  # fmt: skip
    for attempt in range(4):
        at = now_ms - (4 - attempt) * HOUR_MS
        await tstore.webhook_result(
            services.db, ticket.id, now_ms=at, status="pending", next_attempt_ms=now_ms + DAY_MS,
            error=f"ConnectError: cannot reach {url}",
        )  # fmt: skip
