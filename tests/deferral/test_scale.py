"""50,000 tickets of about 1 KB: the flusher streams them into one batch file in under
5 s without holding the file in memory (< 150 MB growth), and ingesting 50,000 result
lines takes under 5 s. The provider side is a counting fake so only our own work is
measured.

The full-size run is in the ``slow`` tier (``pytest -m slow tests/deferral/test_scale.py``)
because wall-clock limits are only meaningful on a quiet machine; the default tier runs
the same path with 10,000 tickets, which still catches any quadratic regression (such as
a missing index turning each page of the upload into a sort of the whole batch)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from pathlib import Path

import orjson
import pytest

from adapters.base import BatchInfo, BatchResult, BatchStatus
from adapters.clock import ManualClock
from adapters.openai.batch import LIMITS, jsonl, parse_result_line
from proxy.context import Services
from proxy.deferral.scheduler import Scheduler
from proxy.ops.routelog import RouteLog
from proxy.store.db import Database
from proxy.store.jobs import new_ticket_id
from tests.deferral.harness import settings_for

NOW_MS = 1_767_225_600_000


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


class CountingProvider:
    """Consumes uploads line by line and serves a synthetic result file."""

    provider_type = "openai"
    limits = LIMITS

    def __init__(self, count: int) -> None:
        self.count = count
        self.created = 0
        self.lines = 0
        self.bytes = 0
        self.largest_chunk = 0
        self.ids: list[str] = []

    async def submit(
        self,
        items: AsyncIterable[tuple[str, bytes]],
        *,
        endpoint: str,
        model: str,
        metadata: Mapping[str, str],
    ) -> BatchInfo:
        # The OpenAI lane's own line writer, so the work measured is the real one.
        async for line in jsonl(items, endpoint):
            self.lines += 1
            self.bytes += len(line)
            self.largest_chunk = max(self.largest_chunk, len(line))
        self.created += 1
        return BatchInfo(f"batch_{self.created}", BatchStatus.VALIDATING, endpoint,
                         "file-in", 0, metadata=dict(metadata))  # fmt: skip

    async def retrieve(self, batch_id: str) -> BatchInfo:
        return BatchInfo(
            "batch_1", BatchStatus.COMPLETED, "/v1/chat/completions", "file-in", 0,
            output_file_id="file-out", total=self.count, completed=self.count,
        )  # fmt: skip

    async def cancel(self, batch_id: str) -> BatchInfo:
        raise NotImplementedError

    async def list(self, *, since: float | None = None) -> AsyncIterator[BatchInfo]:
        return
        yield

    async def results(self, info: BatchInfo) -> AsyncIterator[BatchResult]:
        async for raw in self.file_lines(info.output_file_id or ""):
            result = parse_result_line(raw)
            assert result is not None
            yield result

    async def file_lines(self, file_id: str) -> AsyncIterator[bytes]:
        for index, ticket_id in enumerate(reversed(self.ids)):  # any order: joined by id
            body = {
                "id": f"chatcmpl-{index}",
                "object": "chat.completion",
                "created": 0,
                "model": "gpt-4o-mini",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "word " * 60}}],
                "usage": {"prompt_tokens": 250, "completion_tokens": 60, "total_tokens": 310},
            }  # fmt: skip
            yield orjson.dumps(
                {"id": f"batch_req_{index}", "custom_id": ticket_id, "error": None,
                 "response": {"status_code": 200, "request_id": "r", "body": body}}
            )  # fmt: skip

    async def aclose(self) -> None:
        pass


async def seed(db: Database, ids: list[str]) -> None:
    content = "Summarise this paragraph please. " * 28  # ~1 KB request bodies
    for start in range(0, len(ids), 5000):
        rows = []
        bodies = []
        for i in range(start, min(start + 5000, len(ids))):
            body = orjson.dumps(
                {
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": f"{i} {content}"}],
                }
            )
            rows.append((ids[i], "alice", f"req_{i}", "/v1/chat/completions", "gpt-4o-mini",
                         "openai", "gpt-4o-mini", "batch", "seed", "queued", len(body), 250,
                         NOW_MS, NOW_MS + 86_400_000, NOW_MS))  # fmt: skip
            bodies.append((ids[i], body))
        async with db.transaction() as conn:
            await conn.executemany(
                "INSERT INTO tickets (id, key_name, request_id, endpoint, model, provider, "
                "upstream_model, lane, reason, status, body_bytes, est_tokens, created_ms, "
                "deadline_ms, updated_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                rows,
            )
            await conn.executemany("INSERT INTO ticket_bodies VALUES (?, ?)", bodies)


@pytest.mark.slow
async def test_fifty_thousand_tickets_flush_and_ingest_fast(tmp_path: Path) -> None:
    await flush_and_ingest(tmp_path, 50_000, seconds=5.0, megabytes=150)


@pytest.mark.slow
async def test_the_fifty_thousand_and_first_ticket_goes_in_a_second_batch(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    settings.providers["openai"].__dict__["max_active_batches"] = 2
    db = await Database.open(settings.store.path)
    services = Services(
        settings=settings, db=db, clock=ManualClock(NOW_MS / 1000), routelog=RouteLog(db)
    )
    provider = CountingProvider(50_001)
    services.batch = {"openai": provider}
    scheduler = Scheduler(services, environ={"WEBHOOK_SECRET": "x"})
    try:
        provider.ids = [new_ticket_id() for _ in range(50_001)]
        await seed(db, provider.ids)
        summary = await scheduler.flush_once(force=True)
        assert summary.tickets == 50_001
        rows = await db.fetchall("SELECT line_count FROM batches ORDER BY line_count")
        assert [row[0] for row in rows] == [1, 50_000]  # the provider's per-file limit
    finally:
        await scheduler.stop()
        await db.close()


async def test_ten_thousand_tickets_flush_and_ingest_in_linear_time(tmp_path: Path) -> None:
    await flush_and_ingest(tmp_path, 10_000, seconds=5.0, megabytes=60)


async def flush_and_ingest(tmp_path: Path, count: int, *, seconds: float, megabytes: int) -> None:
    settings = settings_for(tmp_path)
    db = await Database.open(settings.store.path)
    routelog = RouteLog(db)
    routelog.start()
    services = Services(
        settings=settings, db=db, clock=ManualClock(NOW_MS / 1000), routelog=routelog
    )
    provider = CountingProvider(count)
    services.batch = {"openai": provider}
    scheduler = Scheduler(services, environ={"WEBHOOK_SECRET": "x"})
    try:
        provider.ids = [new_ticket_id() for _ in range(count)]
        await seed(db, provider.ids)

        peak = before = rss_bytes()
        done = asyncio.Event()

        async def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, rss_bytes())
                await asyncio.sleep(0.005)

        sampler = asyncio.create_task(sample())
        started = time.perf_counter()
        summary = await scheduler.flush_once(force=True)
        flush_seconds = time.perf_counter() - started
        done.set()
        await sampler
        assert summary.tickets == count
        assert len(summary.batches) == 1
        assert provider.lines == count
        assert 1000 * count < provider.bytes < 200 * 1000 * 1000
        assert flush_seconds < seconds, flush_seconds
        growth_mb = (peak - before) / 1e6
        assert growth_mb < megabytes, growth_mb

        services.clock.advance(60)  # type: ignore[attr-defined]
        started = time.perf_counter()
        await scheduler.poll_once()
        ingest_seconds = time.perf_counter() - started
        assert ingest_seconds < seconds, ingest_seconds
        print(f"flush {flush_seconds:.2f}s (+{growth_mb:.0f} MB), ingest {ingest_seconds:.2f}s")
        rows = await db.fetchall("SELECT status, COUNT(*) FROM tickets GROUP BY status")
        assert [tuple(row) for row in rows] == [("completed", count)]
    finally:
        await scheduler.stop()
        await routelog.stop()
        await db.close()
