"""SQL for the admin listings (routing log, tickets, batches) and the facts alerts read.

Every listing is newest first with keyset cursors: ``after`` an id gives the older rows
that follow it, ``before`` an id the newer rows that precede it (still newest first).
One extra row is read to tell whether more rows lie in the direction of travel. Tickets
and batches are ordered by ``(created_ms, id)``, routes by ``id`` (their insertion order).
Filters are equality (or ``IN``) on the columns named here; nothing else reaches the SQL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from proxy.store.db import Database
from proxy.store.routes import COLUMNS as ROUTE_COLUMNS

# A provider batch has 24 h to finish: a day of history covers one whole cycle.
WINDOW_MS = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class LiveBatch:
    id: str
    provider: str
    model: str
    status: str
    created_ms: int
    submitted_ms: int | None = None
    provider_batch_id: str | None = None


@dataclass(frozen=True, slots=True)
class EndedBatch:
    id: str
    provider: str
    status: str
    line_count: int
    completed_lines: int
    failed_lines: int
    finished_ms: int


@dataclass(frozen=True, slots=True)
class Queue:
    lane: str
    provider: str
    model: str
    count: int
    # The oldest ticket's max(created_ms, not_before_ms).
    waiting_since_ms: int


@dataclass(frozen=True, slots=True)
class Delivery:
    """One webhook delivery that has not succeeded (yet)."""

    url: str
    status: str  # pending | failed (gave up)
    attempts: int
    last_error: str | None
    updated_ms: int


@dataclass(frozen=True, slots=True)
class Facts:
    live_batches: Sequence[LiveBatch] = ()
    ended_batches: Sequence[EndedBatch] = ()
    queues: Sequence[Queue] = ()
    deliveries: Sequence[Delivery] = ()


class UnknownCursor(LookupError):
    """An ``after``/``before`` id that names no row of the listing."""


TICKET_COLUMNS = (
    "id", "key_name", "request_id", "endpoint", "model", "provider", "upstream_model", "lane",
    "reason", "status", "created_ms", "deadline_ms", "not_before_ms", "updated_ms",
    "finished_ms", "attempts", "batch_id", "callback_url", "error", "est_tokens", "body_bytes",
    "prompt_tokens", "completion_tokens", "cached_tokens", "cost_usd", "baseline_usd",
    "saved_usd", "CASE WHEN idempotency_key IS NULL THEN 0 ELSE 1 END AS idempotent",
)  # fmt: skip
BATCH_COLUMNS = (
    "id", "provider", "model", "endpoint", "status", "provider_batch_id", "input_file_id",
    "output_file_id", "error_file_id", "line_count", "completed_lines", "failed_lines", "bytes",
    "est_tokens", "errors", "created_ms", "submitted_ms", "finished_ms", "next_poll_ms",
    "poll_failures",
)  # fmt: skip

# Filter names a handler may use, and the column each one compares.
ROUTE_FILTERS = {
    "lane": "lane", "model": "model", "key": "key_name", "provider": "provider",
    "status": "status", "endpoint": "endpoint", "ticket": "ticket_id",
}  # fmt: skip
TICKET_FILTERS = {
    "status": "status", "lane": "lane", "model": "model", "key": "key_name",
    "provider": "provider", "batch": "batch_id",
}  # fmt: skip
BATCH_FILTERS = {"status": "status", "provider": "provider", "model": "model"}
# ``outcome`` on the routing log; "failed" is what reports count as failed.
OUTCOMES = {"ok": "status < 400", "failed": "status >= 400 AND status != 499"}

Filters = Mapping[str, Any]


def _where(
    filters: Filters, allowed: Mapping[str, str], since_ms: int, time_column: str
) -> tuple[list[str], list[Any]]:
    """A scalar value compares with ``=``, a tuple with ``IN``; an unknown name is a bug
    in the caller (``KeyError``), never SQL."""
    where = [f"{time_column} >= ?"]
    params: list[Any] = [since_ms]
    for name, value in filters.items():
        column = allowed[name]
        if isinstance(value, tuple):
            where.append(f"{column} IN ({', '.join('?' * len(value))})")
            params.extend(value)
        else:
            where.append(f"{column} = ?")
            params.append(value)
    return where, params


async def _page(
    db: Database,
    sql: str,
    where: list[str],
    params: list[Any],
    *,
    keys: tuple[str, ...],
    cursor: tuple[Any, ...] | None,
    newer: bool,
    limit: int,
) -> tuple[list[dict[str, Any]], bool]:
    if cursor is not None:
        # Row-value comparison: SQLite 3.15+ walks the (created_ms, id) order directly.
        where.append(f"({', '.join(keys)}) {'>' if newer else '<'} ({', '.join('?' * len(keys))})")
        params.extend(cursor)
    order = ", ".join(f"{key} {'ASC' if newer else 'DESC'}" for key in keys)
    rows = await db.fetchall(
        f"{sql} WHERE {' AND '.join(where)} ORDER BY {order} LIMIT ?", [*params, limit + 1]
    )
    found = [dict(row) for row in rows[:limit]]
    if newer:
        found.reverse()
    return found, len(rows) > limit


async def list_routes(
    db: Database,
    *,
    filters: Filters | None = None,
    outcome: str | None = None,
    since_ms: int = 0,
    after: int | None = None,
    before: int | None = None,
    limit: int = 50,
) -> tuple[list[dict[str, Any]], bool]:
    """Routing-log rows; ``filters`` keys from ``ROUTE_FILTERS``, ``outcome`` from
    ``OUTCOMES``."""
    where, params = _where(filters or {}, ROUTE_FILTERS, since_ms, "ts_ms")
    if outcome is not None:
        where.append(OUTCOMES[outcome])
    cursor = after if after is not None else before
    return await _page(
        db,
        f"SELECT id, {', '.join(ROUTE_COLUMNS)} FROM routes",
        where,
        params,
        keys=("id",),
        cursor=None if cursor is None else (cursor,),
        newer=before is not None,
        limit=limit,
    )


async def _created_cursor(db: Database, table: str, row_id: str | None) -> tuple[Any, ...] | None:
    if row_id is None:
        return None
    row = await db.fetchone(f"SELECT created_ms, id FROM {table} WHERE id = ?", (row_id,))
    if row is None:
        raise UnknownCursor(row_id)
    return (row[0], row[1])


async def list_tickets(
    db: Database,
    *,
    filters: Filters | None = None,
    since_ms: int = 0,
    after: str | None = None,
    before: str | None = None,
    limit: int = 50,
) -> tuple[list[dict[str, Any]], bool]:
    """Tickets of every key, without request bodies or results."""
    return await _list_by_created(
        db, "tickets", TICKET_COLUMNS, TICKET_FILTERS, filters, since_ms, after, before, limit
    )


async def list_batches(
    db: Database,
    *,
    filters: Filters | None = None,
    since_ms: int = 0,
    after: str | None = None,
    before: str | None = None,
    limit: int = 50,
) -> tuple[list[dict[str, Any]], bool]:
    return await _list_by_created(
        db, "batches", BATCH_COLUMNS, BATCH_FILTERS, filters, since_ms, after, before, limit
    )


async def _list_by_created(
    db: Database,
    table: str,
    columns: Sequence[str],
    allowed: Mapping[str, str],
    filters: Filters | None,
    since_ms: int,
    after: str | None,
    before: str | None,
    limit: int,
) -> tuple[list[dict[str, Any]], bool]:
    """A page of ``table`` newest first, keyed by (created_ms, id)."""
    where, params = _where(filters or {}, allowed, since_ms, "created_ms")
    cursor = await _created_cursor(db, table, after if after is not None else before)
    return await _page(
        db,
        f"SELECT {', '.join(columns)} FROM {table}",
        where,
        params,
        keys=("created_ms", "id"),
        cursor=cursor,
        newer=before is not None,
        limit=limit,
    )


async def alert_facts(db: Database, now_ms: int) -> Facts:
    """What the alert rules in ``proxy.ops.alerts`` read, for the window ending now."""
    since = now_ms - WINDOW_MS
    live = await db.fetchall(
        "SELECT id, provider, model, status, created_ms, submitted_ms, provider_batch_id "
        "FROM batches WHERE status IN ('created', 'submitted')"
    )
    ended = await db.fetchall(
        "SELECT id, provider, status, line_count, completed_lines, failed_lines, finished_ms "
        "FROM batches WHERE status IN ('completed', 'failed', 'expired') AND finished_ms >= ?",
        (since,),
    )
    waiting = db.dialect.greatest("created_ms", "not_before_ms")
    queues = await db.fetchall(
        f"SELECT lane, provider, upstream_model, COUNT(*), MIN({waiting}) "
        "FROM tickets WHERE status = 'queued' GROUP BY lane, provider, upstream_model"
    )
    deliveries = await db.fetchall(
        "SELECT url, status, attempts, last_error, updated_ms FROM webhooks "
        "WHERE status IN ('pending', 'failed') AND attempts > 0 AND updated_ms >= ?",
        (since,),
    )
    return Facts(
        live_batches=[LiveBatch(*row) for row in live],
        ended_batches=[EndedBatch(*row) for row in ended],
        queues=[Queue(*row) for row in queues],
        deliveries=[Delivery(*row) for row in deliveries],
    )
