"""The deferral queue's figures: enqueue rate over HTTP, and flush and ingest of one full
50,000-ticket batch against the OpenAI emulator (Files + Batch API)."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from tests.benchmarks.batchwork import ticket_body
from tests.benchmarks.loadgen import run_load
from tests.benchmarks.procs import REPO, Server, fresh_db
from tests.benchmarks.realtime import HEADERS
from tests.benchmarks.stats import cpu_seconds, median


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    rates: list[float]  # 202s per second, per repeat
    p50_ms: float
    p99_ms: float
    accepted: int  # 202s counted by the client over all runs (warm-up included)
    committed: int  # ticket rows found in the database afterwards
    errors: int
    cpu_us: float

    @property
    def rate(self) -> float:
        return median(self.rates)


def enqueue_body() -> bytes:
    body = orjson.loads(ticket_body(0, 1024))
    body["model"] = "bench-instant"
    return orjson.dumps(body)


async def enqueue(
    upstream: Server,
    log_dir: Path,
    *,
    repeats: int,
    duration: float,
    warmup: float,
    loop: str,
    http: str,
    progress: Callable[[str], None],
    tag: str = "",
    tree: Path = REPO,
    db: str | None = None,
) -> EnqueueResult:
    """``db``: a store to use instead of a fresh SQLite file (a ``postgresql://`` URL)."""
    db_path: str | Path = db or fresh_db(log_dir / f"costroute-enqueue{tag}.db")
    headers = {**HEADERS, "x-latency-tolerance": "24h"}
    rates: list[float] = []
    p50s: list[float] = []
    p99s: list[float] = []
    accepted = errors = 0
    cpu_us: list[float] = []
    with Server(
        f"costroute-enqueue{tag}",
        "tests.benchmarks.costroute_server",
        ["--upstream", upstream.url, "--db", str(db_path), "--loop", loop, "--http", http],
        log_dir=log_dir,
        tree=tree,
    ) as proxy:
        for repeat in range(repeats):
            before = cpu_seconds(proxy.pid)
            result = await run_load(
                proxy.url + "/v1/chat/completions",
                enqueue_body(),
                headers=headers,
                concurrency=64,
                duration=duration,
                warmup=warmup,
                ok_status=202,
            )
            cpu_us.append((cpu_seconds(proxy.pid) - before) / max(result.sent, 1) * 1e6)
            rates.append(result.rps)
            p50s.append(result.p50)
            p99s.append(result.p99)
            accepted += result.statuses.get(202, 0)
            errors += result.errors
            progress(
                f"[enqueue{tag} {repeat + 1}/{repeats}] {result.rps:8.0f} tickets/s  "
                f"p50 {result.p50:6.2f} ms  p99 {result.p99:6.2f} ms  statuses {result.statuses}"
            )
    # Only requests inside the measured window are in ``accepted``; the database holds
    # the warm-up ones too, so committed >= accepted is the check.
    committed = count_tickets(str(db_path))
    return EnqueueResult(
        rates, median(p50s), median(p99s), accepted, committed, errors, median(cpu_us)
    )


def count_tickets(db: str) -> int:
    if db.startswith("postgresql://"):
        import asyncio
        import concurrent.futures

        import asyncpg

        async def count() -> int:
            conn = await asyncpg.connect(db)
            try:
                return int(await conn.fetchval("SELECT COUNT(*) FROM tickets"))
            finally:
                await conn.close()

        # Called from the benchmark's own event loop: count on another thread's loop.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, count()).result()
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM tickets").fetchone()[0])


def batch_flush_ingest(
    log_dir: Path, *, tickets: int, progress: Callable[[str], None], db: str | None = None
) -> dict[str, Any]:
    """Seed, then flush and ingest in a fresh process against the emulator. ``db``: a
    store to use instead of a fresh SQLite file (a ``postgresql://`` URL)."""
    db_path: str | Path = db or fresh_db(log_dir / "batch.db")
    files = log_dir / "emulator-files"
    shutil.rmtree(files, ignore_errors=True)
    files.mkdir()
    seeded = _batchwork(["seed", "--db", str(db_path), "--tickets", str(tickets)])
    progress(
        f"[batch] seeded {seeded['tickets']} tickets of {seeded['avg_body_bytes']:.0f} bytes "
        f"in {seeded['seconds']:.1f} s"
    )
    with Server(
        "emulator", "tests.benchmarks.emulator_server", ["--files-dir", str(files)], log_dir=log_dir
    ) as emulator:
        result = _batchwork(["run", "--db", str(db_path), "--emulator", emulator.url])
    result["seed"] = seeded
    flush, ingest = result["flush"], result["ingest"]
    progress(
        f"[batch] flush {flush['tickets']} tickets in {flush['seconds']:.2f} s "
        f"(upload {flush['upload_seconds']:.2f} s), RSS +{flush['rss_growth_mb']:.1f} MB; "
        f"ingest {ingest['lines']} lines in {ingest['seconds']:.2f} s -> {ingest['tickets']}"
    )
    return result


def user_batch_api(*, lines: int, progress: Callable[[str], None]) -> dict[str, Any]:
    """costroute's own Batch API at full size, in a fresh process (tests.benchmarks.userbatch)."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.benchmarks.userbatch", "--lines", str(lines)],
        cwd=REPO, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"userbatch failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = orjson.loads(done.stdout.strip().splitlines()[-1])
    progress(
        f"[batch api] {result['lines']} lines ({result['input_mb']} MB) validated and queued in "
        f"{result['create_s']:.2f} s, RSS +{result['create_growth_mb']:.0f} MB; output written "
        f"in {result['finalize_s']:.2f} s, downloaded in {result['download_s']:.2f} s"
    )
    return result


def _batchwork(args: list[str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "tests.benchmarks.batchwork", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"batchwork {args[0]} failed:\n{done.stderr[-3000:]}")
    parsed: dict[str, Any] = orjson.loads(done.stdout.strip().splitlines()[-1])
    return parsed
