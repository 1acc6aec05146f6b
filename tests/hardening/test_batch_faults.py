"""Batch-lane faults from the Files + Batch emulator, in process on a ManualClock (the
deferral harness): per-line 5xx and 4xx, truncated and garbage output files, a missing
output file, a batch stuck in progress, refused and unanswered creates, failing uploads
and polls. Whatever happens, every ticket reaches the right final state exactly once
(``ticket_events``), and no request is paid for twice upstream unless the provider lost
its answer."""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from proxy.deferral.scheduler import RECONCILE_GRACE_MS
from tests.deferral.harness import RUN, Stack, stack

FINAL = ("completed", "failed", "cancelled")


@pytest.fixture
async def s(tmp_path: Path) -> AsyncIterator[Stack]:
    async with stack(tmp_path, batch={"max_attempts": 3, "deadline_margin": "15m"}) as built:
        yield built


async def _enqueue(s: Stack, count: int, tag: str = "t") -> list[str]:
    ids = []
    for index in range(count):
        status, body, _ = await s.enqueue(f"{tag}-{index}")
        assert status == 202
        ids.append(body["id"])
    return ids


async def _final_events(s: Stack) -> collections.Counter[str]:
    rows = await s.db.fetchall(
        "SELECT ticket_id FROM ticket_events WHERE to_status IN ('completed', 'failed', "
        "'cancelled')"
    )
    return collections.Counter(row[0] for row in rows)


def _paid(s: Stack) -> collections.Counter[str]:
    """custom_id -> successful answers across every output file the emulator wrote."""
    paid: collections.Counter[str] = collections.Counter()
    for batch in s.emulator.batches_state():
        stored = s.emulator.files.get(batch.get("output_file_id") or "")
        if stored is None or not stored.path.exists():
            continue
        for line in stored.path.read_bytes().splitlines():
            try:
                item = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            response = item.get("response") or {}
            if response.get("status_code") == 200:
                paid[item["custom_id"]] += 1
    return paid


async def _settled(s: Stack, ids: list[str], *, double_pay_ok: bool = False) -> list[str]:
    """Every ticket final exactly once; their statuses, in order."""
    statuses = await s.statuses(ids)
    assert all(status in FINAL for status in statuses), statuses
    finals = await _final_events(s)
    assert {t: finals[t] for t in ids} == dict.fromkeys(ids, 1)
    for ticket in ids:
        found = await s.ticket(ticket)
        if found.status.value == "completed":
            assert found.result is not None
            reply = orjson.loads(found.result)
            assert reply["object"] == "chat.completion"
    if not double_pay_ok:
        paid = _paid(s)
        assert all(paid[t] <= 1 for t in ids), paid
    return statuses


async def test_line_failures_retry_or_fail_as_the_provider_says(s: Stack) -> None:
    ids = await _enqueue(s, 6)
    s.emulator.line_faults.add(custom_id=ids[0], status_code=500)
    s.emulator.line_faults.add(custom_id=ids[1], status_code=429)
    s.emulator.line_faults.add(custom_id=ids[2], status_code=400)
    s.emulator.line_faults.add(custom_id=ids[3], code="batch_expired", message="expired")
    await s.run_batches()
    s.emulator.line_faults.clear()
    await s.run_batches()
    statuses = await _settled(s, ids)
    assert statuses == ["completed", "completed", "failed", "completed", "completed", "completed"]
    assert _paid(s)[ids[4]] == 1  # the check below really reads the output files
    failed = await s.ticket(ids[2])
    assert failed.error is not None
    assert failed.error["type"] == "invalid_request_error"


async def test_retryable_line_failures_stop_at_max_attempts(s: Stack) -> None:
    ids = await _enqueue(s, 2)
    s.emulator.line_faults.add(custom_id=ids[0], status_code=503)
    await s.run_batches(rounds=4)
    assert await _settled(s, ids) == ["failed", "completed"]
    assert (await s.ticket(ids[0])).attempts == 3


@pytest.mark.parametrize("mode", ["truncate", "garbage"])
async def test_damaged_output_files(s: Stack, mode: str) -> None:
    ids = await _enqueue(s, 8)
    s.emulator.corrupt_output("next", mode)
    await s.run_batches()
    await s.run_batches()  # whatever was lost goes again
    statuses = await _settled(s, ids, double_pay_ok=mode == "truncate")
    assert statuses == ["completed"] * 8


async def test_a_missing_output_file_requeues_its_tickets(s: Stack) -> None:
    ids = await _enqueue(s, 4)
    s.emulator.corrupt_output("next", "missing")
    await s.run_batches()
    for _ in range(3):  # the provider refuses the file three times: requeued
        s.clock.advance(s.settings.batch.poll_interval * 4)
        await s.scheduler.poll_once()
    await s.run_batches()
    assert await _settled(s, ids, double_pay_ok=True) == ["completed"] * 4


async def test_a_stuck_batch_is_overtaken_by_the_deadline_guard(s: Stack) -> None:
    ids = await _enqueue(s, 3)
    await s.scheduler.flush_once(force=True)
    batch_id = s.emulator.batches_state()[0]["id"]
    s.emulator.stall(batch_id)
    for _ in range(5):
        s.clock.advance(3600)
        await s.scheduler.poll_once()
        await s.scheduler.guard_once()
    statuses = await _settled(s, ids, double_pay_ok=True)
    assert statuses == ["completed"] * 3
    for ticket in ids:
        assert "realtime" in [event[1] for event in await s.events(ticket)]


async def test_a_refused_create_and_a_lost_create_answer(s: Stack) -> None:
    ids = await _enqueue(s, 3)
    s.emulator.fail_next_create(400, {"message": "bad file", "code": "invalid_file"})
    summary = await s.scheduler.flush_once(force=True)
    assert summary.failed
    assert await s.statuses(ids) == ["queued"] * 3  # refused: requeued at once
    s.emulator.fail_next_create(500, times=1)
    await s.scheduler.flush_once(force=True)
    # A 500 on create may or may not have created the batch: reconciliation decides
    # after its grace, from the provider's own list, never by guessing.
    assert await s.statuses(ids) == ["submitted"] * 3
    # The batch's lease runs out, then the grace for a create still in flight.
    s.clock.advance(s.settings.store.lease + RECONCILE_GRACE_MS / 1000 + 1)
    await s.scheduler.poll_once()
    await s.run_batches()
    assert await _settled(s, ids) == ["completed"] * 3


async def test_failing_uploads_and_polls_recover(s: Stack) -> None:
    ids = await _enqueue(s, 3)
    s.openai.state.faults.add(path="/v1/files", status=500, times=1)
    assert (await s.scheduler.flush_once(force=True)).failed
    assert await s.statuses(ids) == ["queued"] * 3
    await s.scheduler.flush_once(force=True)
    s.openai.state.faults.add(path="/v1/batches/", status=503, times=3)
    for _ in range(4):
        s.clock.advance(RUN)
        await s.scheduler.poll_once()
    s.clock.advance(3600)
    await s.scheduler.poll_once()
    assert await _settled(s, ids) == ["completed"] * 3
