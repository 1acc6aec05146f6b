"""Flush and ingest of one full batch, each step in a fresh process so that resident-size
growth is the step's own (a process that just built 50,000 tickets keeps their memory).

    python -m tests.benchmarks.batchwork seed --db PATH --tickets 50000 --size 1024
    python -m tests.benchmarks.batchwork run --db PATH --emulator URL

``seed`` writes queued batch-lane tickets straight through the ticket store (set-up, not
measured). ``run`` makes the emulator fail some lines (HTTP 400 in the output file, a
non-HTTP ``server_error`` in the error file), then times ``Scheduler.flush_once`` (claim,
streamed JSONL upload, batch creation), waits for the emulator to finish the batch, and
times ``ingest`` of its output and error files. It prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import httpx
import orjson

from tests.benchmarks.costroute_server import ENV, bench_settings
from tests.benchmarks.procs import rss_mb

ENDPOINT = "/v1/chat/completions"
PROVIDER, MODEL = "instant", "gpt-4o-mini"
# The emulator's per-line faults: every Nth input line fails.
FAULTS = (
    {"every": 50, "status_code": 400},  # permanent: the ticket fails
    {"every": 301, "code": "server_error", "message": "boom"},  # retryable: requeued
)
_WORDS = ("the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "while", "the",
          "batch", "waits", "its", "turn")  # fmt: skip


def ticket_body(index: int, size: int) -> bytes:
    """An upstream chat body of about ``size`` bytes."""
    words: list[str] = []
    length = 120
    while length < size:
        word = _WORDS[(index + len(words)) % len(_WORDS)]
        words.append(word)
        length += len(word) + 1
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"#{index} " + " ".join(words)}],
        "max_tokens": 16,
    }
    return orjson.dumps(body)


class RssPeak:
    """Samples this process's resident size every few milliseconds in a thread."""

    def __init__(self, every: float = 0.005) -> None:
        self.baseline = rss_mb_self()
        self.peak = self.baseline
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self.peak = max(self.peak, rss_mb_self())

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb_self())
        return self.peak - self.baseline


def rss_mb_self() -> float:
    import os

    return rss_mb(os.getpid())


async def seed(db_path: str, tickets: int, size: int) -> dict[str, Any]:
    from proxy.store import tickets as store
    from proxy.store.db import Database
    from proxy.store.jobs import NewTicket, new_ticket_id

    db = await Database.open(db_path)
    started = time.perf_counter()
    now_ms = int(time.time() * 1000)
    total_bytes = 0
    try:
        for start in range(0, tickets, 5000):
            items = []
            for index in range(start, min(start + 5000, tickets)):
                body = ticket_body(index, size)
                total_bytes += len(body)
                items.append(
                    NewTicket(
                        id=new_ticket_id(), key_name="bench", request_id=f"req_seed{index}",
                        idempotency_key=None, endpoint=ENDPOINT, model="bench-instant",
                        provider=PROVIDER, upstream_model=MODEL, lane="batch",
                        reason="benchmark seed", body=body, est_tokens=len(body) // 4,
                        created_ms=now_ms, deadline_ms=now_ms + 86_400_000, not_before_ms=0,
                        callback_url=None,
                    )
                )  # fmt: skip
            async with db.transaction() as conn:
                await store.insert_tickets(conn, items)
    finally:
        await db.close()
    return {
        "tickets": tickets,
        "avg_body_bytes": total_bytes / max(tickets, 1),
        "seconds": time.perf_counter() - started,
    }


class TimedAdapter:
    """The real batch adapter, with the time spent in the upload and the create call."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.upload_s = 0.0
        self.create_s = 0.0
        self.uploaded_bytes = 0
        # ``submit`` is made of these two steps: time them where the lane calls them.
        self._upload, self._create = inner.upload_jsonl, inner.create_batch
        inner.upload_jsonl, inner.create_batch = self.upload_jsonl, self.create_batch

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def upload_jsonl(self, lines: AsyncIterable[bytes], *, filename: str) -> str:
        async def counted() -> AsyncIterator[bytes]:
            async for line in lines:
                self.uploaded_bytes += len(line)
                yield line

        started = time.perf_counter()
        try:
            file_id: str = await self._upload(counted(), filename=filename)
            return file_id
        finally:
            self.upload_s = time.perf_counter() - started

    async def create_batch(self, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await self._create(**kwargs)
        finally:
            self.create_s = time.perf_counter() - started


async def run(db_path: str, emulator: str, wait_limit: float) -> dict[str, Any]:
    from adapters.clock import SystemClock
    from proxy.cli.flush import build_batch_adapters
    from proxy.context import Services
    from proxy.deferral.ingest import ingest
    from proxy.deferral.scheduler import Scheduler
    from proxy.ops.routelog import RouteLog
    from proxy.store import batches as bstore
    from proxy.store import tickets as tstore
    from proxy.store.db import Database

    auth = {"authorization": f"Bearer {ENV['BENCH_PROVIDER_KEY']}"}
    async with httpx.AsyncClient(base_url=emulator, headers=auth, timeout=60) as control:
        response = await control.post(
            "/_emulator/batches/line-faults", json={"clear": True, "faults": list(FAULTS)}
        )
        response.raise_for_status()

    settings = bench_settings(emulator, db_path)
    db = await Database.open(db_path)
    routelog = RouteLog(db)
    routelog.start()
    services = Services(settings=settings, db=db, clock=SystemClock(), routelog=routelog)
    keys = {name: ENV["BENCH_PROVIDER_KEY"] for name in settings.providers}
    timed = TimedAdapter(build_batch_adapters(settings, keys)[PROVIDER])
    services.batch = {PROVIDER: timed}
    scheduler = Scheduler(services)
    out: dict[str, Any] = {}
    try:
        queued = (await tstore.count_by_status(db)).get("queued", 0)
        memory = RssPeak()
        started = time.perf_counter()
        summary = await scheduler.flush_once(force=True)
        flush_s = time.perf_counter() - started
        growth = memory.stop()
        out["flush"] = {
            "queued": queued,
            "tickets": summary.tickets,
            "batches": len(summary.batches),
            "failed": list(summary.failed),
            "seconds": flush_s,
            "upload_seconds": timed.upload_s,
            "create_seconds": timed.create_s,
            "uploaded_mb": timed.uploaded_bytes / 1e6,
            "rss_baseline_mb": memory.baseline,
            "rss_growth_mb": growth,
        }
        if len(summary.batches) != 1:
            raise RuntimeError(f"expected one batch, flush gave {summary.to_json()}")
        batch = await bstore.get_batch(db, summary.batches[0])
        assert batch is not None
        assert batch.provider_batch_id is not None
        started = time.perf_counter()
        info = await timed.retrieve_batch(batch.provider_batch_id)
        while not info.status.final:
            if time.perf_counter() - started > wait_limit:
                raise TimeoutError(f"the emulator's batch is still {info.status}")
            await asyncio.sleep(0.5)
            info = await timed.retrieve_batch(batch.provider_batch_id)
        out["emulator_batch_seconds"] = time.perf_counter() - started
        memory = RssPeak()
        started = time.perf_counter()
        await ingest(services, batch, info)
        ingest_s = time.perf_counter() - started
        growth = memory.stop()
        started = time.perf_counter()
        await routelog.flush()
        out["ingest"] = {
            "status": str(info.status),
            "lines": (info.completed or 0) + (info.failed or 0),
            "failed_lines": info.failed,
            "seconds": ingest_s,
            "routelog_drain_seconds": time.perf_counter() - started,
            "rss_growth_mb": growth,
            "tickets": await tstore.count_by_status(db),
        }
    finally:
        await scheduler.stop()
        await timed.aclose()
        await routelog.stop()
        await db.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    p_seed = sub.add_parser("seed")
    p_seed.add_argument("--db", required=True)
    p_seed.add_argument("--tickets", type=int, default=50_000)
    p_seed.add_argument("--size", type=int, default=1024)
    p_run = sub.add_parser("run")
    p_run.add_argument("--db", required=True)
    p_run.add_argument("--emulator", required=True)
    p_run.add_argument("--wait", type=float, default=180.0)
    args = parser.parse_args()
    if args.command == "seed":
        result = asyncio.run(seed(args.db, args.tickets, args.size))
    else:
        result = asyncio.run(run(args.db, args.emulator, args.wait))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
