"""The hardening stack: costroute under uvicorn on a loopback port in front of the
OpenAI (with Files + Batches, on a ManualClock), DeepSeek and Gemini emulators, plus a
webhook receiver, all in threads of this process.

Keys are random per run, so a test that searches logs, the database or responses for
them cannot be fooled by a constant that happens to appear elsewhere. The scheduler's
flush loop is idle (``flush_interval`` 1h): tests flush through ``POST /admin/flush``,
move the batch emulator's clock, and let the poll, guard and webhook loops (every
0.2 s) ingest and deliver; waiting is done by long-polling the ticket API.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from adapters.clock import ManualClock
from adapters.emulators.gemini.config import GeminiEmulatorConfig
from adapters.emulators.gemini.server import create_app as gemini_emulator
from adapters.emulators.openai.batch.emulator import BatchEmulator, BatchEmulatorConfig
from adapters.emulators.openai.config import OpenAIEmulatorConfig
from adapters.emulators.openai.server import create_app as openai_emulator
from proxy.app import create_app
from proxy.settings import Settings, parse_settings
from tests.support import ServerThread


def _secret(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(16)}"


CLIENT_A = _secret("sk-hard-a")
CLIENT_B = _secret("sk-hard-b")
ADMIN = _secret("sk-hard-ops")
OPENAI_KEY = _secret("sk-prov-openai")
DEEPSEEK_KEY = _secret("sk-prov-deepseek")
GEMINI_KEY = _secret("AIza-prov-gemini")
WEBHOOK_SECRET = _secret("whsec")
SECRETS = {
    "client key a": CLIENT_A,
    "client key b": CLIENT_B,
    "admin key": ADMIN,
    "openai key": OPENAI_KEY,
    "deepseek key": DEEPSEEK_KEY,
    "gemini key": GEMINI_KEY,
    "webhook secret": WEBHOOK_SECRET,
}
ENV = {
    "HARD_A_KEY": CLIENT_A,
    "HARD_B_KEY": CLIENT_B,
    "HARD_OPS_KEY": ADMIN,
    "HARD_OPENAI_KEY": OPENAI_KEY,
    "HARD_DEEPSEEK_KEY": DEEPSEEK_KEY,
    "HARD_GEMINI_KEY": GEMINI_KEY,
    "HARD_WEBHOOK_SECRET": WEBHOOK_SECRET,
}
MESSAGES = [{"role": "user", "content": "hello"}]
# Emulator seconds a batch needs to end (validation 1 s, processing 10 s, finalize 1 s).
BATCH_TIMINGS = {"validation_delay": 1.0, "processing_time": 10.0, "finalize_delay": 1.0}
BATCH_RUN = 15.0


def settings_data(tmp: Path, urls: dict[str, str], hook_host: str | None) -> dict[str, Any]:
    return {
        "store": {"path": str(tmp / "costroute.db")},
        "server": {"max_body_bytes": 64 * 1024, "max_messages": 50, "upstream_timeout": "3s"},
        "auth": {
            "keys": [
                {"name": "team-a", "key_env": "HARD_A_KEY"},
                {"name": "team-b", "key_env": "HARD_B_KEY"},
                {"name": "ops", "key_env": "HARD_OPS_KEY", "admin": True},
            ]
        },
        "providers": {
            "openai": {
                "type": "openai",
                "base_url": urls["openai"] + "/v1",
                "api_key_env": "HARD_OPENAI_KEY",
                "max_active_batches": 4,
            },
            "deepseek": {
                "type": "deepseek",
                "base_url": urls["deepseek"],
                "api_key_env": "HARD_DEEPSEEK_KEY",
            },
            "gemini": {
                "type": "gemini",
                "base_url": urls["gemini"] + "/v1beta",
                "api_key_env": "HARD_GEMINI_KEY",
            },
        },
        "models": {
            "gpt-4o-mini": {"provider": "openai"},
            "text-embedding-3-small": {"provider": "openai", "kind": "embedding"},
            "deepseek-flash": {"provider": "deepseek"},
            "gemini-2.5-flash": {"provider": "gemini"},
        },
        "batch": {
            "min_tolerance": "1h",
            "max_wait": "1h",
            "flush_interval": "1h",
            "poll_interval": "0",
            "max_attempts": 2,
        },
        "webhooks": {
            "allowed_hosts": [hook_host] if hook_host else [],
            "secret_env": "HARD_WEBHOOK_SECRET",
            "timeout": "1s",
            "max_attempts": 2,
        },
        "retry": {
            "max_retries": 1,
            "backoff_base": 0.01,
            "backoff_max": 0.05,
            "max_retry_after": 1,
        },
    }


def merge(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(data.get(section), dict):
            data[section] = {**data[section], **values}
        else:
            data[section] = values
    return data


# --- the webhook receiver ----------------------------------------------------------------


@dataclass
class Receiver:
    """Records every POST; answers with the next queued behaviour (default 200):
    ``("status", 500)``, ``("redirect", url)``, ``("stall", seconds)``, ``("endless",)``."""

    received: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    behaviours: list[tuple[Any, ...]] = field(default_factory=list)
    streamed: int = 0

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            body = await request.body()
            self.received.append((request.url.path, dict(request.headers), body))
            behaviour = self.behaviours.pop(0) if self.behaviours else ("status", 200)
            kind = behaviour[0]
            if kind == "redirect":
                return Response(status_code=307, headers={"location": behaviour[1]})
            if kind == "stall":
                await asyncio.sleep(behaviour[1])
            if kind == "endless":
                return StreamingResponse(self._endless(), media_type="application/json")
            status = behaviour[1] if kind == "status" else 200
            return JSONResponse({"ok": status < 300}, status_code=status)

        return Starlette(routes=[Route("/{path:path}", hook, methods=["POST", "GET"])])

    async def _endless(self) -> Any:
        chunk = b" " * 65536
        for _ in range(16 * 1024):  # up to 1 GiB: far more than anyone should read
            self.streamed += len(chunk)
            yield chunk
            await asyncio.sleep(0)

    def bodies_for(self, path: str) -> list[bytes]:
        return [body for p, _, body in self.received if p == path]


# --- the stack ---------------------------------------------------------------------------


@dataclass
class HardStack:
    proxy: ServerThread
    openai: ServerThread
    deepseek: ServerThread
    gemini: ServerThread
    hooks: ServerThread
    receiver: Receiver
    settings: Settings
    batch_clock: ManualClock
    tmp: Path

    @property
    def url(self) -> str:
        return self.proxy.url

    @property
    def db_path(self) -> Path:
        return Path(self.settings.store.path)

    @property
    def batches(self) -> BatchEmulator:
        found: BatchEmulator = self.openai.app.state.batches
        return found

    @property
    def services(self) -> Any:
        return self.proxy.app.state.services

    def hook_url(self, path: str = "/hook") -> str:
        return f"{self.hooks.url}{path}"

    def http(self, key: str | None = CLIENT_A, timeout: float = 30) -> httpx.Client:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def reset(self) -> None:
        for server in (self.openai, self.deepseek, self.gemini):
            server.app.state.faults.clear()
            server.app.state.requests.clear()
        self.receiver.received.clear()
        self.receiver.behaviours.clear()

    def defer(
        self,
        http: httpx.Client,
        content: str,
        *,
        tolerance: str = "4h",
        headers: dict[str, str] | None = None,
        model: str = "gpt-4o-mini",
    ) -> dict[str, Any]:
        response = http.post(
            "/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": content}]},
            headers={"x-latency-tolerance": tolerance, **(headers or {})},
        )
        assert response.status_code == 202, response.text
        body: dict[str, Any] = response.json()
        return body

    def flush(self) -> dict[str, Any]:
        with self.http(ADMIN) as admin:
            response = admin.post("/admin/flush")
        assert response.status_code == 200, response.text
        summary: dict[str, Any] = response.json()
        return summary

    def run_batches(self) -> None:
        """Let every live provider batch finish (the poll loop then ingests them)."""
        self.batch_clock.advance(BATCH_RUN)

    def wait_final(self, http: httpx.Client, ticket_id: str, timeout: float = 10) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            response = http.get(f"/v1/tickets/{ticket_id}", params={"wait": 2})
            assert response.status_code == 200, response.text
            body = response.json()
            if body["status"] in ("completed", "failed", "cancelled"):
                return body
            assert time.monotonic() < deadline, f"ticket {ticket_id} still {body['status']}"

    def call(self, coro: Any, timeout: float = 30) -> Any:
        return self.proxy.call(coro, timeout)

    def sql(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        async def run() -> list[tuple[Any, ...]]:
            await self.services.routelog.flush()
            return [tuple(row) for row in await self.services.db.fetchall(query, params)]

        result: list[tuple[Any, ...]] = self.call(run())
        return result


def start_upstreams() -> tuple[ServerThread, ServerThread, ServerThread, ManualClock]:
    clock = ManualClock()
    openai = ServerThread(
        openai_emulator(
            OpenAIEmulatorConfig(api_keys=frozenset({OPENAI_KEY})),
            clock=clock,
            batch_config=BatchEmulatorConfig(api_key=OPENAI_KEY, **BATCH_TIMINGS),
        )
    ).start()
    deepseek = ServerThread(
        openai_emulator(
            OpenAIEmulatorConfig(flavour="deepseek", api_keys=frozenset({DEEPSEEK_KEY}))
        )
    ).start()
    gemini = ServerThread(
        gemini_emulator(GeminiEmulatorConfig(api_keys=frozenset({GEMINI_KEY})))
    ).start()
    return openai, deepseek, gemini, clock


@contextlib.contextmanager
def hard_stack(tmp: Path, **overrides: Any) -> Iterator[HardStack]:
    openai, deepseek, gemini, clock = start_upstreams()
    receiver = Receiver()
    hooks = ServerThread(receiver.app()).start()
    servers = [openai, deepseek, gemini, hooks]
    try:
        urls = {"openai": openai.url, "deepseek": deepseek.url, "gemini": gemini.url}
        data = merge(settings_data(tmp, urls, f"127.0.0.1:{hooks.port}"), overrides)
        settings = parse_settings(data)
        proxy = ServerThread(create_app(settings, environ=ENV)).start()
        servers.insert(0, proxy)
        yield HardStack(proxy, openai, deepseek, gemini, hooks, receiver, settings, clock, tmp)
    finally:
        for server in servers:
            server.stop()
        batches = openai.app.state.batches
        if batches is not None:
            batches.close()
