"""SQL for batches: claiming queued tickets into a local batch, recording the provider's
view of it, and applying per-line outcomes idempotently.

Crash safety rests on two rules kept here. A batch row and the claim of its tickets are
one transaction written before any upstream call (so a ticket is never in two live
batches), and every outcome is applied with ``WHERE id=? AND status='submitted' AND
batch_id=?`` (so re-ingesting a batch after a crash finishes each ticket once, and a
late line for a ticket the deadline guard took over is ignored).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from proxy.store.db import MAX_PARAMS, Conn, Database, insert_values, update_values
from proxy.store.jobs import Batch, BatchState, Outcome, TicketFacts, TicketStatus, check_batch
from proxy.store.leases import Held, still_held
from proxy.store.routes import insert_routes
from proxy.store.tickets import add_events, add_webhooks, chunks, marks

_BATCH_COLUMNS = (
    "id, provider, model, endpoint, status, created_ms, line_count, bytes, est_tokens, "
    "provider_batch_id, input_file_id, submitted_ms, next_poll_ms, poll_failures, owner, epoch"
)


def _text(value: Any) -> str:
    return orjson.dumps(value).decode()


def _batch(row: Sequence[Any]) -> Batch:
    return Batch(
        id=row[0],
        provider=row[1],
        model=row[2],
        endpoint=row[3],
        status=BatchState(row[4]),
        created_ms=row[5],
        line_count=row[6],
        bytes=row[7],
        est_tokens=row[8],
        provider_batch_id=row[9],
        input_file_id=row[10],
        submitted_ms=row[11],
        next_poll_ms=row[12],
        poll_failures=row[13],
        owner=row[14],
        epoch=row[15],
    )


@dataclass(frozen=True, slots=True)
class Group:
    """Queued batch-lane tickets sharing what one provider batch file must share."""

    provider: str
    model: str
    endpoint: str
    count: int
    oldest_ms: int
    earliest_deadline_ms: int


async def queued_groups(db: Database) -> list[Group]:
    # Named, because without statistics SQLite prefers the status index plus two
    # sorts; the partial index covers this query and is already in group order.
    hint = "" if db.dialect.postgres else " INDEXED BY tickets_queued_group"
    rows = await db.fetchall(
        "SELECT provider, upstream_model, endpoint, COUNT(*), MIN(created_ms), "
        f"MIN(deadline_ms) FROM tickets{hint} "
        "WHERE status = 'queued' AND lane = 'batch' "
        "GROUP BY provider, upstream_model, endpoint ORDER BY MIN(deadline_ms)"
    )
    return [Group(*row) for row in rows]


async def live_by_model(db: Database) -> dict[tuple[str, str], int]:
    """Live (created or submitted) batches per (provider, upstream model)."""
    rows = await db.fetchall(
        "SELECT provider, model, COUNT(*) FROM batches WHERE status IN ('created', 'submitted') "
        "GROUP BY provider, model"
    )
    return {(row[0], row[1]): row[2] for row in rows}


async def live_tokens(db: Database, provider: str, model: str) -> int:
    row = await db.fetchone(
        "SELECT CAST(COALESCE(SUM(est_tokens), 0) AS BIGINT) FROM batches "
        "WHERE provider = ? AND model = ? AND status IN ('created', 'submitted')",
        (provider, model),
    )
    return 0 if row is None else int(row[0])


@dataclass(frozen=True, slots=True)
class Lease:
    """Who holds a batch row and under which epoch. Every write its holder makes is
    conditional on both (``WHERE owner = ? AND epoch = ?``): a process that lost the
    lease (it stalled past its expiry and another took over, bumping the epoch) changes
    nothing."""

    owner: str
    epoch: int


def _fenced(lease: Lease | None) -> tuple[str, list[Any]]:
    if lease is None:
        return "", []
    return " AND owner = ? AND epoch = ?", [lease.owner, lease.epoch]


async def claim(
    db: Database,
    *,
    batch_id: str,
    group: Group,
    now_ms: int,
    max_lines: int,
    max_bytes: int,
    line_overhead: int,
    token_room: int | None,
    first_always: bool = True,
    owner: str = "",
    lease_ms: int = 0,
    fence: Held | None = None,
) -> Batch | None:
    """Write a ``created`` batch holding the most urgent queued tickets of ``group``
    that fit the line, byte and token limits; ``None`` if nothing fits. With
    ``first_always`` the first ticket goes even if it alone exceeds the token room (so
    one large request cannot block its group while nothing else is in flight).

    The batch row is leased to ``owner`` for ``lease_ms`` (epoch 1) while it is being
    uploaded and created; on PostgreSQL the tickets are claimed with ``SKIP LOCKED``, so
    two claims racing on one group take disjoint tickets. With ``fence`` (the flush
    lease) nothing is claimed unless that lease is still held."""
    async with db.transaction() as conn:
        if fence is not None and not await still_held(conn, fence, now_ms=now_ms):
            return None
        candidates = await conn.fetchall(
            "SELECT id, body_bytes, est_tokens, units FROM tickets WHERE status = 'queued' "
            "AND lane = 'batch' AND provider = ? AND upstream_model = ? AND endpoint = ? "
            f"ORDER BY deadline_ms, created_ms LIMIT ?{conn.dialect.skip_locked}",
            (group.provider, group.model, group.endpoint, max_lines),
        )
        ids: list[str] = []
        size = tokens = units = 0
        for ticket_id, body_len, est, count in candidates:
            line = body_len + len(ticket_id) + line_overhead
            # Requests, not lines, are what the provider limits (embedding inputs).
            if ids and (size + line > max_bytes or units + count > max_lines):
                break
            over = token_room is not None and tokens + est > token_room
            if over and (ids or not first_always):
                break
            ids.append(ticket_id)
            size += line
            tokens += est
            units += count
        if not ids:
            return None
        clock, clock_params = conn.dialect.clock_ms(now_ms)
        await conn.execute(
            "INSERT INTO batches (id, provider, model, endpoint, status, line_count, bytes, "
            "est_tokens, created_ms, owner, epoch, lease_ms) "
            f"VALUES (?, ?, ?, ?, 'created', ?, ?, ?, ?, ?, 1, {clock} + ?)",
            (batch_id, group.provider, group.model, group.endpoint, len(ids), size, tokens,
             now_ms, owner, *clock_params, lease_ms),
        )  # fmt: skip
        if conn.dialect.postgres:
            await conn.execute(
                "UPDATE tickets SET status = 'submitted', batch_id = ?, attempts = attempts + 1, "
                "updated_ms = ? WHERE id = ANY(?::text[]) AND status = 'queued'",
                (batch_id, now_ms, ids),
            )
        else:
            await conn.executemany(
                "UPDATE tickets SET status = 'submitted', batch_id = ?, attempts = attempts + 1, "
                "updated_ms = ? WHERE id = ? AND status = 'queued'",
                [(batch_id, now_ms, ticket_id) for ticket_id in ids],
            )
        await add_events(
            conn, ((tid, now_ms, "queued", "submitted", f"claimed by {batch_id}") for tid in ids)
        )
    return Batch(
        id=batch_id,
        provider=group.provider,
        model=group.model,
        endpoint=group.endpoint,
        status=BatchState.CREATED,
        created_ms=now_ms,
        line_count=len(ids),
        bytes=size,
        est_tokens=tokens,
        owner=owner,
        epoch=1,
    )


async def renew(db: Database, batch_id: str, lease: Lease, *, now_ms: int, lease_ms: int) -> bool:
    """Extend the holder's lease on a live batch; False if it was lost (or the batch is no
    longer live)."""
    async with db.transaction() as conn:
        clock, params = conn.dialect.clock_ms(now_ms)
        return (
            await conn.execute(
                f"UPDATE batches SET lease_ms = {clock} + ? WHERE id = ? AND owner = ? "
                "AND epoch = ? AND status IN ('created', 'submitted')",
                (*params, lease_ms, batch_id, lease.owner, lease.epoch),
            )
            == 1
        )


async def stale_created(db: Database, *, now_ms: int, grace_ms: int) -> list[Batch]:
    """``created`` batches whose holder's lease ran out at least ``grace_ms`` ago: the
    holder died (or stalled) while uploading or creating, and no create call it started
    can still be in flight."""
    clock, params = db.dialect.clock_ms(now_ms)
    rows = await db.fetchall(
        f"SELECT {_BATCH_COLUMNS} FROM batches WHERE status = 'created' "
        f"AND lease_ms + ? <= {clock} ORDER BY created_ms",
        (grace_ms, *params),
    )
    return [_batch(row) for row in rows]


async def take_over(
    db: Database, batch_id: str, *, owner: str, now_ms: int, lease_ms: int, grace_ms: int
) -> Lease | None:
    """Become the holder of a stale ``created`` batch (compare-and-set: of several
    replicas trying, one gets it); the epoch grows, fencing out the previous holder."""
    async with db.transaction() as conn:
        clock, params = conn.dialect.clock_ms(now_ms)
        row = await conn.fetchone(
            f"UPDATE batches SET owner = ?, epoch = epoch + 1, lease_ms = {clock} + ? "
            f"WHERE id = ? AND status = 'created' AND lease_ms + ? <= {clock} RETURNING epoch",
            (owner, *params, lease_ms, batch_id, grace_ms, *params),
        )
    return None if row is None else Lease(owner, int(row[0]))


async def claim_polls(
    db: Database, *, owner: str, now_ms: int, lease_ms: int, limit: int = 10
) -> list[Batch]:
    """Lease up to ``limit`` submitted batches that are due a poll and held by nobody
    (PostgreSQL: ``SKIP LOCKED``, so replicas polling together split them). Each comes
    back with its new ``owner``/``epoch``; the lease ends with ``record_poll`` or
    ``close``."""
    clock, params = db.dialect.clock_ms(now_ms)
    # One read first: most poll ticks find nothing due, and then take no write lock (on
    # SQLite the writer is shared with every enqueue). A batch that becomes due just
    # after the read waits for the next tick, as it would have anyway.
    due = await db.fetchone(
        "SELECT 1 FROM batches WHERE status = 'submitted' "
        f"AND COALESCE(next_poll_ms, 0) <= ? AND lease_ms <= {clock} LIMIT 1",
        (now_ms, *params),
    )
    if due is None:
        return []
    async with db.transaction() as conn:
        rows = await conn.fetchall(
            f"UPDATE batches SET owner = ?, epoch = epoch + 1, lease_ms = {clock} + ? "
            "WHERE id IN (SELECT id FROM batches WHERE status = 'submitted' "
            f"AND COALESCE(next_poll_ms, 0) <= ? AND lease_ms <= {clock} "
            f"ORDER BY next_poll_ms LIMIT ?{conn.dialect.skip_locked}) "
            f"RETURNING {_BATCH_COLUMNS}",
            (owner, *params, lease_ms, now_ms, *params, limit),
        )
    return sorted((_batch(row) for row in rows), key=lambda b: (b.next_poll_ms or 0, b.id))


async def lines_of(
    db: Database, batch_id: str, page: int = 1000
) -> AsyncIterator[tuple[str, bytes]]:
    """(ticket id, upstream body) of a batch in id order, a page at a time: the order
    that maps a validation error's line number back to its ticket."""
    last = ""
    while True:
        rows = await db.fetchall(
            "SELECT t.id, b.body FROM tickets t JOIN ticket_bodies b ON b.ticket_id = t.id "
            "WHERE t.batch_id = ? AND t.id > ? ORDER BY t.id LIMIT ?",
            (batch_id, last, page),
        )
        for row in rows:
            yield row[0], bytes(row[1])
        if len(rows) < page:
            return
        last = rows[-1][0]


async def ticket_ids_of(db: Database, batch_id: str) -> list[str]:
    rows = await db.fetchall("SELECT id FROM tickets WHERE batch_id = ? ORDER BY id", (batch_id,))
    return [row[0] for row in rows]


async def get_batch(db: Database, batch_id: str) -> Batch | None:
    row = await db.fetchone(f"SELECT {_BATCH_COLUMNS} FROM batches WHERE id = ?", (batch_id,))
    return None if row is None else _batch(row)


async def batches_in(db: Database, state: BatchState) -> list[Batch]:
    rows = await db.fetchall(
        f"SELECT {_BATCH_COLUMNS} FROM batches WHERE status = ? ORDER BY created_ms",
        (state.value,),
    )
    return [_batch(row) for row in rows]


async def set_input_file(
    db: Database, batch_id: str, file_id: str, *, lease: Lease | None = None
) -> None:
    fence, params = _fenced(lease)
    async with db.transaction() as conn:
        await conn.execute(
            f"UPDATE batches SET input_file_id = ? WHERE id = ? AND status = 'created'{fence}",
            (file_id, batch_id, *params),
        )


async def mark_submitted(
    db: Database,
    batch_id: str,
    *,
    provider_batch_id: str,
    input_file_id: str,
    now_ms: int,
    next_poll_ms: int,
    lease: Lease | None = None,
) -> bool:
    """Record the provider's batch. False if the batch is no longer ``created`` or, with
    ``lease``, no longer held under it: the caller then cancels what it created."""
    check_batch(BatchState.CREATED, BatchState.SUBMITTED)
    fence, params = _fenced(lease)
    async with db.transaction() as conn:
        changed = await conn.execute(
            "UPDATE batches SET status = 'submitted', provider_batch_id = ?, input_file_id = ?, "
            "submitted_ms = ?, next_poll_ms = ?, lease_ms = 0 "
            f"WHERE id = ? AND status = 'created'{fence}",
            (provider_batch_id, input_file_id, now_ms, next_poll_ms, batch_id, *params),
        )
        return changed == 1


async def release(
    db: Database, batch_id: str, *, now_ms: int, reason: str, lease: Lease | None = None
) -> int:
    """The provider never accepted this batch: fail it locally and requeue its tickets
    without charging them an attempt. Returns how many tickets went back."""
    check_batch(BatchState.CREATED, BatchState.FAILED)
    fence, params = _fenced(lease)
    async with db.transaction() as conn:
        changed = await conn.execute(
            "UPDATE batches SET status = 'failed', finished_ms = ?, errors = ?, lease_ms = 0 "
            f"WHERE id = ? AND status = 'created'{fence}",
            (now_ms, _text([{"code": "not_submitted", "message": reason}]), batch_id, *params),
        )
        if changed != 1:
            return 0
        rows = await conn.fetchall(
            "SELECT id FROM tickets WHERE batch_id = ? AND status = 'submitted' "
            f"ORDER BY id{conn.dialect.lock}",
            (batch_id,),
        )
        ids = [row[0] for row in rows]
        await conn.executemany(
            "UPDATE tickets SET status = 'queued', batch_id = NULL, attempts = attempts - 1, "
            "updated_ms = ? WHERE id = ? AND status = 'submitted'",
            [(now_ms, tid) for tid in ids],
        )
        await add_events(conn, ((tid, now_ms, "submitted", "queued", reason) for tid in ids))
    return len(ids)


async def record_poll(
    db: Database,
    batch_id: str,
    *,
    next_poll_ms: int,
    poll_failures: int,
    completed: int | None = None,
    failed: int | None = None,
    lease: Lease | None = None,
) -> bool:
    """When to poll next; with ``lease``, also give the lease up (any replica may take
    the next poll). False if the lease was lost meanwhile."""
    fence, params = _fenced(lease)
    release_lease = ", lease_ms = 0" if lease is not None else ""
    async with db.transaction() as conn:
        changed = await conn.execute(
            "UPDATE batches SET next_poll_ms = ?, poll_failures = ?, "
            "completed_lines = COALESCE(?, completed_lines), "
            f"failed_lines = COALESCE(?, failed_lines){release_lease} WHERE id = ?{fence}",
            (next_poll_ms, poll_failures, completed, failed, batch_id, *params),
        )
        return changed == 1


@dataclass(slots=True)
class Waiting:
    """The columns of a ticket that applying a batch line reads. Not frozen and not a
    ``Ticket``: ingest builds one per line, and a 25-field frozen dataclass cost
    more than twice as much to construct."""

    id: str
    status: str
    lane: str
    attempts: int
    callback_url: str | None
    request_id: str
    key_name: str
    endpoint: str
    model: str
    provider: str
    upstream_model: str
    created_ms: int
    deadline_ms: int


_WAITING = (
    "id, status, lane, attempts, callback_url, request_id, key_name, endpoint, model, "
    "provider, upstream_model, created_ms, deadline_ms"
)
# Each chunk's final states as one statement (see ``update_values``); the condition
# on status and batch keeps a second ingest after a crash from finishing a ticket twice.
_FINISH = (
    "UPDATE tickets SET status = v.column1, updated_ms = ?, finished_ms = ?, "
    "error = v.column2, prompt_tokens = v.column3, completion_tokens = v.column4, "
    "cached_tokens = v.column5, cost_usd = v.column6, baseline_usd = v.column7, "
    "saved_usd = v.column8 FROM"
)
_FINISH_WHERE = (
    "AS v WHERE tickets.id = v.column9 AND tickets.status = 'submitted' AND tickets.batch_id = ?"
)


@dataclass(slots=True)
class Applied:
    """What one ``apply_outcomes`` call really changed."""

    final: list[tuple[TicketFacts, Outcome]] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)
    # Lines for tickets no longer waiting on this batch (deadline guard took over).
    ignored: list[tuple[str, str]] = field(default_factory=list)


async def apply_outcomes(
    db: Database,
    batch_id: str,
    outcomes: Sequence[Outcome],
    *,
    now_ms: int,
    max_attempts: int,
    refund: bool = False,
    price: Callable[[TicketFacts, Outcome], Outcome] | None = None,
    route: Callable[[TicketFacts, Outcome], Sequence[Any]] | None = None,
) -> Applied:
    """Apply per-line outcomes of one batch in one transaction. A retryable outcome
    requeues its ticket while attempts remain and fails it after that; with ``refund``
    (the provider refused the whole batch for capacity) the attempt is given back.
    ``price`` fills in the cost of a completed outcome from its ticket; ``route`` builds
    the routing-log row of each ticket that ends, written in the same transaction."""
    applied = Applied()
    by_id = {o.ticket_id: o for o in outcomes}
    async with db.transaction() as conn:
        rows = await _waiting(conn, batch_id, list(by_id))
        finals: list[tuple[Any, ...]] = []
        results: list[tuple[str, bytes]] = []
        retries: list[str] = []
        events: list[tuple[str, int, str | None, str, str]] = []
        late: list[tuple[float, str]] = []
        for ticket in rows:
            outcome = by_id[ticket.id]
            if ticket.status != "submitted":
                # Already settled by this batch (a second ingest after a crash): nothing
                # to say. Taken over by the deadline guard: a late result, logged.
                if ticket.lane == "realtime":
                    applied.ignored.append((ticket.id, ticket.status))
                    note = f"late result from {batch_id} ignored"
                    billed = _late_cost(ticket, outcome, price)
                    if billed is not None:
                        late.append((billed, ticket.id))
                        note += f"; the provider bills it: ${billed:.6f} added to its cost"
                    events.append((ticket.id, now_ms, ticket.status, ticket.status, note))
                continue
            status = outcome.status
            if status is TicketStatus.QUEUED and not refund and ticket.attempts >= max_attempts:
                status = TicketStatus.FAILED
            if status is TicketStatus.QUEUED:
                retries.append(ticket.id)
                applied.requeued.append(ticket.id)
            else:
                if price is not None and status is TicketStatus.COMPLETED:
                    outcome = price(ticket, outcome)
                finals.append(
                    (
                        status.value,
                        None if outcome.error is None else orjson.dumps(outcome.error).decode(),
                        outcome.prompt_tokens, outcome.completion_tokens, outcome.cached_tokens,
                        *(outcome.cost or (None, None, None)), ticket.id,
                    )
                )  # fmt: skip
                applied.final.append((ticket, _with_status(outcome, status)))
                if status is TicketStatus.COMPLETED and outcome.result is not None:
                    results.append((ticket.id, outcome.result))
            events.append((ticket.id, now_ms, "submitted", status.value, outcome.detail))
        if conn.dialect.postgres:
            await _finish_pg(conn, finals, now_ms=now_ms, batch_id=batch_id)
        else:
            await update_values(
                conn, _FINISH, finals, _FINISH_WHERE, before=(now_ms, now_ms), after=(batch_id,)
            )
        await insert_values(conn, "INSERT INTO ticket_results (ticket_id, result)", results)
        for part in chunks(retries, MAX_PARAMS - 3):
            await conn.execute(
                "UPDATE tickets SET status = 'queued', batch_id = NULL, attempts = attempts - ?, "
                "updated_ms = ? WHERE status = 'submitted' AND batch_id = ? "
                f"AND id IN ({marks(len(part))})",
                [int(refund), now_ms, batch_id, *part],
            )
        await add_events(conn, events)
        if late:
            # The request's final row (written with the direct send, at the ticket's
            # finished_ms) and the ticket carry what the provider bills for both sends.
            await conn.executemany(_ADD_LATE_TO_ROUTE, [(c, c, i, i) for c, i in late])
            await conn.executemany(_ADD_LATE_TO_TICKET, [(c, c, i) for c, i in late])
        await add_webhooks(conn, [t for t, _ in applied.final if t.callback_url], now_ms)
        if route is not None:
            await insert_routes(conn, [route(t, o) for t, o in applied.final])
    return applied


# (cost, cost, ticket id, ticket id): plain placeholders, which both engines take. The
# final row is found by its time (the ticket's finished_ms, on the routes_ts index), then
# by ticket; SET reads the old cost on the right-hand side.
_ADD_LATE_TO_ROUTE = (
    "UPDATE routes SET cost_usd = COALESCE(cost_usd, 0) + ?, "
    "saved_usd = COALESCE(baseline_usd, 0) - COALESCE(cost_usd, 0) - ? "
    "WHERE ts_ms = (SELECT finished_ms FROM tickets WHERE id = ?) "
    "AND ticket_id = ? AND status != 202"
)
_ADD_LATE_TO_TICKET = (
    "UPDATE tickets SET cost_usd = COALESCE(cost_usd, 0) + ?, "
    "saved_usd = COALESCE(baseline_usd, 0) - COALESCE(cost_usd, 0) - ? WHERE id = ?"
)


def _late_cost(
    ticket: Waiting, outcome: Outcome, price: Callable[[TicketFacts, Outcome], Outcome] | None
) -> float | None:
    """What a batch line the deadline guard already sent directly still costs: the
    provider ran it and bills it at the batch price."""
    if price is None or outcome.status is not TicketStatus.COMPLETED:
        return None
    cost = price(dataclasses.replace(ticket, lane="batch"), outcome).cost
    return None if cost is None else cost[0]


async def _finish_pg(
    conn: Conn, finals: Sequence[tuple[Any, ...]], *, now_ms: int, batch_id: str
) -> None:
    """``_FINISH`` on PostgreSQL: the chunk's final states as typed arrays, one
    statement for any count (a ``VALUES`` list in ``FROM`` has untyped parameters)."""
    if not finals:
        return
    columns = [list(column) for column in zip(*finals, strict=True)]
    await conn.execute(
        "UPDATE tickets SET status = v.status, updated_ms = ?, finished_ms = ?, "
        "error = v.error, prompt_tokens = v.prompt, completion_tokens = v.completion, "
        "cached_tokens = v.cached, cost_usd = v.cost, baseline_usd = v.baseline, "
        "saved_usd = v.saved FROM unnest(?::text[], ?::text[], ?::bigint[], ?::bigint[], "
        "?::bigint[], ?::float8[], ?::float8[], ?::float8[], ?::text[]) "
        "AS v(status, error, prompt, completion, cached, cost, baseline, saved, id) "
        "WHERE tickets.id = v.id AND tickets.status = 'submitted' AND tickets.batch_id = ?",
        (now_ms, now_ms, *columns, batch_id),
    )


async def _waiting(conn: Conn, batch_id: str, ids: list[str]) -> list[Waiting]:
    """The tickets of ``ids`` still claimed by ``batch_id`` (in any status), locked on
    PostgreSQL: an ingest of the same batch racing on another replica waits here and
    then sees them settled, so nothing is written twice."""
    found: list[Waiting] = []
    for part in chunks(ids, MAX_PARAMS - 1):
        rows = await conn.fetchall(
            f"SELECT {_WAITING} FROM tickets WHERE batch_id = ? AND id IN ({marks(len(part))}) "
            f"ORDER BY id{conn.dialect.lock}",
            [batch_id, *part],
        )
        found.extend(Waiting(*row) for row in rows)
    return found


def _with_status(outcome: Outcome, status: TicketStatus) -> Outcome:
    if outcome.status is status:
        return outcome
    return Outcome(
        outcome.ticket_id, status, error=outcome.error, detail=f"{outcome.detail}; out of attempts"
    )


async def unresolved_ids(db: Database, batch_id: str) -> list[str]:
    rows = await db.fetchall(
        "SELECT id FROM tickets WHERE batch_id = ? AND status = 'submitted'", (batch_id,)
    )
    return [row[0] for row in rows]


async def close(
    db: Database,
    batch_id: str,
    state: BatchState,
    *,
    now_ms: int,
    completed: int,
    failed: int,
    errors: Sequence[Mapping[str, Any]] = (),
    lease: Lease | None = None,
) -> bool:
    """Record the final state, after every ticket of the batch has been resolved."""
    check_batch(BatchState.SUBMITTED, state)
    fence, params = _fenced(lease)
    async with db.transaction() as conn:
        changed = await conn.execute(
            "UPDATE batches SET status = ?, finished_ms = ?, completed_lines = ?, "
            "failed_lines = ?, errors = ?, lease_ms = 0 "
            f"WHERE id = ? AND status = 'submitted'{fence}",
            (state.value, now_ms, completed, failed,
             _text(list(errors)) if errors else None, batch_id, *params),
        )  # fmt: skip
        return changed == 1


async def batch_errors(db: Database, batch_id: str) -> list[dict[str, Any]]:
    row = await db.fetchone("SELECT errors FROM batches WHERE id = ?", (batch_id,))
    if row is None or row[0] is None:
        return []
    value: list[dict[str, Any]] = orjson.loads(row[0])
    return value


async def batch_status_counts(db: Database) -> dict[str, int]:
    rows = await db.fetchall("SELECT status, COUNT(*) FROM batches GROUP BY status")
    return {row[0]: row[1] for row in rows}
