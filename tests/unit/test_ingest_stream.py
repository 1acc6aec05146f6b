"""How an ingest hands a provider's result stream to the store: chunks of ``_CHUNK``
lines, one in flight on SQLite and two on PostgreSQL, and what arrived before a stall is committed
``_STALL_S`` into the stall, while the stream still hangs (a crash then loses no
finished work). The store is replaced by a recorder; the lane by a scripted stream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from types import SimpleNamespace
from typing import Any

import pytest

from adapters.base import BatchResult
from proxy.deferral import ingest
from proxy.store.jobs import Outcome, TicketStatus


class Recorder:
    def __init__(self) -> None:
        self.chunks: list[tuple[float, list[str]]] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def apply(self, services: Any, batch: Any, outcomes: Sequence[Outcome]) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(0.01)  # a transaction
        self.chunks.append((time.monotonic(), [o.ticket_id for o in outcomes]))
        self.in_flight -= 1


class Lane:
    """Yields ``before`` results, hangs until ``resume`` is set, then yields ``after``."""

    def __init__(self, before: int, after: int) -> None:
        self.before, self.after = before, after
        self.resume = asyncio.Event()
        self.stalled_at = 0.0

    async def results(self, info: Any) -> AsyncIterator[BatchResult]:
        for n in range(self.before + self.after):
            if n == self.before:
                self.stalled_at = time.monotonic()
                await self.resume.wait()
            yield BatchResult(custom_id=f"t{n}", status_code=200, body={}, error=None)


BATCH = SimpleNamespace(id="b1")
# The services an ingest reads here: whether the store is shared (PostgreSQL).
ONE_WRITER = SimpleNamespace(db=SimpleNamespace(shared=False))
SHARED = SimpleNamespace(db=SimpleNamespace(shared=True))


def _outcome(result: BatchResult) -> Outcome:
    return Outcome(result.custom_id, TicketStatus.COMPLETED)


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    made = Recorder()
    monkeypatch.setattr(ingest, "apply", made.apply)
    monkeypatch.setattr(ingest, "outcome_of", _outcome)
    monkeypatch.setattr(ingest, "_STALL_S", 0.2)
    monkeypatch.setattr(ingest, "_CHUNK", 100)
    return made


@pytest.mark.parametrize(("services", "in_flight"), [(ONE_WRITER, 1), (SHARED, 2)])
async def test_every_line_is_handed_over_in_chunks_a_few_at_a_time(
    recorder: Recorder, services: Any, in_flight: int
) -> None:
    lane = Lane(before=1050, after=0)
    lane.resume.set()
    await ingest._ingest_results(services, lane, BATCH, Any)  # type: ignore[arg-type]
    ids = sorted(i for _, chunk in recorder.chunks for i in chunk)
    assert ids == sorted(f"t{n}" for n in range(1050))
    assert sorted(len(chunk) for _, chunk in recorder.chunks) == [50] + [100] * 10
    # One writer (SQLite): one chunk at a time; PostgreSQL: two, on two connections.
    assert recorder.most_in_flight == in_flight


async def test_a_stalled_stream_commits_what_arrived(recorder: Recorder) -> None:
    lane = Lane(before=30, after=20)
    run = asyncio.create_task(ingest._ingest_results(SHARED, lane, BATCH, Any))  # type: ignore[arg-type]
    await asyncio.sleep(0.6)
    # Still hanging, yet the 30 lines before the stall are written, ~_STALL_S into it.
    assert not run.done()
    [(written, chunk)] = recorder.chunks
    assert chunk == [f"t{n}" for n in range(30)]
    assert 0.15 < written - lane.stalled_at < 0.45
    lane.resume.set()
    await asyncio.wait_for(run, 5)
    assert [len(c) for _, c in recorder.chunks] == [30, 20]
