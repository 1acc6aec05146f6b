"""Load on loopback: mixed real-time, streaming and deferred requests at concurrency 64
against ``costroute serve`` in front of the OpenAI and DeepSeek emulators (processes),
while batches are flushed, run and ingested underneath. Zero unexpected answers, every
ticket accounted for and finished, the proxy's memory flat from the first half to the
second. Default tier: 2,000 requests; ``pytest -m slow``: 10,000."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx
import pytest

from tests.hardening.procs import Emulator, Serve, write_toml
from tests.hardening.stack import ADMIN, CLIENT_A, CLIENT_B, DEEPSEEK_KEY, ENV, OPENAI_KEY

CONCURRENCY = 64
MiB = 1024


@dataclass
class Tally:
    answers: collections.Counter[str] = field(default_factory=collections.Counter)
    unexpected: list[str] = field(default_factory=list)
    tickets: set[str] = field(default_factory=set)
    rss_kib: list[int] = field(default_factory=list)


@dataclass
class Rig:
    proxy: Serve
    openai: Emulator
    deepseek: Emulator
    db: Path


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    openai = Emulator("openai", "--manual-clock", "--api-key", OPENAI_KEY)
    deepseek = Emulator("deepseek", "--api-key", DEEPSEEK_KEY)
    config = write_toml(tmp_path / "load.toml", {
        "store": {"path": str(tmp_path / "load.db")},
        "server": {"upstream_timeout": "30s"},
        "auth": {"keys": [{"name": "team-a", "key_env": "HARD_A_KEY"},
                          {"name": "team-b", "key_env": "HARD_B_KEY"},
                          {"name": "ops", "key_env": "HARD_OPS_KEY", "admin": True}]},
        "providers": {
            "openai": {"type": "openai", "base_url": openai.url + "/v1",
                       "api_key_env": "HARD_OPENAI_KEY", "max_active_batches": 4},
            "deepseek": {"type": "deepseek", "base_url": deepseek.url,
                         "api_key_env": "HARD_DEEPSEEK_KEY"},
        },
        "models": {"gpt-4o-mini": {"provider": "openai"},
                   "text-embedding-3-small": {"provider": "openai", "kind": "embedding"},
                   "deepseek-flash": {"provider": "deepseek"}},
        "batch": {"min_tolerance": "1h", "max_wait": "2s", "flush_interval": "1s",
                  "poll_interval": "0", "flush_lines": 400},
    })  # fmt: skip
    proxy = Serve(config, ENV)
    try:
        proxy.start()
        yield Rig(proxy, openai, deepseek, tmp_path / "load.db")
    finally:
        proxy.stop()
        openai.stop()
        deepseek.stop()


def _request(index: int) -> tuple[str, dict[str, object], dict[str, str]]:
    """(kind, body, headers) for request ``index``: 50 % real-time chat over two
    providers, 15 % embeddings, 15 % streaming, 20 % deferred."""
    key = CLIENT_A if index % 2 else CLIENT_B
    headers = {"authorization": f"Bearer {key}"}
    chat = {"messages": [{"role": "user", "content": f"load {index}"}]}
    slot = index % 20
    if slot < 10:
        model = "gpt-4o-mini" if slot % 2 else "deepseek-flash"
        return "realtime", {"model": model, **chat}, headers
    if slot < 13:
        return "embed", {"model": "text-embedding-3-small", "input": f"load {index}"}, headers
    if slot < 16:
        body = {"model": "gpt-4o-mini", "stream": True, **chat,
                "stream_options": {"include_usage": True}}  # fmt: skip
        return "stream", body, headers
    return "deferred", {"model": "gpt-4o-mini", **chat}, {**headers, "x-latency-tolerance": "4h"}


async def _one(http: aiohttp.ClientSession, url: str, index: int, tally: Tally) -> None:
    kind, body, headers = _request(index)
    path = "/v1/embeddings" if kind == "embed" else "/v1/chat/completions"
    try:
        async with http.post(url + path, json=body, headers=headers) as answer:
            content = await answer.read()
            expected = 202 if kind == "deferred" else 200
            if answer.status != expected:
                tally.unexpected.append(f"{kind} {answer.status}: {content[:200]!r}")
                return
            if kind == "stream" and (
                not content.rstrip().endswith(b"data: [DONE]") or b'"error"' in content
            ):
                tally.unexpected.append(f"stream ended badly: {content[-200:]!r}")
                return
            if kind == "deferred":
                tally.tickets.add(answer.headers["x-costroute-ticket"])
            tally.answers[kind] += 1
    except (aiohttp.ClientError, TimeoutError) as exc:
        tally.unexpected.append(f"{kind} {type(exc).__name__}: {exc}")


async def _load(rig: Rig, total: int, tally: Tally) -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(total):
        queue.put_nowait(index)
    done = 0

    async def worker(http: aiohttp.ClientSession) -> None:
        nonlocal done
        while not queue.empty():
            index = queue.get_nowait()
            await _one(http, rig.proxy.url, index, tally)
            done += 1
            if done in (total // 10, total // 2, total):
                tally.rss_kib.append(rig.proxy.rss_kib())

    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        await asyncio.gather(*(worker(http) for _ in range(CONCURRENCY)))


def _batch_clock(rig: Rig, stop: threading.Event) -> None:
    """Let provider batches finish while the load runs (the emulator's clock is manual)."""
    with httpx.Client(timeout=10) as http:
        while not stop.wait(0.5):
            with contextlib.suppress(httpx.HTTPError):
                http.post(rig.openai.url + "/_emulator/clock", json={"advance": 100})


def _statuses(db: Path) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        return dict(conn.execute("SELECT status, COUNT(*) FROM tickets GROUP BY status"))


def _drive(rig: Rig, total: int, budget: float) -> Tally:
    tally = Tally()
    stop = threading.Event()
    clock = threading.Thread(target=_batch_clock, args=(rig, stop), daemon=True)
    clock.start()
    started = time.monotonic()
    try:
        asyncio.run(_load(rig, total, tally))
        elapsed = time.monotonic() - started
        assert elapsed < budget, f"{total} requests took {elapsed:.1f}s"
        httpx.post(rig.proxy.url + "/admin/flush", headers={"authorization": f"Bearer {ADMIN}"})
        deadline = time.monotonic() + 60
        while _statuses(rig.db).keys() - {"completed"}:
            assert time.monotonic() < deadline, _statuses(rig.db)
            time.sleep(0.2)
    finally:
        stop.set()
        clock.join(10)
    return tally


def _check(rig: Rig, tally: Tally, total: int) -> None:
    assert tally.unexpected == [], tally.unexpected[:10]
    assert sum(tally.answers.values()) == total
    assert _statuses(rig.db) == {"completed": len(tally.tickets)}
    with contextlib.closing(sqlite3.connect(rig.db, timeout=10)) as conn:
        ids = {row[0] for row in conn.execute("SELECT id FROM tickets")}
    assert ids == tally.tickets  # every ticket accounted for, no stray ones
    assert rig.proxy.alive()
    # Memory: warmed up at 10 %, then flat from the half-way mark to the end.
    warm, half, end = tally.rss_kib
    assert half - warm < 64 * MiB, tally.rss_kib
    assert end - half < max(24 * MiB, half // 5), tally.rss_kib
    assert end < 400 * MiB, tally.rss_kib


def test_mixed_load_two_thousand_requests(rig: Rig) -> None:
    tally = _drive(rig, 2000, budget=45)
    _check(rig, tally, 2000)


@pytest.mark.slow
def test_mixed_load_ten_thousand_requests(rig: Rig) -> None:
    tally = _drive(rig, 10_000, budget=240)
    _check(rig, tally, 10_000)
    print(f"answers {dict(tally.answers)}, RSS KiB at 10/50/100 %: {tally.rss_kib}")
