"""The load generator: raw aiohttp, one keep-alive pool of ``concurrency`` connections,
``concurrency`` workers each sending its next request as soon as the last one finished.

A run lasts a fixed time after a warm-up (or a fixed number of requests); only requests
that start after the warm-up and finish before the end are measured. Latency is measured
to the last byte; for streams also to the first body byte (TTFB).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import aiohttp


@dataclass(slots=True)
class LoadResult:
    completed: int = 0
    sent: int = 0  # every finished request, warm-up included (for CPU per request)
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # ms, to the last byte
    ttfbs: list[float] = field(default_factory=list)  # ms, to the first body byte
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.completed / self.seconds if self.seconds else 0.0

    def pct(self, q: float, ttfb: bool = False) -> float:
        values = sorted(self.ttfbs if ttfb else self.latencies)
        if not values:
            return float("nan")
        index = min(len(values) - 1, max(0, round(q / 100.0 * len(values)) - 1))
        return values[index]

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies) if self.latencies else float("nan")

    @property
    def p99(self) -> float:
        return self.pct(99)

    @property
    def ttfb_p50(self) -> float:
        return statistics.median(self.ttfbs) if self.ttfbs else float("nan")


async def _one(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    stream: bool,
) -> tuple[int, float, float]:
    started = time.perf_counter()
    async with session.post(url, data=body, headers=headers) as response:
        first = started
        if stream:
            await response.content.readany()
            first = time.perf_counter()
            while await response.content.readany():
                pass
        else:
            await response.read()
        ended = time.perf_counter()
    return response.status, (ended - started) * 1000.0, (first - started) * 1000.0


async def run_load(
    url: str,
    body: bytes,
    *,
    headers: Mapping[str, str],
    concurrency: int,
    duration: float | None = None,
    warmup: float = 0.0,
    requests: int | None = None,
    stream: bool = False,
    ok_status: int = 200,
) -> LoadResult:
    """Measure for ``duration`` seconds after ``warmup``, or send exactly ``requests``."""
    result = LoadResult()
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    window_start = time.perf_counter()
    window_end = float("inf")
    if requests is None:
        assert duration is not None, "give a duration or a request count"
        window_start += warmup
        window_end = window_start + duration
    remaining = [requests if requests is not None else -1]

    async def worker() -> None:
        while True:
            if requests is not None:
                if remaining[0] <= 0:
                    return
                remaining[0] -= 1
            started = time.perf_counter()
            if started >= window_end:
                return
            try:
                status, latency, ttfb = await _one(session, url, body, headers, stream)
            except (aiohttp.ClientError, TimeoutError):
                status, latency, ttfb = 0, 0.0, 0.0
            ended = time.perf_counter()
            result.sent += 1
            if started < window_start or ended > window_end:
                continue
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if status != ok_status:
                result.errors += 1
                continue
            result.completed += 1
            result.latencies.append(latency)
            if stream:
                result.ttfbs.append(ttfb)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.seconds = min(window_end, time.perf_counter()) - window_start
    return result
