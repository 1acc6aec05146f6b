"""The state tables, walked pair by pair, and the public ticket object."""

from __future__ import annotations

import itertools

import orjson
import pytest

from proxy.store.jobs import (
    BatchState,
    Ticket,
    TicketStatus,
    TransitionError,
    check_batch,
    check_ticket,
    new_batch_id,
    new_ticket_id,
    ticket_object,
)

T = TicketStatus
B = BatchState

# Written out again here, independently of the module, from the design (DESIGN.md §4).
TICKET_ALLOWED = {
    (T.QUEUED, T.SUBMITTED),
    (T.QUEUED, T.CANCELLED),
    (T.QUEUED, T.REALTIME),
    (T.SUBMITTED, T.QUEUED),
    (T.SUBMITTED, T.COMPLETED),
    (T.SUBMITTED, T.FAILED),
    (T.SUBMITTED, T.REALTIME),
    (T.SUBMITTED, T.CANCELLED),  # a deferred Responses call cancelled inside a batch
    (T.REALTIME, T.COMPLETED),
    (T.REALTIME, T.FAILED),
    (T.REALTIME, T.CANCELLED),
}
BATCH_ALLOWED = {
    (B.CREATED, B.SUBMITTED),
    (B.CREATED, B.FAILED),
    (B.SUBMITTED, B.COMPLETED),
    (B.SUBMITTED, B.FAILED),
    (B.SUBMITTED, B.EXPIRED),
    (B.SUBMITTED, B.CANCELLED),
}


@pytest.mark.parametrize(("old", "new"), list(itertools.product(T, T)))
def test_every_ticket_pair(old: TicketStatus, new: TicketStatus) -> None:
    if (old, new) in TICKET_ALLOWED:
        check_ticket(old, new)
    else:
        with pytest.raises(TransitionError):
            check_ticket(old, new)


@pytest.mark.parametrize(("old", "new"), list(itertools.product(B, B)))
def test_every_batch_pair(old: BatchState, new: BatchState) -> None:
    if (old, new) in BATCH_ALLOWED:
        check_batch(old, new)
    else:
        with pytest.raises(TransitionError):
            check_batch(old, new)


def test_final_states_have_no_way_out() -> None:
    for status in T:
        outgoing = {new for old, new in TICKET_ALLOWED if old is status}
        assert status.final == (not outgoing)
    assert {s for s in B if s.live} == {B.CREATED, B.SUBMITTED}


def test_callers_never_see_realtime() -> None:
    assert T.REALTIME.public == "submitted"
    assert {s.public for s in T} == {"queued", "submitted", "completed", "failed", "cancelled"}


def test_ids_are_unguessable_and_distinct() -> None:
    ids = {new_ticket_id() for _ in range(1000)}
    assert len(ids) == 1000
    for ticket_id in ids:
        assert ticket_id.startswith("tkt_")
        assert len(ticket_id) - 4 >= 26
        assert ticket_id.replace("_", "").replace("-", "").isalnum()
    assert new_batch_id().startswith("cb_")


def ticket(**changes: object) -> Ticket:
    base: dict[str, object] = {
        "id": "tkt_x",
        "key_name": "alice",
        "request_id": "req_1",
        "endpoint": "/v1/chat/completions",
        "model": "gpt-4o-mini",
        "provider": "openai",
        "upstream_model": "gpt-4o-mini",
        "lane": "batch",
        "reason": "r",
        "status": T.QUEUED,
        "created_ms": 1_767_225_600_500,
        "deadline_ms": 1_767_240_000_999,
        "not_before_ms": 0,
        "updated_ms": 1_767_225_600_500,
        "attempts": 0,
    }
    base.update(changes)
    return Ticket(**base)  # type: ignore[arg-type]


def test_ticket_object_shapes() -> None:
    queued = ticket_object(ticket())
    assert queued == {
        "id": "tkt_x",
        "object": "ticket",
        "status": "queued",
        "model": "gpt-4o-mini",
        "lane": "batch",
        "created_at": 1_767_225_600,
        "deadline": 1_767_240_000,
        "attempts": 0,
    }
    raw = b'{"object":"chat.completion","id":"c1","choices":[]}'
    done = orjson.loads(
        orjson.dumps(ticket_object(ticket(status=T.COMPLETED, result=raw, finished_ms=5000)))
    )
    assert done["result"] == orjson.loads(raw)
    assert done["finished_at"] == 5
    assert "error" not in done
    error = {"message": "m", "type": "invalid_request_error", "param": None, "code": "x"}
    failed = ticket_object(ticket(status=T.FAILED, error=error, attempts=3))
    assert failed["error"] == error
    assert failed["attempts"] == 3
    assert "result" not in failed
    assert ticket_object(ticket(status=T.REALTIME))["status"] == "submitted"


def test_routing_log_rows_for_tickets() -> None:
    from proxy.store.jobs import Outcome
    from proxy.store.route_rows import final, route_row
    from proxy.store.routes import COLUMNS

    with pytest.raises(KeyError):
        route_row(no_such_column=1)
    base = ticket(status=T.SUBMITTED, attempts=2)
    error = {"message": "m", "type": "invalid_request_error", "param": None, "code": "x"}
    rows = {
        "completed": final(
            base,
            Outcome("tkt_x", T.COMPLETED, prompt_tokens=5, cost=(1.0, 2.0, 1.0)),
            now_ms=1_767_225_700_500,
        ),
        "failed": final(base, Outcome("tkt_x", T.FAILED, error=error), now_ms=1),
        "server": final(base, Outcome("tkt_x", T.FAILED, error={"type": "server_error"}), now_ms=1),
        "cancelled": final(base, Outcome("tkt_x", T.CANCELLED), now_ms=1),
    }
    named = {k: dict(zip(COLUMNS, row, strict=True)) for k, row in rows.items()}
    assert {k: v["status"] for k, v in named.items()} == {
        "completed": 200,
        "failed": 400,
        "server": 502,
        "cancelled": 499,
    }
    done = named["completed"]
    assert (done["ticket_id"], done["lane"], done["attempts"], done["stream"]) == (
        "tkt_x",
        "batch",
        2,
        0,
    )
    assert (done["cost_usd"], done["baseline_usd"], done["saved_usd"]) == (1.0, 2.0, 1.0)
    assert done["latency_ms"] == 100_000.0
    assert named["failed"]["error_code"] == "x"
