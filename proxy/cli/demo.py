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
import orjson
import uvicorn

from proxy.cli.format import format_routes
from proxy.costs.reports import build_report, render_table
from proxy.settings import Settings, parse_settings
from proxy.store.routes import recent_routes

DEMO_KEY = "demo-key-not-secret"
ADMIN_KEY = "demo-admin-key-not-secret"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="run a mixed workload through emulated providers")
    p.add_argument("--requests", type=int, default=6, help="real-time requests per provider")
    p.add_argument("--deferred", type=int, default=20, help="deferred (batch) chat requests")
    p.add_argument("--gemini", type=int, default=6, help="Gemini requests sharing a long prompt")
    p.set_defaults(func=run)


async def run(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="costroute-demo-"))
    started_ms = int(time.time() * 1000)
    print(f"costroute demo — emulated providers, SQLite at {workdir / 'demo.db'}\n")
    async with _demo_stack(workdir) as (proxy_url, app):
        async with httpx.AsyncClient(
            base_url=proxy_url, timeout=60, headers={"authorization": f"Bearer {DEMO_KEY}"}
        ) as client:
            await _realtime_workload(client, args.requests)
            deferred_response = await _deferred_workload(client, args.deferred)
            await _gemini_workload(client, args.gemini)
            await _responses_workload(client, deferred_response)
            await _batch_file_workload(client)
        services = app.state.services
        await services.routelog.flush()
        rows = await recent_routes(services.db, limit=1000)
        now_ms = int(time.time() * 1000)
        report = await build_report(services.db, since_ms=started_ms, by="lane", now_ms=now_ms)
    rows.reverse()
    print("Routing log (one row per request; deferred requests show their 202 and their result)")
    print(format_routes(rows))
    print()
    print(render_table(report))
    print(
        "\nbaseline = the same usage at the real-time list price; savings = baseline - cost."
        "\nRe-run any time with `costroute demo`; `costroute report --config ...` gives the same"
        " view of a real deployment."
    )
    return 0


async def _realtime_workload(client: httpx.AsyncClient, count: int) -> None:
    print("1. Real-time calls (no X-Latency-Tolerance): sent straight to the provider")
    print("   (Claude: OpenAI format in, Anthropic Messages out, OpenAI back)")
    for model in ("gpt-4o-mini", "deepseek-flash", "claude-sonnet-4-5"):
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


async def _deferred_workload(client: httpx.AsyncClient, count: int) -> str:
    print("2. Deferred calls (X-Latency-Tolerance: 4h): queued, answered 202 with a ticket,")
    print("   sent through each provider's batch API at half price (an OpenAI batch job, a")
    print("   Gemini Batch Mode job, an Anthropic Message Batch: one interface), fetched by")
    print("   ticket; the Claude ones share a long system prompt, cached inside the batch")
    tickets: dict[str, list[str]] = {"gpt-4o-mini": [], "gemini-2.5-flash": [],
                                     "claude-sonnet-4-5": []}  # fmt: skip
    few = max(2, count // 4)
    for model, how_many in (
        ("gpt-4o-mini", count), ("gemini-2.5-flash", few), ("claude-sonnet-4-5", few + 1)
    ):  # fmt: skip
        for i in range(how_many):
            messages = [{"role": "user", "content": f"Summarise document {i} in a line."}]
            if model.startswith("claude"):
                # Discounts stack: batch half price, and cache reads at 10 % of that.
                messages.insert(0, {"role": "system", "content": LONG_SYSTEM_PROMPT})
            response = await client.post(
                "/v1/chat/completions",
                headers={"x-latency-tolerance": "4h", "idempotency-key": f"demo-{model}-{i}"},
                json={"model": model, "messages": messages},
            )
            if response.status_code != 202:
                raise RuntimeError(f"expected 202, got {response.status_code}: {response.text}")
            tickets[model].append(response.json()["id"])
    first = tickets["gpt-4o-mini"][0]
    replay = await client.post(
        "/v1/chat/completions",
        headers={"x-latency-tolerance": "4h", "idempotency-key": "demo-gpt-4o-mini-0"},
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "again"}]},
    )
    queued = ", ".join(f"{len(ids)} x {model}" for model, ids in tickets.items())
    print(f"   {queued} queued, e.g. {first} (Location: /v1/tickets/{first})")
    print(f"   the same Idempotency-Key again returns the same ticket: {replay.json()['id']}")
    # A Responses API call deferred the SDK's own way: background + a tolerance.
    deferred = await client.post(
        "/v1/responses",
        headers={"x-latency-tolerance": "4h"},
        json={
            "model": "gpt-4o-mini",
            "input": "Draft a one-line release note.",
            "background": True,
        },
    )
    deferred.raise_for_status()
    response_id = str(deferred.json()["id"])
    print(f"   1 Responses call deferred too: {response_id} is {deferred.json()['status']!r}")
    flush = await client.post("/admin/flush", headers={"authorization": f"Bearer {ADMIN_KEY}"})
    flush.raise_for_status()
    print(f"   POST /admin/flush (admin key): batches {flush.json()['batches']}")
    started = time.monotonic()
    for model, ids in tickets.items():
        statuses: dict[str, int] = {}
        for ticket in ids:
            body = (await client.get(f"/v1/tickets/{ticket}", params={"wait": 60})).json()
            statuses[body["status"]] = statuses.get(body["status"], 0) + 1
        print(
            f"   long-polled every {model} ticket: {statuses} after "
            f"{time.monotonic() - started:.1f} s"
        )
    print()
    return response_id


async def _gemini_workload(client: httpx.AsyncClient, count: int) -> None:
    print("3. A long shared system prompt in real time: after it repeats, costroute caches")
    print("   it (Gemini: a cachedContents object; Claude: a cache_control breakpoint)")
    for model in ("gemini-2.5-flash", "claude-sonnet-4-5"):
        lanes: list[str] = []
        cached: list[int] = []
        for i in range(count):
            response = await client.post(
                "/v1/chat/completions",
                json={
                    "model": model,
                    "messages": [
                        {"role": "system", "content": LONG_SYSTEM_PROMPT},
                        {"role": "user", "content": f"Which clause covers case {i}?"},
                    ],
                },
            )
            response.raise_for_status()
            lanes.append(response.headers["x-costroute-lane"])
            details = response.json()["usage"].get("prompt_tokens_details") or {}
            cached.append(int(details.get("cached_tokens") or 0))
        print(f"   {model} lanes: {', '.join(lanes)}")
        print(f"   {model} cached prompt tokens per call: {cached}")
    print()


async def _responses_workload(client: httpx.AsyncClient, deferred_id: str) -> None:
    print("4. The Responses API (client.responses.create): passed through to OpenAI, bridged")
    print("   through the chat translation for Gemini, and deferred as a background response")
    for model in ("gpt-4o-mini", "gemini-2.5-flash"):
        response = await client.post(
            "/v1/responses", json={"model": model, "input": "Name one prime number."}
        )
        response.raise_for_status()
        body = response.json()
        print(f"   {model}: status {body['status']!r}, {body['usage']['total_tokens']} tokens,"
              f" lane {response.headers['x-costroute-lane']}")  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        body = (await client.get(f"/v1/responses/{deferred_id}")).json()
        if body["status"] not in ("queued", "in_progress") or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    print(f"   GET /v1/responses/{deferred_id}: {body['status']!r} (through the batch job)")
    print()


async def _batch_file_workload(client: httpx.AsyncClient) -> None:
    print("5. A Batch API file (client.files.create + client.batches.create) mixing three")
    print("   providers, which OpenAI itself refuses: costroute runs every line on its queue")
    lines = [
        (f"q{i}", model, f"Classify ticket {i}: refund, bug or question?")
        for i, model in enumerate(["gpt-4o-mini"] * 3 + ["gemini-2.5-flash"] * 2
                                  + ["deepseek-flash"] * 2)
    ]  # fmt: skip
    jsonl = b"".join(
        orjson.dumps({"custom_id": cid, "method": "POST", "url": "/v1/chat/completions",
                      "body": {"model": model, "messages": [{"role": "user", "content": q}]}})
        + b"\n"
        for cid, model, q in lines
    )  # fmt: skip
    uploaded = await client.post(
        "/v1/files", files={"file": ("demo.jsonl", jsonl)}, data={"purpose": "batch"}
    )
    uploaded.raise_for_status()
    created = await client.post("/v1/batches", json={
        "input_file_id": uploaded.json()["id"], "endpoint": "/v1/chat/completions",
        "completion_window": "24h"})  # fmt: skip
    created.raise_for_status()
    batch_id = created.json()["id"]
    print(f"   {batch_id}: {created.json()['request_counts']['total']} lines, "
          f"status {created.json()['status']!r}")  # fmt: skip
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    deadline = time.monotonic() + 90
    while True:
        await client.post("/admin/flush", headers=admin)
        batch = (await client.get(f"/v1/batches/{batch_id}")).json()
        if batch["status"] not in ("in_progress", "finalizing") or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    counts = batch["request_counts"]
    print(f"   {batch['status']!r}: {counts['completed']} completed, {counts['failed']} failed,"
          f" {batch['usage']['total_tokens'] if batch['usage'] else 0} tokens")  # fmt: skip
    if batch.get("output_file_id"):
        output = (await client.get(f"/v1/files/{batch['output_file_id']}/content")).content
        first = orjson.loads(output.splitlines()[0])
        print(f"   output file {batch['output_file_id']}: {len(output.splitlines())} lines, e.g."
              f" {first['custom_id']} -> {first['response']['body']['model']}")  # fmt: skip
    print()


LONG_SYSTEM_PROMPT = "You are the contracts assistant of a logistics company. " + " ".join(
    f"Clause {n}: deliveries of category {n % 7} are insured up to {1000 + 37 * n} euros "
    f"and must be signed for within {n % 5 + 1} days."
    for n in range(1, 90)
)


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
                "gemini": {
                    "type": "gemini",
                    "base_url": f"http://127.0.0.1:{ports['gemini']}/v1beta",
                    "api_key_env": "COSTROUTE_DEMO_GEMINI_KEY",
                },
                "anthropic": {
                    "type": "anthropic",
                    "base_url": f"http://127.0.0.1:{ports['anthropic']}/v1",
                    "api_key_env": "COSTROUTE_DEMO_ANTHROPIC_KEY",
                },
            },
            "models": {
                "gpt-4o-mini": {"provider": "openai"},
                "text-embedding-3-small": {"provider": "openai", "kind": "embedding"},
                "deepseek-flash": {"provider": "deepseek"},
                "gemini-2.5-flash": {"provider": "gemini", "cache_min_tokens": 1024},
                "claude-sonnet-4-5": {"provider": "anthropic", "max_tokens_default": 512},
            },
            # Short timers so the demo finishes in seconds; production defaults are minutes.
            "batch": {"max_wait": "2s", "poll_interval": "1s", "flush_interval": "1s"},
            "cache": {"min_repeats": 2},
        },
        source="demo",
    )


DEMO_ENV = {
    "COSTROUTE_DEMO_KEY": DEMO_KEY,
    "COSTROUTE_DEMO_ADMIN_KEY": ADMIN_KEY,
    "COSTROUTE_DEMO_OPENAI_KEY": "sk-emulated-openai",
    "COSTROUTE_DEMO_DEEPSEEK_KEY": "sk-emulated-deepseek",
    "COSTROUTE_DEMO_GEMINI_KEY": "emulated-gemini-key",
    "COSTROUTE_DEMO_ANTHROPIC_KEY": "sk-ant-emulated",
}


@contextlib.asynccontextmanager
async def _demo_stack(workdir: Path) -> AsyncIterator[tuple[str, Any]]:
    from adapters.emulators.anthropic.batches import BatchSettings
    from adapters.emulators.anthropic.server import AnthropicEmulatorConfig
    from adapters.emulators.anthropic.server import create_app as anthropic_emulator
    from adapters.emulators.gemini.server import GeminiEmulatorConfig
    from adapters.emulators.gemini.server import create_app as gemini_emulator
    from adapters.emulators.openai.batch.emulator import BatchEmulatorConfig
    from adapters.emulators.openai.server import OpenAIEmulatorConfig
    from adapters.emulators.openai.server import create_app as openai_emulator
    from proxy.app import create_app

    ports = {name: _free_port() for name in ("proxy", "openai", "deepseek", "gemini", "anthropic")}
    # A batch that takes seconds instead of hours, same state machine.
    fast_batches = BatchEmulatorConfig(
        validation_delay=0.5, processing_time=1.5, finalize_delay=0.5
    )
    apps = {
        "openai": openai_emulator(
            OpenAIEmulatorConfig(flavour="openai"), batch_config=fast_batches
        ),
        "deepseek": openai_emulator(OpenAIEmulatorConfig(flavour="deepseek")),
        # Batches that finish in seconds, not Gemini's minutes, so the demo is quick.
        "gemini": gemini_emulator(
            GeminiEmulatorConfig(batch_start_after=0.5, batch_complete_after=2.0)
        ),
        "anthropic": anthropic_emulator(
            AnthropicEmulatorConfig(batches=BatchSettings(complete_after=2.0))
        ),
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
