"""Ingesting a finished provider batch: stream its results (``BatchLane.results``), apply
each item's outcome to its ticket, then settle the tickets no line spoke for.

"completed" never means every line succeeded: each line is classified on its own
(``proxy.deferral.batchfiles.outcome_of``). Expired and cancelled batches keep their finished
lines and requeue the rest; a batch that failed validation fails the tickets whose lines
were bad and requeues the others (without charging an attempt when the provider only
refused for capacity). Ingestion is idempotent: every update is conditional on the ticket
still waiting on this batch, so a crash mid-ingest followed by a second run finishes each
ticket exactly once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from adapters.base import BatchInfo, BatchLane, BatchStatus
from proxy.context import Services
from proxy.deferral.batchfiles import error_object, outcome_of
from proxy.deferral.queue import finalized, priced
from proxy.store import batches as bstore
from proxy.store import route_rows
from proxy.store.jobs import Batch, BatchState, Outcome, TicketStatus

log = logging.getLogger(__name__)

# Lines applied per transaction: big enough to amortise commits, small enough that
# enqueues waiting for the writer are not held up for long. Result lines arrive in any
# order and ticket ids are random, so every chunk rewrites a share of the pages of the
# ticket table and of the ids-keyed indexes (events, results) that grows with the chunk
# until it covers them all: each chunk's commit copies those pages into the WAL. At
# 2,000 lines a 50,000-line ingest wrote 634 MB, at 5,000 it writes 423 MB and runs
# ~17 % faster. The price: the writer (and any enqueue waiting for it) is held longer
# per chunk, 0.25-0.4 s against 0.18-0.25 s (2 busy cores, Python work included).
_CHUNK = 5000
# Seconds a results stream may stall before what arrived is committed anyway.
_STALL_S = 0.5


@dataclass(frozen=True, slots=True)
class Ingested:
    # The provider refused the batch for capacity (enqueued-token limit): hold the group.
    capacity_refusal: bool = False
    failure_rate: float = 0.0


async def ingest(
    services: Services,
    batch: Batch,
    info: BatchInfo,
    *,
    read_files: bool = True,
    lease: bstore.Lease | None = None,
) -> Ingested:
    """Apply a final batch's results and close it. Download errors propagate (as
    ``AdapterError``) with the batch still ``submitted``, so the next poll retries.
    Without ``read_files`` (its files are gone for good) every ticket still waiting on
    the batch is requeued as if its line were missing. ``lease``: the poll's lease on
    the batch, which the close is fenced by (the per-line updates need no fence: each
    is conditional on its ticket still waiting on this batch)."""
    async with services.db.bulk():
        return await _ingest(services, batch, info, read_files=read_files, lease=lease)


async def _ingest(
    services: Services,
    batch: Batch,
    info: BatchInfo,
    *,
    read_files: bool,
    lease: bstore.Lease | None,
) -> Ingested:
    if read_files:
        await _ingest_results(services, services.batch[batch.provider], batch, info)
    refusal = False
    if info.status is BatchStatus.FAILED:
        refusal = await _validation_failed(services, batch, info)
    rest = await bstore.unresolved_ids(services.db, batch.id)
    if rest:
        code = {
            BatchStatus.EXPIRED: "batch_expired",
            BatchStatus.CANCELLED: "batch_cancelled",
        }.get(info.status, "missing_result")
        message = f"The batch ended {info.status} without a result for this request."
        error = error_object({"code": code, "message": message}, status_code=None)
        detail = f"batch {info.status}: no result, requeued"
        await apply(
            services,
            batch,
            [Outcome(t, TicketStatus.QUEUED, error=error, detail=detail) for t in rest],
        )
    await bstore.close(
        services.db,
        batch.id,
        BatchState(info.status.value),
        now_ms=int(services.clock.now() * 1000),
        completed=info.completed,
        failed=info.failed,
        errors=info.errors,
        lease=lease,
    )
    total = info.total or batch.line_count
    log.info("batch %s: %s, %d of %d lines failed", batch.id, info.status, info.failed, total)
    return Ingested(refusal, info.failed / total if total else 0.0)


async def _ingest_results(
    services: Services, lane: BatchLane, batch: Batch, info: BatchInfo
) -> None:
    """Parse results while earlier chunks are being written: SQLite runs in its own
    thread, so the two overlap. ``_in_flight`` chunks at most keep memory bounded. When
    the stream stalls (a slow second file, a hanging download), a watchdog commits what
    has arrived after ``_STALL_S``, so a crash while waiting loses no finished work. (A
    timed wait on every line did the same at ~8-14 µs a line: 0.4-0.7 s of a 50,000-line
    ingest, most of the margin to its 5 s target.)"""
    loop = asyncio.get_running_loop()
    pending: list[Outcome] = []
    writing: collections.deque[asyncio.Task[None]] = collections.deque()
    limit = _in_flight(services)
    arrived = loop.time()
    # Held for a whole hand-off, so no more than ``limit`` chunks are in flight and
    # whoever hands off next finds ``writing`` current.
    handing = asyncio.Lock()

    async def hand_off() -> None:
        nonlocal pending
        async with handing:
            if not pending:
                return
            chunk, pending = pending, []
            while len(writing) >= limit:
                await writing.popleft()
            writing.append(asyncio.create_task(apply(services, batch, chunk)))

    async def watch() -> None:
        while True:
            due = arrived + _STALL_S - loop.time()
            await asyncio.sleep(due if due > 0 else _STALL_S)
            if pending and loop.time() - arrived >= _STALL_S:
                # Shielded: stopping the watchdog must not drop a chunk it has taken.
                await asyncio.shield(hand_off())

    watchdog = asyncio.create_task(watch(), name=f"ingest-stall-{batch.id}")
    try:
        async for result in lane.results(info):
            arrived = loop.time()
            pending.append(outcome_of(result))
            if len(pending) >= _CHUNK:
                await hand_off()
    finally:
        watchdog.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watchdog
        async with handing:  # a hand-off the watchdog started has finished
            # A chunk already handed over commits (or not) as a whole either way.
            while writing:
                await writing.popleft()
    if pending:
        await apply(services, batch, pending)


def _in_flight(services: Services) -> int:
    """Chunks written at once. SQLite has one writer: a second chunk would only queue for
    it. On PostgreSQL two chunks go on two connections, so one chunk's statements run
    while the other's rows are built in Python (the two were serialised: 5.4 s for a
    50,000-line ingest, against 2.8 s of statements). Their tickets are disjoint, and a
    ticket in both (a provider repeating a line) is locked by the first and found
    settled by the second."""
    return 2 if services.db.shared else 1


async def _validation_failed(services: Services, batch: Batch, info: BatchInfo) -> bool:
    """Fail the tickets of bad lines (line numbers map back through the id order the
    file was written in) and requeue the rest. True for a pure capacity refusal."""
    ids: list[str] | None = None
    bad: list[Outcome] = []
    capacity = False
    for item in info.errors:
        code = str(item.get("code") or "")
        line = item.get("line")
        if isinstance(line, int) and line >= 1:
            if ids is None:
                ids = await bstore.ticket_ids_of(services.db, batch.id)
            if line <= len(ids):
                error = error_object({**item, "type": "invalid_request_error"}, status_code=400)
                detail = f"batch validation: line {line} {code}"
                bad.append(Outcome(ids[line - 1], TicketStatus.FAILED, error=error, detail=detail))
        elif "limit" in code:
            capacity = True
    if bad:
        await apply(services, batch, bad)
    rest = await bstore.unresolved_ids(services.db, batch.id)
    first = dict(info.errors[0]) if info.errors else {"code": "batch_failed"}
    first.setdefault("message", "The batch failed validation.")
    error = error_object(first, status_code=None)
    detail = f"batch failed validation ({first.get('code')}): requeued"
    refund = capacity and not bad
    requeue = [Outcome(t, TicketStatus.QUEUED, error=error, detail=detail) for t in rest]
    await apply(services, batch, requeue, refund=refund)
    return refund


async def apply(
    services: Services, batch: Batch, outcomes: Sequence[Outcome], *, refund: bool = False
) -> None:
    now_ms = int(services.clock.now() * 1000)
    applied = await bstore.apply_outcomes(
        services.db,
        batch.id,
        outcomes,
        now_ms=now_ms,
        max_attempts=services.settings.batch.max_attempts,
        refund=refund,
        price=lambda ticket, outcome: priced(services, ticket, outcome),
        route=lambda ticket, outcome: route_rows.final(ticket, outcome, now_ms=now_ms),
    )
    for ticket_id, status in applied.ignored:
        log.warning(
            "ticket %s: late result from batch %s ignored (ticket is %s)",
            ticket_id,
            batch.id,
            status,
        )
    finalized(services, [t.id for t, _ in applied.final])
