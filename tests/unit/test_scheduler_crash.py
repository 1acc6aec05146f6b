"""Crash windows, in process: the flusher or the poller is stopped dead at each step
(a ``Crash`` that nothing catches, like SIGKILL), then a fresh scheduler starts on the
same database and reconciles. Every ticket must finish exactly once, and no ticket may
ever be in two provider batches."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from pathlib import Path

import httpx
import pytest

from adapters.base import BatchInfo, BatchLane, BatchStatus
from adapters.emulators.openai.batch.lines import LineFault
from adapters.errors import UpstreamTimeout
from adapters.openai.batch import OpenAIBatchAdapter
from proxy.deferral.ingest import ingest
from proxy.deferral.scheduler import RECONCILE_GRACE_MS, Scheduler
from proxy.store import batches as bstore
from proxy.store.jobs import BatchState
from tests.deferral.harness import RUN, SECRET, Stack, stack


class Crash(BaseException):
    """The process died here."""


class Crashing(OpenAIBatchAdapter):
    """The OpenAI lane, sharing the real one's client, dying at one chosen point of the
    steps its ``submit`` and ``results`` are made of."""

    def __init__(self, inner: BatchLane, at: str, after_lines: int = 0) -> None:
        assert isinstance(inner, OpenAIBatchAdapter)
        self.__dict__.update(inner.__dict__)
        self.at = at
        self.after_lines = after_lines
        self.files_read = 0

    async def upload_jsonl(self, lines: AsyncIterable[bytes], *, filename: str) -> str:
        if self.at == "upload":
            seen = 0
            async for _ in lines:
                seen += 1
                if seen > self.after_lines:
                    raise Crash
        return await super().upload_jsonl(lines, filename=filename)

    async def create_batch(
        self, *, input_file_id: str, endpoint: str, metadata: Mapping[str, str]
    ) -> BatchInfo:
        if self.at == "before-create":
            raise Crash
        info = await super().create_batch(
            input_file_id=input_file_id, endpoint=endpoint, metadata=metadata
        )
        if self.at == "after-create":
            raise Crash
        if self.at == "create-timeout":
            raise UpstreamTimeout()
        return info

    async def file_lines(self, file_id: str) -> AsyncIterator[bytes]:
        self.files_read += 1
        if self.at == "ingest" and self.files_read > self.after_lines:
            raise Crash
        async for line in super().file_lines(file_id):
            yield line

    async def aclose(self) -> None:
        pass


async def restart(s: Stack, real: BatchLane) -> Scheduler:
    """A new process: the scheduler's memory is gone, the database and provider stay."""
    s.services.batch["openai"] = real
    scheduler = Scheduler(
        s.services,
        webhook_client=httpx.AsyncClient(
            transport=httpx.MockTransport(lambda r: httpx.Response(200))
        ),
        environ={"WEBHOOK_SECRET": SECRET},
    )
    scheduler.deferral.start()
    s.scheduler = scheduler
    await scheduler.reconcile_at_startup()
    return scheduler


async def finish_all(s: Stack, ids: list[str]) -> None:
    for _ in range(3):
        await s.scheduler.poll_once()
        await s.scheduler.flush_once(force=True)
        s.clock.advance(RUN)
        await s.scheduler.poll_once()
    assert set(await s.statuses(ids)) == {"completed"}


async def exactly_once(s: Stack, ids: list[str]) -> None:
    finals = Counter(
        r["ticket_id"] for r in await s.routes() if r["ticket_id"] and r["status"] != 202
    )
    assert finals == Counter(ids)
    for ticket_id in ids:
        completions = [e for e in await s.events(ticket_id) if e[1] == "completed"]
        assert len(completions) == 1
    # No ticket went upstream in two batches that both ran.
    seen: Counter[str] = Counter()
    for batch in s.emulator.batches_state():
        if batch["status"] == "completed" and batch["output_file_id"]:
            lane = s.services.batch["openai"]
            assert isinstance(lane, OpenAIBatchAdapter)
            async for line in lane.file_lines(batch["output_file_id"]):
                seen[line.split(b'"custom_id":"', 1)[1].split(b'"', 1)[0].decode()] += 1
    assert max(seen.values()) == 1
    assert set(seen) == set(ids)


@pytest.mark.parametrize(
    ("point", "after"), [("upload", 0), ("upload", 3), ("before-create", 0), ("after-create", 0)]
)
async def test_crash_during_flush(tmp_path: Path, point: str, after: int) -> None:
    async with stack(tmp_path) as s:
        real = s.services.batch["openai"]
        ids = [(await s.enqueue(f"k{i}"))[1]["id"] for i in range(6)]
        s.services.batch["openai"] = Crashing(real, point, after)
        with pytest.raises(Crash):
            await s.scheduler.flush_once(force=True)
        assert set(await s.statuses(ids)) == {"submitted"}  # claimed by the created batch
        await s.scheduler.stop()

        await restart(s, real)
        row = await s.db.fetchone("SELECT status FROM batches")
        assert row is not None
        upstream = s.emulator.batches_state()
        if point == "after-create":
            # The provider accepted it: adopted by its metadata, never submitted twice.
            assert row[0] == "submitted"
            assert len(upstream) == 1
            assert set(await s.statuses(ids)) == {"submitted"}
        else:
            assert row[0] == "failed"
            assert upstream == []
            for ticket_id in ids:
                ticket = await s.ticket(ticket_id)
                assert (ticket.status, ticket.attempts) == ("queued", 0)
        await finish_all(s, ids)
        assert len(s.emulator.batches_state()) == 1
        await exactly_once(s, ids)


@pytest.mark.parametrize("files_before_crash", [0, 1])
async def test_crash_during_ingest(tmp_path: Path, files_before_crash: int) -> None:
    """Killed before reading the output file, or after reading it but before the error
    file: a second run finishes every ticket once. Results are one stream now (the lane
    hides its files) applied in chunks of 5,000, so nothing of these 8 was committed."""
    async with stack(tmp_path) as s:
        real = s.services.batch["openai"]
        ids = [(await s.enqueue(f"i{i}"))[1]["id"] for i in range(8)]
        s.emulator.line_faults.add(LineFault(custom_id=ids[0], status_code=503))
        s.emulator.line_faults.add(LineFault(custom_id=ids[1], code="batch_expired"))
        await s.scheduler.flush_once(force=True)
        s.clock.advance(RUN)
        s.services.batch["openai"] = Crashing(real, "ingest", files_before_crash)
        with pytest.raises(Crash):
            await s.scheduler.poll_once()
        assert (await s.statuses(ids)).count("completed") == 0
        await s.scheduler.stop()

        await restart(s, real)
        await s.scheduler.poll_once()
        assert (await s.statuses(ids)).count("completed") == 6
        assert await s.statuses(ids[:2]) == ["queued", "queued"]
        row = await s.db.fetchone("SELECT status FROM batches")
        assert row is not None
        assert row[0] == "completed"
        s.emulator.line_faults.clear()
        await finish_all(s, ids)
        await exactly_once(s, ids)


async def test_unknown_create_outcome_is_reconciled_after_a_grace(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        real = s.services.batch["openai"]
        ids = [(await s.enqueue(f"u{i}"))[1]["id"] for i in range(3)]
        s.services.batch["openai"] = Crashing(real, "create-timeout")
        summary = await s.scheduler.flush_once(force=True)
        assert summary.batches == ()
        assert len(summary.failed) == 1
        s.services.batch["openai"] = real
        await s.scheduler.poll_once()
        row = await s.db.fetchone("SELECT status FROM batches")
        assert row is not None
        assert row[0] == "created"  # still inside the grace period
        # The batch's lease runs out, then the grace for a create still in flight.
        s.clock.advance(s.settings.store.lease + RECONCILE_GRACE_MS / 1000 + 1)
        await s.scheduler.poll_once()
        # Adopted (the provider had it) and, already finished there, ingested.
        assert set(await s.statuses(ids)) == {"completed"}
        assert len(s.emulator.batches_state()) == 1
        await exactly_once(s, ids)


async def test_refused_create_requeues_at_once(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        ids = [(await s.enqueue(f"r{i}"))[1]["id"] for i in range(2)]
        s.emulator.fail_next_create(400, {"message": "bad file", "code": "invalid_file"})
        summary = await s.scheduler.flush_once(force=True)
        assert len(summary.failed) == 1
        for ticket_id in ids:
            ticket = await s.ticket(ticket_id)
            assert (ticket.status, ticket.attempts, ticket.batch_id) == ("queued", 0, None)
        await finish_all(s, ids)


async def test_validation_failure_requeues_then_fails_after_max_attempts(tmp_path: Path) -> None:
    # The provider's line limit is lower than ours: every batch fails validation.
    async with stack(tmp_path, batch_config={"max_lines": 2}) as s:
        ids = [(await s.enqueue(f"v{i}"))[1]["id"] for i in range(3)]
        await s.run_batches()
        row = await s.db.fetchone("SELECT status, errors FROM batches")
        assert row is not None
        assert row[0] == "failed"
        assert "too_many_tasks" in row[1]  # the reasons are recorded
        for ticket_id in ids:
            ticket = await s.ticket(ticket_id)
            assert (ticket.status, ticket.attempts) == ("queued", 1)
        await s.run_batches(rounds=2)
        for ticket_id in ids:
            ticket = await s.ticket(ticket_id)
            assert (ticket.status, ticket.attempts) == ("failed", 3)
            assert ticket.error is not None
            assert ticket.error["code"] == "too_many_tasks"


async def test_validation_errors_with_line_numbers_fail_those_tickets(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        ids = [(await s.enqueue(f"l{i}"))[1]["id"] for i in range(4)]
        await s.scheduler.flush_once(force=True)
        [batch] = await bstore.batches_in(s.db, BatchState.SUBMITTED)
        in_file_order = sorted(ids)  # lines are written in ticket-id order
        message = "This line is not parseable as valid JSON."
        error = {"code": "invalid_json_line", "message": message, "param": None, "line": 3}
        info = BatchInfo(
            id=batch.provider_batch_id or "",
            status=BatchStatus.FAILED,
            endpoint=batch.endpoint,
            input_file_id="file-x",
            created_at=0,
            errors=(error,),
        )
        await ingest(s.services, batch, info)
        bad = await s.ticket(in_file_order[2])
        assert bad.status == "failed"
        assert bad.error == {
            "message": error["message"],
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_json_line",
        }
        others = [t for t in in_file_order if t != bad.id]
        assert set(await s.statuses(others)) == {"queued"}
        stored = await bstore.batch_errors(s.db, batch.id)
        assert stored == [error]
