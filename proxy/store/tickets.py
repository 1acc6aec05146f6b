"""SQL for tickets, their events and webhook deliveries.

Every status change is a conditional ``UPDATE ... WHERE id=? AND status=?`` made inside a
write transaction after reading which rows are in the expected state, so the set of rows
that really changed is known exactly (for events, waiters, webhooks and the routing log),
and a change that races another one (guard versus ingest, cancel versus flush) happens
once. The state table in ``proxy/store/jobs.py`` is checked before any SQL runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson

from proxy.store.db import Conn, Database, insert_values
from proxy.store.jobs import NewTicket, Ticket, TicketFacts, TicketStatus, check_ticket
from proxy.store.routes import insert_routes

# Builds the routing-log row written with a change, in the same transaction.
AcceptedRoute = Callable[[NewTicket, str, bool], Sequence[Any]]
FinalRoute = Callable[[Ticket], Sequence[Any]]

# Every column but the request body, which only the flusher and the direct sender read.
COLUMNS = (
    "id, key_name, request_id, endpoint, model, provider, upstream_model, lane, reason, "
    "status, created_ms, deadline_ms, not_before_ms, updated_ms, attempts, idempotency_key, "
    "finished_ms, batch_id, callback_url, "
    "(SELECT result FROM ticket_results WHERE ticket_id = tickets.id), "
    "error, prompt_tokens, completion_tokens, "
    "cached_tokens, cost_usd"
)
# SQLite's default limit on host parameters is 999 on old builds; stay well below it.
CHUNK = 500


def ticket_from_row(row: Sequence[Any]) -> Ticket:
    error = row[20]
    return Ticket(
        id=row[0],
        key_name=row[1],
        request_id=row[2],
        endpoint=row[3],
        model=row[4],
        provider=row[5],
        upstream_model=row[6],
        lane=row[7],
        reason=row[8],
        status=TicketStatus(row[9]),
        created_ms=row[10],
        deadline_ms=row[11],
        not_before_ms=row[12],
        updated_ms=row[13],
        attempts=row[14],
        idempotency_key=row[15],
        finished_ms=row[16],
        batch_id=row[17],
        callback_url=row[18],
        result=None if row[19] is None else bytes(row[19]),
        error=None if error is None else orjson.loads(error),
        prompt_tokens=row[21],
        completion_tokens=row[22],
        cached_tokens=row[23],
        cost_usd=row[24],
    )


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def marks(count: int) -> str:
    return ",".join("?" * count)


# --- enqueue -------------------------------------------------------------------------

_INSERT_HEAD = (
    "INSERT INTO tickets (id, key_name, request_id, idempotency_key, endpoint, model, provider, "
    "upstream_model, lane, reason, status, body_bytes, est_tokens, units, created_ms, deadline_ms, "
    "not_before_ms, updated_ms, callback_url)"
)
_INSERT_TAIL = "ON CONFLICT (key_name, idempotency_key) DO NOTHING"
_INSERT = (
    f"{_INSERT_HEAD} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    f"{_INSERT_TAIL}"
)


async def insert_tickets(
    conn: Conn, items: list[NewTicket], *, route: AcceptedRoute | None = None
) -> list[str]:
    """``GroupCommit`` apply step: one id per item, the existing ticket's id when the
    caller's ``Idempotency-Key`` was seen before (even earlier in this same group).
    ``route`` builds each request's routing-log row (item, ticket id, replayed)."""
    ids: list[str] = []
    bodies: list[tuple[str, bytes]] = []
    events: list[tuple[str, int, str | None, str, str]] = []
    fast = all(item.idempotency_key is None for item in items)
    if fast:
        # No idempotency keys: nothing can conflict, so one statement for the group.
        await insert_values(
            conn,
            _INSERT_HEAD,
            [
                (
                    item.id,
                    item.key_name,
                    item.request_id,
                    item.idempotency_key,
                    item.endpoint,
                    item.model,
                    item.provider,
                    item.upstream_model,
                    item.lane,
                    item.reason,
                    "queued",
                    len(item.body),
                    item.est_tokens,
                    item.units,
                    item.created_ms,
                    item.deadline_ms,
                    item.not_before_ms,
                    item.created_ms,
                    item.callback_url,
                )
                for item in items
            ],
            tail=_INSERT_TAIL,
        )
        ids = [item.id for item in items]
        bodies = [(item.id, item.body) for item in items]
        events = [(item.id, item.created_ms, None, "queued", item.reason) for item in items]
    for item in [] if fast else items:
        inserted = await conn.execute(
            _INSERT,
            (
                item.id, item.key_name, item.request_id, item.idempotency_key, item.endpoint,
                item.model, item.provider, item.upstream_model, item.lane, item.reason, "queued",
                len(item.body), item.est_tokens, item.units, item.created_ms, item.deadline_ms,
                item.not_before_ms, item.created_ms, item.callback_url,
            ),
        )  # fmt: skip
        if inserted == 1:
            ids.append(item.id)
            bodies.append((item.id, item.body))
            events.append((item.id, item.created_ms, None, "queued", item.reason))
            continue
        row = await conn.fetchone(
            "SELECT id FROM tickets WHERE key_name = ? AND idempotency_key = ?",
            (item.key_name, item.idempotency_key),
        )
        assert row is not None  # the conflict that skipped the insert is this row
        ids.append(row[0])
    await insert_values(conn, "INSERT INTO ticket_bodies (ticket_id, body)", bodies)
    if route is not None:
        await insert_routes(
            conn,
            [
                route(item, ticket_id, ticket_id != item.id)
                for item, ticket_id in zip(items, ids, strict=True)
            ],
        )
    await add_events(conn, events)
    return ids


# --- reads ---------------------------------------------------------------------------


async def get_ticket(db: Database, ticket_id: str) -> Ticket | None:
    row = await db.fetchone(f"SELECT {COLUMNS} FROM tickets WHERE id = ?", (ticket_id,))
    return None if row is None else ticket_from_row(row)


async def get_owned(db: Database, ticket_id: str, key_name: str) -> Ticket | None:
    """The ticket if it belongs to ``key_name``; other keys cannot tell it exists."""
    row = await db.fetchone(
        f"SELECT {COLUMNS} FROM tickets WHERE id = ? AND key_name = ?", (ticket_id, key_name)
    )
    return None if row is None else ticket_from_row(row)


async def body_owned(db: Database, ticket_id: str, key_name: str) -> bytes | None:
    """The stored upstream request body of a ticket ``key_name`` owns."""
    row = await db.fetchone(
        "SELECT b.body FROM tickets t JOIN ticket_bodies b ON b.ticket_id = t.id "
        "WHERE t.id = ? AND t.key_name = ?",
        (ticket_id, key_name),
    )
    return None if row is None else bytes(row[0])


async def list_owned(
    db: Database,
    key_name: str,
    *,
    statuses: Sequence[str] = (),
    limit: int = 20,
    after: Ticket | None = None,
) -> tuple[list[Ticket], bool]:
    """Newest first, ``after`` being the last ticket of the previous page."""
    where = ["key_name = ?"]
    params: list[Any] = [key_name]
    if statuses:
        where.append(f"status IN ({marks(len(statuses))})")
        params.extend(statuses)
    if after is not None:
        where.append("(created_ms < ? OR (created_ms = ? AND id < ?))")
        params.extend([after.created_ms, after.created_ms, after.id])
    rows = await db.fetchall(
        f"SELECT {COLUMNS} FROM tickets WHERE {' AND '.join(where)} "
        "ORDER BY created_ms DESC, id DESC LIMIT ?",
        [*params, limit + 1],
    )
    tickets = [ticket_from_row(row) for row in rows[:limit]]
    return tickets, len(rows) > limit


async def events_of(db: Database, ticket_id: str) -> list[tuple[str | None, str, str]]:
    rows = await db.fetchall(
        "SELECT from_status, to_status, detail FROM ticket_events WHERE ticket_id = ? ORDER BY id",
        (ticket_id,),
    )
    return [(row[0], row[1], row[2] or "") for row in rows]


async def final_among(db: Database, ids: Sequence[str]) -> list[str]:
    """The tickets of ``ids`` that have ended."""
    ended: list[str] = []
    for part in chunks(ids):
        rows = await db.fetchall(
            f"SELECT id FROM tickets WHERE id IN ({marks(len(part))}) "
            "AND status IN ('completed', 'failed', 'cancelled')",
            list(part),
        )
        ended.extend(row[0] for row in rows)
    return ended


async def count_by_status(db: Database) -> dict[str, int]:
    rows = await db.fetchall("SELECT status, COUNT(*) FROM tickets GROUP BY status")
    return {row[0]: row[1] for row in rows}


async def oldest_queued_ms(db: Database) -> int | None:
    row = await db.fetchone("SELECT MIN(created_ms) FROM tickets WHERE status = 'queued'")
    return None if row is None else row[0]


# --- transitions ---------------------------------------------------------------------


async def add_events(conn: Conn, rows: Iterable[tuple[str, int, str | None, str, str]]) -> None:
    await insert_values(
        conn,
        "INSERT INTO ticket_events (ticket_id, ts_ms, from_status, to_status, detail)",
        list(rows),
    )


async def select_in_state(conn: Conn, ids: Sequence[str], status: TicketStatus) -> list[Ticket]:
    """The tickets of ``ids`` in ``status``, locked for the rest of the transaction on
    PostgreSQL (in id order, so two replicas moving overlapping sets never deadlock)."""
    found: list[Ticket] = []
    for part in chunks(ids):
        rows = await conn.fetchall(
            f"SELECT {COLUMNS} FROM tickets WHERE status = ? AND id IN ({marks(len(part))}) "
            f"ORDER BY id{conn.dialect.lock}",
            [status.value, *part],
        )
        found.extend(ticket_from_row(row) for row in rows)
    return found


async def move(
    conn: Conn,
    ids: Sequence[str],
    old: TicketStatus,
    new: TicketStatus,
    *,
    now_ms: int,
    detail: str,
    attempts_delta: int = 0,
    lane: str | None = None,
) -> list[Ticket]:
    """Move every ticket of ``ids`` that is still ``old`` to ``new`` (and to ``lane``, if
    given: the lane that will serve it); return them as they were before the move. Runs
    inside the caller's write transaction."""
    check_ticket(old, new)
    moved = await select_in_state(conn, ids, old)
    if not moved:
        return []
    final = new.final
    await conn.executemany(
        "UPDATE tickets SET status = ?, updated_ms = ?, attempts = attempts + ?, "
        "finished_ms = CASE WHEN ? THEN ? ELSE finished_ms END, "
        "batch_id = CASE WHEN ? = 'queued' THEN NULL ELSE batch_id END, "
        "lane = COALESCE(?, lane) WHERE id = ? AND status = ?",
        [
            (new.value, now_ms, attempts_delta, final, now_ms, new.value, lane, t.id, old.value)
            for t in moved
        ],
    )
    await add_events(conn, ((t.id, now_ms, old.value, new.value, detail) for t in moved))
    if final:
        await add_webhooks(conn, [t for t in moved if t.callback_url], now_ms)
    return moved


async def cancel(
    db: Database,
    ticket_id: str,
    key_name: str,
    now_ms: int,
    *,
    route: FinalRoute | None = None,
    started_too: bool = False,
) -> Ticket | None:
    """Cancel a queued ticket of ``key_name``; ``None`` if it was not queued. With
    ``started_too`` a submitted or realtime ticket is cancelled as well: its result, when
    it comes, matches no ``status = 'submitted'`` update and is discarded."""
    froms = [TicketStatus.QUEUED]
    if started_too:
        froms += [TicketStatus.SUBMITTED, TicketStatus.REALTIME]
    async with db.transaction() as conn:
        if (
            await conn.fetchone(
                "SELECT 1 FROM tickets WHERE id = ? AND key_name = ?", (ticket_id, key_name)
            )
            is None
        ):
            return None
        moved: list[Ticket] = []
        for before in froms:
            moved = await move(
                conn,
                [ticket_id],
                before,
                TicketStatus.CANCELLED,
                now_ms=now_ms,
                detail="cancelled by caller",
            )
            if moved:
                break
        if route is not None:
            await insert_routes(conn, [route(ticket) for ticket in moved])
    return moved[0] if moved else None


async def escalate_due(
    db: Database, *, now_ms: int, margin_ms: int, limit: int = 500
) -> list[tuple[Ticket, str]]:
    """Deadline guard and off-peak release: move tickets that must go out now to
    ``realtime``. Returns each moved ticket (as it was) with the reason."""
    moved: list[tuple[Ticket, str]] = []
    # One read first: most ticks find nothing, and then take no write lock at all.
    found = await db.fetchone(
        "SELECT EXISTS (SELECT 1 FROM tickets WHERE status IN ('queued', 'submitted') "
        "AND deadline_ms <= ?) OR EXISTS (SELECT 1 FROM tickets WHERE status = 'queued' "
        "AND lane IN ('offpeak', 'realtime') AND not_before_ms <= ?)",
        (now_ms + margin_ms, now_ms),
    )
    if found is None or not found[0]:
        return moved
    async with db.transaction() as conn:
        rows = await conn.fetchall(
            "SELECT id FROM tickets WHERE status IN ('queued', 'submitted') "
            "AND deadline_ms <= ? ORDER BY deadline_ms LIMIT ?",
            (now_ms + margin_ms, limit),
        )
        late = [row[0] for row in rows]
        rows = await conn.fetchall(
            # Off-peak tickets once their window opens; queued real-time tickets (lines of
            # a user batch whose model has no cheaper lane) at once.
            "SELECT id, lane FROM tickets WHERE status = 'queued' "
            "AND lane IN ('offpeak', 'realtime') "
            "AND not_before_ms <= ? ORDER BY not_before_ms LIMIT ?",
            (now_ms, limit),
        )
        due = [(row[0], row[1]) for row in rows if row[0] not in late]
        guard = "deadline guard: deadline within margin, sent in real time"
        for old in (TicketStatus.QUEUED, TicketStatus.SUBMITTED):
            for ticket in await move(
                conn, late, old, TicketStatus.REALTIME, now_ms=now_ms, detail=guard, lane="realtime"
            ):
                moved.append((ticket, guard))
        for lane, detail in (
            ("offpeak", "price window opened: sent directly"),
            ("realtime", "no cheaper lane before the deadline: sent directly"),
        ):
            released = [ticket_id for ticket_id, its in due if its == lane]
            for ticket in await move(
                conn, released, TicketStatus.QUEUED, TicketStatus.REALTIME, now_ms=now_ms,
                detail=detail,
            ):  # fmt: skip
                moved.append((ticket, detail))
    return moved


async def realtime_batch(db: Database, limit: int) -> list[tuple[Ticket, bytes]]:
    """Tickets waiting for (or interrupted during) a direct send, with their bodies."""
    rows = await db.fetchall(
        f"SELECT {COLUMNS}, (SELECT body FROM ticket_bodies WHERE ticket_id = tickets.id) "
        "FROM tickets WHERE status = 'realtime' "
        "ORDER BY deadline_ms LIMIT ?",
        (limit,),
    )
    return [(ticket_from_row(row), bytes(row[25])) for row in rows]


async def finish(
    conn: Conn,
    ticket: Ticket,
    new: TicketStatus,
    *,
    now_ms: int,
    detail: str,
    result: bytes | None = None,
    error: dict[str, Any] | None = None,
    usage: tuple[int | None, int | None, int | None] = (None, None, None),
    cost: tuple[float, float, float] | None = None,
    attempts_delta: int = 0,
    route: Sequence[Any] | None = None,
) -> bool:
    """Finish one ticket that is in ``ticket.status``; False if it moved meanwhile.
    ``route`` is its routing-log row, written only if the ticket really ended here."""
    check_ticket(ticket.status, new)
    changed = await conn.execute(
        "UPDATE tickets SET status = ?, updated_ms = ?, finished_ms = ?, "
        "error = ?, prompt_tokens = ?, completion_tokens = ?, cached_tokens = ?, "
        "cost_usd = ?, baseline_usd = ?, saved_usd = ?, attempts = attempts + ? "
        "WHERE id = ? AND status = ?",
        (
            new.value, now_ms, now_ms, None if error is None else orjson.dumps(error).decode(),
            *usage, *(cost or (None, None, None)), attempts_delta, ticket.id, ticket.status.value,
        ),
    )  # fmt: skip
    if changed != 1:
        return False
    if result is not None:
        await conn.execute(
            "INSERT INTO ticket_results (ticket_id, result) VALUES (?, ?)", (ticket.id, result)
        )
    await add_events(conn, [(ticket.id, now_ms, ticket.status.value, new.value, detail)])
    if ticket.callback_url:
        await add_webhooks(conn, [ticket], now_ms)
    if route is not None:
        await insert_routes(conn, [route])
    return True


async def note(db: Database, ticket_id: str, now_ms: int, status: str, detail: str) -> None:
    """An event that is not a status change (e.g. a send attempt that will be retried)."""
    async with db.transaction() as conn:
        await add_events(conn, [(ticket_id, now_ms, status, status, detail)])


# --- webhooks ------------------------------------------------------------------------


async def add_webhooks(conn: Conn, tickets: Sequence[TicketFacts], now_ms: int) -> None:
    await conn.executemany(
        "INSERT INTO webhooks (ticket_id, url, status, attempts, next_attempt_ms, updated_ms) "
        "VALUES (?, ?, 'pending', 0, ?, ?) ON CONFLICT (ticket_id) DO NOTHING",
        [(t.id, t.callback_url, now_ms, now_ms) for t in tickets if t.callback_url],
    )


async def due_webhooks(
    db: Database, now_ms: int, limit: int = 100, *, lease_ms: int = 60_000
) -> list[tuple[str, str, int]]:
    """(ticket_id, url, attempts) of deliveries due now, claimed for ``lease_ms``: their
    next attempt moves that far ahead, so another replica (or this one's next pass) does
    not send them meanwhile; ``webhook_result`` then sets the real next attempt. A
    process that dies mid-delivery leaves them due again once the lease passes."""
    async with db.transaction() as conn:
        rows = await conn.fetchall(
            "UPDATE webhooks SET next_attempt_ms = ? "
            "WHERE ticket_id IN (SELECT ticket_id FROM webhooks WHERE status = 'pending' "
            f"AND next_attempt_ms <= ? ORDER BY next_attempt_ms LIMIT ?{conn.dialect.skip_locked}) "
            "RETURNING ticket_id, url, attempts, updated_ms",
            (now_ms + lease_ms, now_ms, limit),
        )
    rows = sorted(rows, key=lambda row: (row[3], row[0]))
    return [(row[0], row[1], row[2]) for row in rows]


async def webhook_result(
    db: Database,
    ticket_id: str,
    *,
    now_ms: int,
    status: str,
    next_attempt_ms: int,
    error: str | None,
) -> None:
    async with db.transaction() as conn:
        await conn.execute(
            "UPDATE webhooks SET status = ?, attempts = attempts + 1, next_attempt_ms = ?, "
            "last_error = ?, updated_ms = ? WHERE ticket_id = ? AND status = 'pending'",
            (status, next_attempt_ms, error, now_ms, ticket_id),
        )


async def webhook_state(db: Database, ticket_id: str) -> tuple[str, int, str | None] | None:
    row = await db.fetchone(
        "SELECT status, attempts, last_error FROM webhooks WHERE ticket_id = ?", (ticket_id,)
    )
    return None if row is None else (row[0], row[1], row[2])
