"""The ticket store on a real SQLite file: group-committed enqueue, idempotency,
ownership, listing, and every state change as a conditional update with an event."""

from __future__ import annotations

import asyncio

import pytest

from proxy.store import tickets as store
from proxy.store.db import Database, GroupCommit
from proxy.store.jobs import (
    TICKET_TRANSITIONS,
    NewTicket,
    TicketStatus,
    TransitionError,
    new_ticket_id,
)

T = TicketStatus
NOW = 1_767_225_600_000


# ``db``: one fresh store per engine (tests/conftest.py).


def new(key: str = "alice", idem: str | None = None, created: int = NOW, **kw: object) -> NewTicket:
    fields: dict[str, object] = {
        "id": new_ticket_id(),
        "key_name": key,
        "request_id": "req_1",
        "idempotency_key": idem,
        "endpoint": "/v1/chat/completions",
        "model": "gpt-4o-mini",
        "provider": "openai",
        "upstream_model": "gpt-4o-mini",
        "lane": "batch",
        "reason": "test",
        "body": b'{"model":"gpt-4o-mini"}',
        "est_tokens": 5,
        "created_ms": created,
        "deadline_ms": created + 3_600_000,
        "not_before_ms": 0,
        "callback_url": None,
    }
    fields.update(kw)
    return NewTicket(**fields)  # type: ignore[arg-type]


async def put(db: Database, *items: NewTicket) -> list[str]:
    async with db.transaction() as conn:
        return await store.insert_tickets(conn, list(items))


async def test_concurrent_enqueues_share_commits(db: Database) -> None:
    writer: GroupCommit[NewTicket, str] = GroupCommit(db, store.insert_tickets, name="t")
    writer.start()
    items = [new() for _ in range(300)]
    ids = await asyncio.gather(*(writer.submit(item) for item in items))
    await writer.stop()
    assert ids == [item.id for item in items]
    assert (await store.count_by_status(db)) == {"queued": 300}
    # Far fewer transactions than tickets: one event per ticket, written in groups.
    rows = await db.fetchall("SELECT COUNT(*) FROM ticket_events WHERE to_status = 'queued'")
    assert rows[0][0] == 300


async def test_idempotency_key_returns_the_first_ticket(db: Database) -> None:
    first, again, same_in_group = new(idem="k1"), new(idem="k1"), new(idem="k1")
    other_key = new(key="bob", idem="k1")
    assert await put(db, first) == [first.id]
    ids = await put(db, again, same_in_group, other_key)
    assert ids == [first.id, first.id, other_key.id]
    assert (await store.count_by_status(db)) == {"queued": 2}
    assert len(await store.events_of(db, first.id)) == 1


async def test_tickets_belong_to_their_key(db: Database) -> None:
    [ticket_id] = await put(db, new())
    assert await store.get_owned(db, ticket_id, "alice") is not None
    assert await store.get_owned(db, ticket_id, "bob") is None
    assert await store.cancel(db, ticket_id, "bob", NOW) is None
    assert (await store.get_ticket(db, ticket_id)).status == "queued"  # type: ignore[union-attr]


async def test_list_is_newest_first_with_cursor_and_filter(db: Database) -> None:
    ids = await put(db, *(new(created=NOW + i) for i in range(5)))
    await put(db, new(key="bob"))
    page, more = await store.list_owned(db, "alice", limit=2)
    assert [t.id for t in page] == [ids[4], ids[3]]
    assert more
    page, more = await store.list_owned(db, "alice", limit=2, after=page[-1])
    assert [t.id for t in page] == [ids[2], ids[1]]
    page, more = await store.list_owned(db, "alice", limit=2, after=page[-1])
    assert [t.id for t in page] == [ids[0]]
    assert not more
    assert await store.cancel(db, ids[1], "alice", NOW) is not None
    page, _ = await store.list_owned(db, "alice", statuses=["cancelled"])
    assert [t.id for t in page] == [ids[1]]


async def test_cancel_only_while_queued(db: Database) -> None:
    a, b = await put(db, new(), new())
    cancelled = await store.cancel(db, a, "alice", NOW + 5)
    assert cancelled is not None
    assert cancelled.status == "queued"  # as it was before the move
    assert await store.cancel(db, a, "alice", NOW + 6) is None  # already cancelled
    async with db.transaction() as conn:
        await store.move(conn, [b], T.QUEUED, T.SUBMITTED, now_ms=NOW, detail="claimed")
    assert await store.cancel(db, b, "alice", NOW) is None
    ticket = await store.get_ticket(db, a)
    assert ticket is not None
    assert (ticket.status, ticket.finished_ms) == ("cancelled", NOW + 5)


async def walk_to(db: Database, ticket_id: str, status: TicketStatus) -> None:
    """Bring a queued ticket to ``status`` through allowed moves."""
    path = {
        T.QUEUED: [],
        T.SUBMITTED: [T.SUBMITTED],
        T.REALTIME: [T.REALTIME],
        T.COMPLETED: [T.REALTIME, T.COMPLETED],
        T.FAILED: [T.REALTIME, T.FAILED],
        T.CANCELLED: [T.CANCELLED],
    }[status]
    current = T.QUEUED
    for step in path:
        async with db.transaction() as conn:
            await store.move(conn, [ticket_id], current, step, now_ms=NOW, detail="walk")
        current = step


@pytest.mark.parametrize("pair", sorted(TICKET_TRANSITIONS))
async def test_every_allowed_move_is_conditional_and_logged(
    db: Database, pair: tuple[TicketStatus, TicketStatus]
) -> None:
    old, new_status = pair
    [ticket_id] = await put(db, new(callback_url="https://hooks.test/x"))
    await walk_to(db, ticket_id, old)
    async with db.transaction() as conn:
        moved = await store.move(conn, [ticket_id], old, new_status, now_ms=NOW + 1, detail="x")
        # The same move again finds nothing in the old state: it happens once.
        again = await store.move(conn, [ticket_id], old, new_status, now_ms=NOW + 2, detail="y")
    assert [t.id for t in moved] == [ticket_id]
    assert again == []
    ticket = await store.get_ticket(db, ticket_id)
    assert ticket is not None
    assert ticket.status is new_status
    assert (await store.events_of(db, ticket_id))[-1] == (old.value, new_status.value, "x")
    hook = await store.webhook_state(db, ticket_id)
    assert (hook is not None) == new_status.final


async def test_disallowed_moves_raise_before_touching_rows(db: Database) -> None:
    [ticket_id] = await put(db, new())
    for old, new_status in [
        (T.QUEUED, T.COMPLETED),
        (T.CANCELLED, T.QUEUED),
        (T.REALTIME, T.QUEUED),
    ]:
        async with db.transaction() as conn:
            with pytest.raises(TransitionError):
                await store.move(conn, [ticket_id], old, new_status, now_ms=NOW, detail="no")
    assert (await store.get_ticket(db, ticket_id)).status == "queued"  # type: ignore[union-attr]


async def test_escalate_due_takes_late_tickets_and_opened_windows(db: Database) -> None:
    late = new(created=NOW, deadline_ms=NOW + 600_000)
    fine = new(created=NOW, deadline_ms=NOW + 7_200_000)
    held = new(lane="offpeak", not_before_ms=NOW + 60_000, deadline_ms=NOW + 7_200_000)
    await put(db, late, fine, held)
    moved = await store.escalate_due(db, now_ms=NOW, margin_ms=900_000)
    assert [(t.id, "deadline guard" in why) for t, why in moved] == [(late.id, True)]
    assert (await store.get_ticket(db, late.id)).lane == "realtime"  # type: ignore[union-attr]
    moved = await store.escalate_due(db, now_ms=NOW + 60_000, margin_ms=900_000)
    assert [(t.id, "price window" in why) for t, why in moved] == [(held.id, True)]
    assert (await store.get_ticket(db, held.id)).lane == "offpeak"  # type: ignore[union-attr]
    rows = await store.realtime_batch(db, 10)
    assert {t.id for t, _ in rows} == {late.id, held.id}
    assert all(body == b'{"model":"gpt-4o-mini"}' for _, body in rows)
