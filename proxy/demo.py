"""``costroute demo``: the whole product on one machine with no keys and no network.

Starts the provider emulators and the proxy on free loopback ports (SQLite in a temp
dir), sends a small mixed workload through the proxy over real HTTP, and prints what the
routing log recorded: lanes, reasons, tokens, cost and savings.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from proxy.cli_format import format_routes
from proxy.settings import Settings, parse_settings
from proxy.store.routes import recent_routes

DEMO_KEY = "demo-key-not-secret"
ADMIN_KEY = "demo-admin-key-not-secret"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="run a mixed workload through emulated providers")
    p.add_argument("--requests", type=int, default=6, help="real-time requests per provider")
    p.add_argument("--keep", action="store_true", help="keep the temp directory")
    p.set_defaults(func=run)


async def run(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="costroute-demo-"))
    print(f"costroute demo — emulated providers, SQLite at {workdir / 'demo.db'}\n")
    async with _demo_stack(workdir) as (proxy_url, app):
        async with httpx.AsyncClient(
            base_url=proxy_url, timeout=60, headers={"authorization": f"Bearer {DEMO_KEY}"}
        ) as client:
            await _realtime_workload(client, args.requests)
        services = app.state.services
        await services.routelog.flush()
        rows = await recent_routes(services.db, limit=1000)
    rows.reverse()
    print("Routing log")
    print(format_routes(rows))
    print()
    _print_summary(rows)
    return 0


async def _realtime_workload(client: httpx.AsyncClient, count: int) -> None:
    print("1. Real-time calls (no X-Latency-Tolerance): sent straight to the provider")
    for model in ("gpt-4o-mini", "deepseek-flash"):
        for i in range(count):
            response = await client.post(
                "/v1/chat/completions",
                json={"model": model, "messages": [{"role": "user", "content": f"Question {i}?"}]},
            )
            response.raise_for_status()
        print(f"   {count} x {model}: lane {response.headers['x-costroute-lane']}")
    async with client.stream(
        "POST",
        "/v1/chat/completions",
        json={
            "model": "gpt-4o-mini",
            "stream": True,
            "messages": [{"role": "user", "content": "Stream a short answer."}],
        },
    ) as stream:
        events = [line async for line in stream.aiter_lines() if line.startswith("data: ")]
    print(f"   1 streamed gpt-4o-mini call: {len(events)} SSE events, ending {events[-1]!r}")
    response = await client.post(
        "/v1/embeddings", json={"model": "text-embedding-3-small", "input": ["a", "b", "c"]}
    )
    response.raise_for_status()
    print(f"   1 embeddings call: {len(response.json()['data'])} vectors")
    print()


def _print_summary(rows: list[dict[str, Any]]) -> None:
    by_lane: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_lane.setdefault(row["lane"], []).append(row)
    print("Summary by lane")
    print(f"  {'lane':<16}{'requests':>9}{'cost $':>12}{'baseline $':>12}{'saved $':>10}")
    for lane, items in sorted(by_lane.items()):
        cost = sum(r["cost_usd"] or 0.0 for r in items)
        base = sum(r["baseline_usd"] or 0.0 for r in items)
        saved = sum(r["saved_usd"] or 0.0 for r in items)
        print(f"  {lane:<16}{len(items):>9}{cost:>12.6f}{base:>12.6f}{saved:>10.6f}")


# --- the stack ---------------------------------------------------------------------------


def demo_settings(workdir: Path, ports: dict[str, int]) -> Settings:
    return parse_settings(
        {
            "server": {"host": "127.0.0.1", "port": ports["proxy"]},
            "store": {"path": str(workdir / "demo.db")},
            "auth": {
                "keys": [
                    {"name": "demo", "key_env": "COSTROUTE_DEMO_KEY"},
                    {"name": "ops", "key_env": "COSTROUTE_DEMO_ADMIN_KEY", "admin": True},
                ]
            },
            "providers": {
                "openai": {
                    "type": "openai",
                    "base_url": f"http://127.0.0.1:{ports['openai']}/v1",
                    "api_key_env": "COSTROUTE_DEMO_OPENAI_KEY",
                },
                "deepseek": {
                    "type": "deepseek",
                    "base_url": f"http://127.0.0.1:{ports['deepseek']}",
                    "api_key_env": "COSTROUTE_DEMO_DEEPSEEK_KEY",
                },
            },
            "models": {
                "gpt-4o-mini": {"provider": "openai"},
                "text-embedding-3-small": {"provider": "openai", "kind": "embedding"},
                "deepseek-flash": {"provider": "deepseek"},
            },
            "batch": {"max_wait": "2s", "poll_interval": "1s", "flush_interval": "1s"},
        },
        source="demo",
    )


DEMO_ENV = {
    "COSTROUTE_DEMO_KEY": DEMO_KEY,
    "COSTROUTE_DEMO_ADMIN_KEY": ADMIN_KEY,
    "COSTROUTE_DEMO_OPENAI_KEY": "sk-emulated-openai",
    "COSTROUTE_DEMO_DEEPSEEK_KEY": "sk-emulated-deepseek",
}


@contextlib.asynccontextmanager
async def _demo_stack(workdir: Path) -> AsyncIterator[tuple[str, Any]]:
    from adapters.emulators.openai_server import OpenAIEmulatorConfig
    from adapters.emulators.openai_server import create_app as openai_emulator

    from proxy.app import create_app

    ports = {name: _free_port() for name in ("proxy", "openai", "deepseek")}
    apps = {
        "openai": openai_emulator(OpenAIEmulatorConfig(flavour="openai")),
        "deepseek": openai_emulator(OpenAIEmulatorConfig(flavour="deepseek")),
    }
    settings = demo_settings(workdir, ports)
    proxy_app = create_app(settings, environ=DEMO_ENV)
    apps["proxy"] = proxy_app
    servers = [_server(app, ports[name]) for name, app in apps.items()]
    tasks = [asyncio.create_task(server.serve()) for server in servers]
    try:
        await _wait_started(servers)
        yield f"http://127.0.0.1:{ports['proxy']}", proxy_app
    finally:
        for server in servers:
            server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)


def _server(app: Any, port: int) -> uvicorn.Server:
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    return server


async def _wait_started(servers: list[uvicorn.Server]) -> None:
    deadline = time.monotonic() + 15
    while not all(server.started for server in servers):
        if time.monotonic() > deadline:
            raise RuntimeError("the demo servers did not start")
        await asyncio.sleep(0.02)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
