"""The scheduler against the real OpenAI Files/Batches emulator, step by step on a
ManualClock: happy paths, per-line failures, expiry, grouping, limits, the guard."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from adapters.emulators.openai.batch.lines import LineFault
from proxy.lanes.planner import plan
from proxy.store import batches as bstore
from tests.deferral.harness import RUN, Stack, stack

HOUR = 3600


def cancel(s: Stack, batch_id: str) -> None:
    """Cancel upstream, as an operator would in the provider's dashboard."""
    s.emulator.advance()
    s.emulator.engine.cancel(s.emulator.engine.batches[batch_id], s.clock.now())


@pytest.fixture
async def s(tmp_path: Path, db_target: str) -> Stack:  # type: ignore[misc]
    async with stack(tmp_path, target=db_target) as built:
        yield built


async def test_chat_happy_path(s: Stack) -> None:
    status, body, headers = await s.enqueue("what is two plus two")
    assert status == 202
    ticket_id = body["id"]
    assert headers["location"] == f"/v1/tickets/{ticket_id}"
    assert headers["x-costroute-ticket"] == ticket_id
    assert body["status"] == "queued"
    assert body["lane"] == "batch"
    assert body["deadline"] == body["created_at"] + 4 * HOUR

    # Not due yet: one young ticket, far from its deadline.
    assert (await s.scheduler.flush_once()).batches == ()
    s.clock.advance(601)  # batch.max_wait is 10m
    summary = await s.scheduler.flush_once()
    assert len(summary.batches) == 1
    assert summary.tickets == 1
    assert (await s.ticket(ticket_id)).status == "submitted"
    [upstream] = s.emulator.batches_state()
    assert upstream["metadata"] == {"costroute_batch_id": summary.batches[0]}
    assert upstream["completion_window"] == "24h"

    s.clock.advance(RUN)
    assert await s.scheduler.poll_once() == 1
    ticket = await s.ticket(ticket_id)
    assert ticket.status == "completed"
    assert ticket.result is not None
    result = orjson.loads(ticket.result)
    assert result["object"] == "chat.completion"
    assert result["model"].startswith("gpt-4o-mini")
    assert ticket.prompt_tokens == result["usage"]["prompt_tokens"]
    assert ticket.attempts == 1

    routes = [r for r in await s.routes() if r["ticket_id"] == ticket_id]
    assert [(r["lane"], r["status"]) for r in routes] == [("batch", 202), ("batch", 200)]
    assert routes[1]["prompt_tokens"] == result["usage"]["prompt_tokens"]
    assert routes[0]["reason"].startswith("tolerance 4h >= batch.min_tolerance")
    events = [(old, new) for old, new, _ in await s.events(ticket_id)]
    assert events == [(None, "queued"), ("queued", "submitted"), ("submitted", "completed")]


async def test_embeddings_happy_path(s: Stack) -> None:
    ids = [
        (await s.enqueue(f"text {i}", model="text-embedding-3-small"))[1]["id"] for i in range(3)
    ]
    await s.scheduler.flush_once(force=True)
    [upstream] = s.emulator.batches_state()
    assert upstream["endpoint"] == "/v1/embeddings"
    s.clock.advance(RUN)
    await s.scheduler.poll_once()
    for ticket_id in ids:
        ticket = await s.ticket(ticket_id)
        assert ticket.status == "completed"
        assert ticket.result is not None
        result = orjson.loads(ticket.result)
        assert result["object"] == "list"
        assert result["data"][0]["object"] == "embedding"


async def test_stream_fields_are_stripped_from_batch_lines(s: Stack) -> None:
    body = {
        "model": "gpt-4o-mini",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "hi"}],
    }
    ticket_id = (await s.enqueue(body=body))[1]["id"]
    await s.run_batches()
    assert (await s.ticket(ticket_id)).status == "completed"


async def test_mixed_models_split_into_per_model_batches(s: Stack) -> None:
    mini = [(await s.enqueue(f"m{i}"))[1]["id"] for i in range(3)]
    big = [(await s.enqueue(f"b{i}", model="gpt-4o"))[1]["id"] for i in range(2)]
    emb = [(await s.enqueue(f"e{i}", model="text-embedding-3-small"))[1]["id"] for i in range(2)]
    # One active batch per provider by default: raise it so all three go at once.
    s.services.settings.providers["openai"].__dict__["max_active_batches"] = 3
    summary = await s.scheduler.flush_once(force=True)
    assert len(summary.batches) == 3
    upstream = s.emulator.batches_state()
    assert sorted(b["endpoint"] for b in upstream) == [
        "/v1/chat/completions",
        "/v1/chat/completions",
        "/v1/embeddings",
    ]
    s.clock.advance(RUN)
    await s.scheduler.poll_once()
    # The emulator fails any file mixing models, so completion proves the split.
    assert set(await s.statuses(mini + big + emb)) == {"completed"}
    assert {b["status"] for b in s.emulator.batches_state()} == {"completed"}


async def test_per_line_failures_of_both_shapes(s: Stack) -> None:
    ok, bad, limited, expired_line = [(await s.enqueue(f"t{i}"))[1]["id"] for i in range(4)]
    error = {"message": "content blocked", "type": "invalid_request_error", "param": None,
             "code": "content_policy_violation"}  # fmt: skip
    s.emulator.line_faults.add(LineFault(custom_id=bad, status_code=400, error=error))
    s.emulator.line_faults.add(LineFault(custom_id=limited, status_code=429))
    s.emulator.line_faults.add(LineFault(custom_id=expired_line, code="batch_expired"))
    await s.run_batches()
    # "completed" did not mean every line succeeded.
    assert s.emulator.batches_state()[0]["status"] == "completed"
    assert await s.statuses([ok, bad, limited, expired_line]) == [
        "completed",
        "failed",
        "queued",
        "queued",
    ]
    failed = await s.ticket(bad)
    assert failed.error == error
    assert failed.attempts == 1
    assert (await s.ticket(limited)).attempts == 1

    # The retryable ones go again in the next batch and succeed this time.
    s.emulator.line_faults.clear()
    await s.run_batches()
    assert await s.statuses([limited, expired_line]) == ["completed", "completed"]
    assert (await s.ticket(limited)).attempts == 2


async def test_retryable_failures_stop_after_max_attempts(s: Stack) -> None:
    ticket_id = (await s.enqueue("always 500"))[1]["id"]
    s.emulator.line_faults.add(LineFault(custom_id=ticket_id, status_code=500))
    await s.run_batches(rounds=3)  # batch.max_attempts is 3
    ticket = await s.ticket(ticket_id)
    assert ticket.status == "failed"
    assert ticket.attempts == 3
    assert ticket.error is not None
    assert ticket.error["type"] == "server_error"
    assert len(s.emulator.batches_state()) == 3


async def test_expired_batch_keeps_finished_lines_and_requeues_the_rest(
    tmp_path: Path, db_target: str
) -> None:
    async with stack(tmp_path, target=db_target, batch_config={"window": 50.0}) as s:
        ids = [(await s.enqueue(f"x{i}"))[1]["id"] for i in range(10)]
        await s.scheduler.flush_once(force=True)
        s.clock.advance(60)  # 49 s of the 100 s run fit in the window
        await s.scheduler.poll_once()
        [upstream] = s.emulator.batches_state()
        assert upstream["status"] == "expired"
        statuses = await s.statuses(ids)
        done = statuses.count("completed")
        assert 0 < done < 10
        assert statuses.count("queued") == 10 - done
        requeued = [i for i, st in zip(ids, statuses, strict=True) if st == "queued"]
        for ticket_id in requeued:
            ticket = await s.ticket(ticket_id)
            assert (ticket.attempts, ticket.batch_id) == (1, None)
        row = await s.db.fetchone("SELECT status FROM batches")
        assert row is not None
        assert row[0] == "expired"


async def test_max_lines_splits_a_group(tmp_path: Path, db_target: str) -> None:
    async with stack(tmp_path, target=db_target, batch={"max_lines": 4}) as s:
        s.services.settings.providers["openai"].__dict__["max_active_batches"] = 10
        ids = [(await s.enqueue(f"q{i}"))[1]["id"] for i in range(10)]
        summary = await s.scheduler.flush_once(force=True)
        assert summary.tickets == 10
        rows = await s.db.fetchall("SELECT line_count FROM batches ORDER BY line_count")
        assert [row[0] for row in rows] == [2, 4, 4]
        assert len(s.emulator.batches_state()) == 3
        s.clock.advance(RUN)
        await s.scheduler.poll_once()
        assert set(await s.statuses(ids)) == {"completed"}


async def test_size_threshold_flushes_before_max_wait(tmp_path: Path, db_target: str) -> None:
    async with stack(tmp_path, target=db_target, batch={"flush_lines": 3}) as s:
        for i in range(2):
            await s.enqueue(f"a{i}")
        assert (await s.scheduler.flush_once()).batches == ()
        await s.enqueue("a2")
        assert (await s.scheduler.flush_once()).tickets == 3


async def test_a_deadline_forces_an_early_flush(s: Stack) -> None:
    # Tolerance 1h = batch.min_tolerance: no time to wait for max_wait.
    await s.enqueue("urgent", tolerance=HOUR)
    summary = await s.scheduler.flush_once()
    assert summary.tickets == 1


async def test_max_active_batches_per_provider_holds_the_rest(s: Stack) -> None:
    s.services.settings.providers["openai"].__dict__["batch_limit_scope"] = "provider"
    first = (await s.enqueue("one"))[1]["id"]
    await s.scheduler.flush_once(force=True)
    second = (await s.enqueue("two", model="gpt-4o"))[1]["id"]
    summary = await s.scheduler.flush_once(force=True)
    assert summary.batches == ()
    assert any("openai max_active_batches" in reason for reason in summary.held)
    assert (await s.ticket(second)).status == "queued"
    s.clock.advance(RUN)
    await s.scheduler.poll_once()
    assert (await s.ticket(first)).status == "completed"
    # The forced flush still stands: the held group goes at the next ordinary tick,
    # long before its max_wait.
    summary = await s.scheduler.flush_once()
    assert summary.tickets == 1
    assert (await s.ticket(second)).status == "submitted"


async def test_max_active_batches_is_per_model_by_default(s: Stack) -> None:
    """One model's slow batch does not hold another model's queue."""
    slow = (await s.enqueue("one"))[1]["id"]
    await s.scheduler.flush_once(force=True)
    other = (await s.enqueue("two", model="gpt-4o"))[1]["id"]
    summary = await s.scheduler.flush_once(force=True)
    assert summary.tickets == 1
    assert (await s.ticket(other)).status == "submitted"
    assert (await s.ticket(slow)).status == "submitted"
    # The same model is still held by its own live batch.
    again = (await s.enqueue("three"))[1]["id"]
    summary = await s.scheduler.flush_once(force=True)
    assert summary.batches == ()
    assert any("gpt-4o-mini max_active_batches (1)" in reason for reason in summary.held)
    assert (await s.ticket(again)).status == "queued"


async def test_a_forced_flush_drains_held_groups_when_their_limit_frees(s: Stack) -> None:
    first = (await s.enqueue("one"))[1]["id"]
    await s.scheduler.flush_once(force=True)
    held = (await s.enqueue("two"))[1]["id"]
    assert (await s.scheduler.flush_once(force=True)).batches == ()
    s.clock.advance(1)
    late = (await s.enqueue("three", model="gpt-4o"))[1]["id"]
    s.clock.advance(RUN)
    await s.scheduler.poll_once()
    assert (await s.ticket(first)).status == "completed"
    summary = await s.scheduler.flush_once()
    assert summary.tickets == 1
    assert (await s.ticket(held)).status == "submitted"
    # A ticket queued after the forced flush waits for its own trigger.
    assert (await s.ticket(late)).status == "queued"


async def test_enqueued_token_budget_limits_live_tokens(tmp_path: Path, db_target: str) -> None:
    async with stack(tmp_path, target=db_target) as s:
        model = s.services.settings.models["gpt-4o-mini"]
        s.services.settings.providers["openai"].__dict__["max_active_batches"] = 10
        ids = [(await s.enqueue("y" * 400 + str(i)))[1]["id"] for i in range(6)]
        per_ticket = (await s.db.fetchone("SELECT est_tokens FROM tickets LIMIT 1"))[0]  # type: ignore[index]
        model.__dict__["enqueued_token_budget"] = per_ticket * 2 + 1
        summary = await s.scheduler.flush_once(force=True)
        assert summary.tickets == 2
        assert len(summary.batches) == 1
        assert any("enqueued_token_budget" in reason for reason in summary.held)
        assert (await s.statuses(ids)).count("queued") == 4
        s.clock.advance(RUN)
        await s.scheduler.poll_once()  # the live batch ends: its tokens are free again
        assert (await s.scheduler.flush_once(force=True)).tickets == 2


async def test_provider_token_limit_refusal_requeues_without_charging(s: Stack) -> None:
    ids = [(await s.enqueue(f"z{i}"))[1]["id"] for i in range(3)]
    s.emulator.set_token_limit("gpt-4o-mini", 1)
    await s.run_batches()
    row = await s.db.fetchone("SELECT status, errors FROM batches")
    assert row is not None
    assert row[0] == "failed"
    assert "token_limit_exceeded" in row[1]
    for ticket_id in ids:
        ticket = await s.ticket(ticket_id)
        assert (ticket.status, ticket.attempts) == ("queued", 0)
    # The group is held for a while instead of hammering the provider.
    assert (await s.scheduler.flush_once(force=True)).batches == ()
    s.emulator.set_token_limit("gpt-4o-mini", None)
    s.clock.advance(601)
    await s.run_batches()
    assert set(await s.statuses(ids)) == {"completed"}


async def test_cancelled_batch_requeues_unfinished_tickets(s: Stack) -> None:
    ids = [(await s.enqueue(f"c{i}"))[1]["id"] for i in range(6)]
    await s.scheduler.flush_once(force=True)
    [upstream] = s.emulator.batches_state()
    s.clock.advance(51)  # half of the lines ran
    cancel(s, upstream["id"])
    s.clock.advance(10)
    await s.scheduler.poll_once()
    statuses = await s.statuses(ids)
    assert "completed" in statuses
    assert "queued" in statuses
    assert set(statuses) == {"completed", "queued"}
    await s.run_batches()
    assert set(await s.statuses(ids)) == {"completed"}


async def test_stuck_and_failure_rate_alerts(tmp_path: Path, db_target: str) -> None:
    async with stack(
        tmp_path, target=db_target, batch={"stuck_after": "1m", "alert_failure_rate": 0.4}
    ) as s:
        ids = [(await s.enqueue(f"s{i}"))[1]["id"] for i in range(4)]
        await s.scheduler.flush_once(force=True)
        s.emulator.stall(s.emulator.batches_state()[0]["id"])
        s.clock.advance(3600)
        await s.scheduler.poll_once()
        assert any("stuck_after" in alert for alert in s.scheduler.alerts)
        cancel(s, s.emulator.batches_state()[0]["id"])
        s.clock.advance(3600)
        await s.scheduler.poll_once()
        assert any("alert_failure_rate" in alert for alert in s.scheduler.alerts)
        assert set(await s.statuses(ids)) == {"queued"}


async def test_embedding_inputs_count_against_max_lines(tmp_path: Path, db_target: str) -> None:
    async with stack(tmp_path, target=db_target, batch={"max_lines": 4}) as s:
        s.services.settings.providers["openai"].__dict__["max_active_batches"] = 10
        body = {"model": "text-embedding-3-small", "input": ["a", "b"]}
        for _ in range(3):
            await s.enqueue(model="text-embedding-3-small", body=body)
        await s.enqueue(model="text-embedding-3-small", body={**body, "input": [1, 2, 3]})
        await s.scheduler.flush_once(force=True)
        rows = await s.db.fetchall("SELECT line_count FROM batches ORDER BY line_count")
        assert [row[0] for row in rows] == [2, 2]  # 2+2 inputs, then 2+1


async def test_garbage_and_truncated_result_lines(s: Stack) -> None:
    ids = [(await s.enqueue(f"g{i}"))[1]["id"] for i in range(5)]
    s.emulator.corrupt_output("next", "truncate")
    await s.run_batches()
    statuses = await s.statuses(ids)
    # The cut line cannot be attributed: its ticket goes back to the queue.
    assert sorted(statuses) == ["completed"] * 4 + ["queued"]
    s.emulator.corrupt_output("next", "garbage")
    await s.run_batches()
    assert set(await s.statuses(ids)) == {"completed"}


async def test_unreadable_result_file_is_given_up_after_a_few_tries(s: Stack) -> None:
    ids = [(await s.enqueue(f"u{i}"))[1]["id"] for i in range(3)]
    s.emulator.corrupt_output("next", "missing")
    await s.run_batches()
    for _ in range(3):  # refused three times in all, then given up
        assert set(await s.statuses(ids)) == {"submitted"}
        s.clock.advance(60)
        await s.scheduler.poll_once()
    assert set(await s.statuses(ids)) == {"queued"}
    assert any("results unreadable" in alert for alert in s.scheduler.alerts)
    await s.run_batches()
    assert set(await s.statuses(ids)) == {"completed"}


async def test_max_bytes_splits_a_group(tmp_path: Path, db_target: str) -> None:
    async with stack(tmp_path, target=db_target, batch={"max_bytes": 1000}) as s:
        s.services.settings.providers["openai"].__dict__["max_active_batches"] = 10
        ids = [(await s.enqueue("b" * 150 + str(i)))[1]["id"] for i in range(9)]
        await s.scheduler.flush_once(force=True)
        rows = await s.db.fetchall("SELECT line_count, bytes FROM batches")
        assert sum(row[0] for row in rows) == 9
        assert len(rows) > 1
        assert all(row[1] <= 1000 for row in rows)
        # The sizes the claim counted are the sizes of the files that were uploaded.
        uploaded = sorted(f["bytes"] for f in s.emulator.files_state())
        assert uploaded == sorted(row[1] for row in rows)
        s.clock.advance(RUN)
        await s.scheduler.poll_once()
        assert set(await s.statuses(ids)) == {"completed"}


async def test_a_slow_batch_teaches_the_planner_and_the_flusher(s: Stack) -> None:
    """A batch that took 5 h: shorter tolerances are no longer batched (they would be
    escalated and paid twice), and a queued group goes while a 5 h batch can still be
    back before its earliest deadline, not when only batch.min_tolerance is left."""
    await s.enqueue("slow")
    await s.scheduler.flush_once(force=True)
    s.clock.advance(5 * HOUR)
    await s.scheduler.poll_once()
    learnt = s.services.turnaround["openai"]
    assert learnt == pytest.approx(5 * HOUR, abs=RUN)

    def lane(tolerance: int) -> str:
        return plan(
            model="gpt-4o-mini", endpoint="/v1/chat/completions", tolerance=tolerance,
            settings=s.settings, now=s.clock.now(), turnaround=s.services.turnaround,
        ).lane.value  # fmt: skip

    assert lane(4 * HOUR) != "batch"  # 4 h < 5 h + the 15 min margin
    assert lane(6 * HOUR) == "batch"
    # 6 h of tolerance leaves room to wait for max_wait; 5 h 10 min does not.
    await s.enqueue("calm", tolerance=6 * HOUR)
    assert (await s.scheduler.flush_once()).batches == ()
    await s.enqueue("urgent", tolerance=5 * HOUR + 600)
    assert (await s.scheduler.flush_once()).tickets == 2


async def test_learn_turnaround_off_leaves_the_planner_alone(
    tmp_path: Path, db_target: str
) -> None:
    async with stack(tmp_path, target=db_target, batch={"learn_turnaround": False}) as s:
        await s.enqueue("slow")
        await s.scheduler.flush_once(force=True)
        s.clock.advance(5 * HOUR)
        await s.scheduler.poll_once()
        assert s.services.turnaround == {}
        await s.enqueue("urgent", tolerance=5 * HOUR + 600)
        assert (await s.scheduler.flush_once()).batches == ()  # waits for max_wait


async def test_a_learnt_turnaround_spares_polls_of_young_batches(s: Stack) -> None:
    """After a batch took 2 h, the next one is not asked about until 0.8 x 2 h."""
    await s.enqueue("first")
    await s.scheduler.flush_once(force=True)
    s.clock.advance(2 * HOUR)
    await s.scheduler.poll_once()
    await s.enqueue("second")
    summary = await s.scheduler.flush_once(force=True)
    batch = await bstore.get_batch(s.db, summary.batches[0])
    assert batch is not None
    assert batch.next_poll_ms is not None
    submitted = batch.submitted_ms or batch.created_ms
    assert batch.next_poll_ms - submitted == pytest.approx(0.8 * 2 * HOUR * 1000, abs=1000)
    s.clock.advance(60)
    assert await s.scheduler.poll_once() == 0  # poll_interval alone would have asked
    s.clock.advance(0.8 * 2 * HOUR)
    assert await s.scheduler.poll_once() == 1


async def test_a_fast_learnt_turnaround_lets_min_tolerance_tickets_share_a_batch(
    s: Stack,
) -> None:
    """Unknown, a batch is assumed to need batch.min_tolerance, so a ticket of exactly
    that tolerance goes out alone at once; once batches are known to take ~2 minutes
    it waits for max_wait (its deadline still far) and shares a batch."""
    await s.enqueue("alone", tolerance=HOUR)
    assert (await s.scheduler.flush_once()).tickets == 1  # nothing learnt: urgent
    s.clock.advance(RUN)
    await s.scheduler.poll_once()
    assert s.services.turnaround_longest["openai"] < 600
    await s.enqueue("first", tolerance=HOUR)
    s.clock.advance(60)
    await s.enqueue("second", tolerance=HOUR)
    assert (await s.scheduler.flush_once()).batches == ()
    s.clock.advance(600)  # batch.max_wait
    assert (await s.scheduler.flush_once()).tickets == 2
