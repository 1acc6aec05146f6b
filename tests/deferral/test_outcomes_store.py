"""The store reads behind savings realised and the simulator's idle-tick skipping
(``proxy/store/outcomes.py``, ``outlook.py``) on both engines: one suite, SQLite and
PostgreSQL, through a real enqueue, flush, poll and ingest."""

from __future__ import annotations

from pathlib import Path

from proxy.store import outcomes
from proxy.store.outlook import outlook
from tests.deferral.harness import RUN, stack


async def test_outlook_and_outcomes_follow_a_batch_through(tmp_path: Path, db_target: str) -> None:
    async with stack(tmp_path, target=db_target) as s:
        empty = await outlook(s.db)
        assert (empty.created_batches, empty.realtime_tickets) == (0, 0)
        assert empty.next_poll_ms is None
        assert empty.earliest_deadline_ms is None
        ids = [(await s.enqueue(f"o{n}", tolerance=3600 * (n + 2)))[1]["id"] for n in range(3)]
        queued = await outlook(s.db)
        first = await s.ticket(ids[0])
        assert queued.earliest_deadline_ms == first.deadline_ms
        assert await outcomes.unfinished_tickets(s.db) == 3
        await s.scheduler.flush_once(force=True)
        submitted = await outlook(s.db)
        assert submitted.created_batches == 0
        assert submitted.next_poll_ms is not None
        s.clock.advance(RUN)
        await s.scheduler.poll_once()
        assert await outcomes.unfinished_tickets(s.db) == 0
        await s.routes()  # flushes the routing-log buffer
        rows = await outcomes.final_rows(s.db)
        assert sorted(r.ticket_id or "" for r in rows) == sorted(ids)
        for row in rows:
            assert (row.lane, row.status) == ("batch", 200)
            assert row.received_ms < row.ended_ms
            assert row.tolerance_s in (7200, 10800, 14400)
        assert await outcomes.batch_counts(s.db) == {("openai", "completed"): 1}
        [turnaround] = (await outcomes.turnarounds(s.db))["openai"]
        assert 0 < turnaround <= RUN
        assert await outcomes.requeued_lines(s.db) == 0
        assert await outcomes.escalated(s.db) == set()
