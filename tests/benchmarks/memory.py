"""Resident memory of costroute: idle, then after three equal rounds of real-time
requests (four fifths JSON, one fifth SSE, concurrency 64, instant upstream). The first
two warm pools and caches (SQLite's page cache fills over more than one round as the
routing log grows: +3 MB from round 1 to 2 whether a round is 50,000 or 100,000
requests); growth from the second to the third is a leak."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.benchmarks.loadgen import run_load
from tests.benchmarks.procs import Server, fresh_db
from tests.benchmarks.realtime import HEADERS, Case, Target, request_body


@dataclass(frozen=True, slots=True)
class MemoryResult:
    idle_mb: float
    after_round1_mb: float
    after_round2_mb: float
    after_round3_mb: float
    requests_per_round: int
    errors: int
    floor_idle_mb: float

    @property
    def growth_mb(self) -> float:
        return self.after_round3_mb - self.after_round2_mb

    @property
    def warmup_growth_mb(self) -> float:
        return self.after_round2_mb - self.after_round1_mb


async def _round(target: Target, requests: int) -> int:
    streamed = requests // 5
    errors = 0
    for case, count in (
        (Case(False, "instant", 64), requests - streamed),
        (Case(True, "instant", 64), streamed),
    ):
        result = await run_load(
            target.endpoint(case),
            request_body(case),
            headers=HEADERS,
            concurrency=case.concurrency,
            requests=count,
            stream=case.stream,
        )
        errors += result.errors + (count - result.completed - result.errors)
    return errors


async def measure(
    upstream: Server,
    log_dir: Path,
    *,
    requests_per_round: int,
    rounds: int = 3,
    loop: str,
    http: str,
    progress: Callable[[str], None],
) -> MemoryResult:
    args = ["--loop", loop, "--http", http]
    with contextlib.ExitStack() as stack:
        proxy = stack.enter_context(
            Server(
                "costroute-memory",
                "tests.benchmarks.costroute_server",
                [
                    *("--upstream", upstream.url),
                    *("--db", str(fresh_db(log_dir / "costroute-memory.db"))),
                    *args,
                ],
                log_dir=log_dir,
            )
        )
        floor = stack.enter_context(
            Server(
                "floor-memory",
                "tests.benchmarks.floor",
                ["--upstream", upstream.url, *args],
                log_dir=log_dir,
            )
        )
        await asyncio.sleep(1.0)
        idle, floor_idle = proxy.rss_mb(), floor.rss_mb()
        progress(f"[memory] idle RSS {idle:.1f} MB (floor {floor_idle:.1f} MB)")
        target = Target("costroute", proxy.url, proxy.pid)
        errors = 0
        after: list[float] = []
        for number in range(1, max(rounds, 3) + 1):
            errors += await _round(target, requests_per_round)
            # Let the routing log's group commit drain before reading the size.
            await asyncio.sleep(1.0)
            after.append(proxy.rss_mb())
            progress(
                f"[memory] after round {number} ({requests_per_round} requests): {after[-1]:.1f} MB"
            )
    # Rounds past the third only print (to tell a slow leak from a high-water mark).
    return MemoryResult(idle, *after[:3], requests_per_round, errors, floor_idle)
