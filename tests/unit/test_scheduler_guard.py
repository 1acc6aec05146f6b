"""The deadline guard and the off-peak lane: tickets sent directly, late batch results
ignored, and both facts logged."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import orjson
import pytest

from adapters.emulators.faults import Fault
from proxy.costs.pricing import Pricer
from tests.deferral.harness import Stack, stack

HOUR = 3600


def at(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


@pytest.fixture
async def slow(tmp_path: Path, db_target: str) -> Stack:  # type: ignore[misc]
    # Batches take 3 h: longer than the 2 h tolerances below.
    async with stack(
        tmp_path, target=db_target, batch_config={"processing_time": 3 * HOUR}
    ) as built:
        yield built


async def test_guard_sends_a_late_submitted_ticket_in_real_time(slow: Stack) -> None:
    s = slow
    ticket_id = (await s.enqueue("guard me", tolerance=2 * HOUR))[1]["id"]
    await s.scheduler.flush_once(force=True)
    assert (await s.ticket(ticket_id)).status == "submitted"

    s.clock.advance(HOUR)  # 1 h left: outside the 15 m margin
    assert await s.scheduler.guard_once() == []
    s.clock.advance(46 * 60)  # 14 m left
    assert await s.scheduler.guard_once() == [ticket_id]
    ticket = await s.ticket(ticket_id)
    assert ticket.status == "completed"
    assert ticket.lane == "realtime"
    assert ticket.result is not None
    direct = orjson.loads(ticket.result)
    assert direct["object"] == "chat.completion"

    # The batch finishes later; its line for this ticket is ignored.
    s.clock.advance(2 * HOUR)
    await s.scheduler.poll_once()
    again = await s.ticket(ticket_id)
    assert again.result == ticket.result
    assert again.finished_ms == ticket.finished_ms
    details = [detail for _, _, detail in await s.events(ticket_id)]
    assert any("deadline guard" in d for d in details)
    assert any("late result" in d and "ignored" in d for d in details)
    finals = [r for r in await s.routes() if r["ticket_id"] == ticket_id and r["status"] != 202]
    assert len(finals) == 1  # finished exactly once
    assert finals[0]["lane"] == "realtime"
    assert finals[0]["status"] == 200


async def test_guard_takes_queued_tickets_too(slow: Stack) -> None:
    s = slow
    blocker = (await s.enqueue("occupies the batch slot", tolerance=24 * HOUR))[1]["id"]
    await s.scheduler.flush_once(force=True)
    waiting = (await s.enqueue("never got a slot", tolerance=2 * HOUR))[1]["id"]
    assert (await s.scheduler.flush_once(force=True)).batches == ()
    s.clock.advance(2 * HOUR - 10 * 60)
    assert await s.scheduler.guard_once() == [waiting]
    assert (await s.ticket(waiting)).status == "completed"
    assert (await s.ticket(blocker)).status == "submitted"


async def test_direct_send_failure_fails_the_ticket_with_the_provider_error(slow: Stack) -> None:
    s = slow
    ticket_id = (await s.enqueue("doomed", tolerance=HOUR))[1]["id"]
    error = {"message": "nope", "type": "invalid_request_error", "param": None, "code": "bad"}
    s.openai.state.faults.add(Fault(path="/chat/completions", status=400, body={"error": error}))
    s.clock.advance(HOUR - 60)
    await s.scheduler.guard_once()
    ticket = await s.ticket(ticket_id)
    assert ticket.status == "failed"
    assert ticket.error == error
    assert ticket.attempts == 1


async def test_interrupted_direct_send_is_resent(slow: Stack) -> None:
    """A crash while a ticket was being sent leaves it ``realtime``: the next guard pass
    (e.g. after restart) sends it."""
    s = slow
    ticket_id = (await s.enqueue("interrupted", tolerance=HOUR))[1]["id"]
    s.clock.advance(HOUR - 60)
    s.openai.state.faults.add(Fault(path="/chat/completions", drop=True, times=-1))
    s.services.settings.retry.__dict__["max_retries"] = 0
    task_ids = await s.scheduler.guard_once(wait=False)
    assert task_ids == [ticket_id]
    await s.scheduler.stop()  # cancels the in-flight send, like a crash would
    s.openai.state.faults.clear()
    assert (await s.ticket(ticket_id)).status == "realtime"
    s.scheduler.deferral.start()
    await s.scheduler.guard_once()
    assert (await s.ticket(ticket_id)).status == "completed"


async def test_offpeak_ticket_waits_for_the_cheaper_window(tmp_path: Path, db_target: str) -> None:
    async with stack(tmp_path, target=db_target) as s:
        s.services.extras["pricer"] = Pricer.from_settings(s.settings)
        s.clock.set(at("2026-01-01T02:00:00"))  # Thursday, DeepSeek peak (2x) until 04:00
        status, body, _ = await s.enqueue("cheap later", model="deepseek-chat", tolerance=4 * HOUR)
        assert status == 202
        assert body["lane"] == "offpeak"
        assert body["not_before"] == int(at("2026-01-01T04:00:00"))
        ticket_id = body["id"]
        # The batch flusher never touches it (DeepSeek has no batch lane).
        assert (await s.scheduler.flush_once(force=True)).tickets == 0
        s.clock.set(at("2026-01-01T03:59:00"))
        assert await s.scheduler.guard_once() == []
        assert (await s.ticket(ticket_id)).status == "queued"
        s.clock.set(at("2026-01-01T04:00:00"))
        assert await s.scheduler.guard_once() == [ticket_id]
        ticket = await s.ticket(ticket_id)
        assert ticket.status == "completed"
        assert ticket.lane == "offpeak"
        assert ticket.result is not None
        assert orjson.loads(ticket.result)["model"] == "deepseek-v4-flash"
        rows = [r for r in await s.routes() if r["ticket_id"] == ticket_id]
        assert [(r["lane"], r["status"]) for r in rows] == [("offpeak", 202), ("offpeak", 200)]
        # Priced at the off-peak rate, against real time at the peak rate it arrived in.
        assert rows[1]["cost_usd"] == pytest.approx(rows[1]["baseline_usd"] / 2)
        assert rows[1]["saved_usd"] == pytest.approx(rows[1]["cost_usd"])
        assert "held until Thu 04:00 UTC" in rows[0]["reason"]
        assert await s.events(ticket_id) == [
            (None, "queued", rows[0]["reason"]),
            ("queued", "realtime", "price window opened: sent directly"),
            ("realtime", "completed", "sent directly (offpeak)"),
        ]
