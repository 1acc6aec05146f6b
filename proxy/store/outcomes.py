"""Reading how requests ended, for savings realised against the theoretical best
(``costroute report``, the ops page, ``costroute simulate``).

A request's *final* routing-log row is its real-time row, or its ticket's closing row
(the ``202`` row written at acceptance is not final). Its arrival is the ticket's
``created_ms`` for a ticket, else the row's time.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.store.db import Database

_FINAL = (
    "SELECT r.request_id, r.ticket_id, r.key_name, r.endpoint, r.model, r.provider, r.lane, "
    "r.status, r.ts_ms, COALESCE(t.created_ms, r.ts_ms), r.prompt_tokens, "
    "r.completion_tokens, r.cached_tokens, r.cost_usd, r.baseline_usd, "
    "COALESCE(r.tolerance_s, (t.deadline_ms - t.created_ms) / 1000), r.cache_name, "
    "t.deadline_ms "
    "FROM routes r LEFT JOIN tickets t ON t.id = r.ticket_id "
    "WHERE r.status != 202 AND r.lane != 'rejected' AND r.ts_ms >= ? AND r.ts_ms < ? "
    "ORDER BY r.id"
)


@dataclass(frozen=True, slots=True)
class Served:
    request_id: str
    ticket_id: str | None
    key_name: str | None
    endpoint: str
    model: str | None
    provider: str | None
    lane: str
    status: int
    ended_ms: int
    received_ms: int
    prompt_tokens: int | None
    completion_tokens: int | None
    cached_tokens: int | None
    cost_usd: float | None
    baseline_usd: float | None
    tolerance_s: int | None
    cache_name: str | None
    deadline_ms: int | None  # tickets only


async def final_rows(db: Database, *, since_ms: int = 0, until_ms: int = 1 << 62) -> list[Served]:
    """Every request that ended in ``[since_ms, until_ms)``, oldest row first."""
    rows = await db.fetchall(_FINAL, (since_ms, until_ms))
    return [Served(*row) for row in rows]


async def batch_counts(db: Database, *, since_ms: int = 0) -> dict[tuple[str, str], int]:
    """(provider, status) -> provider batches created since ``since_ms``."""
    rows = await db.fetchall(
        "SELECT provider, status, COUNT(*) FROM batches WHERE created_ms >= ? "
        "GROUP BY provider, status",
        (since_ms,),
    )
    return {(row[0], row[1]): int(row[2]) for row in rows}


async def turnarounds(
    db: Database, *, since_ms: int = 0, until_ms: int = 1 << 62
) -> dict[str, list[float]]:
    """provider -> seconds from submission to result of its completed batches."""
    rows = await db.fetchall(
        "SELECT provider, finished_ms - submitted_ms FROM batches WHERE status = 'completed' "
        "AND submitted_ms IS NOT NULL AND finished_ms IS NOT NULL "
        "AND finished_ms >= ? AND finished_ms < ?",
        (since_ms, until_ms),
    )
    found: dict[str, list[float]] = {}
    for provider, ms in rows:
        found.setdefault(provider, []).append(ms / 1000)
    return found


async def requeued_lines(db: Database, *, since_ms: int = 0) -> int:
    """Ticket moves back from a provider batch to the queue (a retried line, an expired
    or lost batch)."""
    row = await db.fetchone(
        "SELECT COUNT(*) FROM ticket_events WHERE from_status = 'submitted' "
        "AND to_status = 'queued' AND ts_ms >= ?",
        (since_ms,),
    )
    return int(row[0]) if row else 0


async def escalated(db: Database, *, since_ms: int = 0) -> set[str]:
    """Tickets the deadline guard sent in real time."""
    rows = await db.fetchall(
        "SELECT DISTINCT ticket_id FROM ticket_events WHERE to_status = 'realtime' "
        "AND detail LIKE 'deadline guard%' AND ts_ms >= ?",
        (since_ms,),
    )
    return {row[0] for row in rows}


async def unfinished_tickets(db: Database) -> int:
    row = await db.fetchone(
        "SELECT COUNT(*) FROM tickets WHERE status IN ('queued', 'submitted', 'realtime')"
    )
    return int(row[0]) if row else 0


async def live_batches(db: Database) -> int:
    """Provider batches not yet closed: a batch whose tickets the deadline guard took
    over still runs, and is billed, until it ends."""
    row = await db.fetchone("SELECT COUNT(*) FROM batches WHERE status IN ('created', 'submitted')")
    return int(row[0]) if row else 0
