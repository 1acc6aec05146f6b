"""When the scheduler's steps next have work: what a caller that may skip idle ticks
(``costroute simulate`` on its virtual clock) needs to know. Read only."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.store.db import Database


@dataclass(frozen=True, slots=True)
class Outlook:
    created_batches: int  # being submitted, or waiting for reconciliation
    next_poll_ms: int | None  # the earliest poll of a submitted batch
    earliest_deadline_ms: int | None  # of a queued or submitted ticket
    next_release_ms: int | None  # a queued off-peak or real-time ticket's not_before
    realtime_tickets: int  # waiting for (or in) a direct send
    next_webhook_ms: int | None


async def outlook(db: Database) -> Outlook:
    batches = await db.fetchone(
        # CASE, not SUM(status = ...): PostgreSQL does not add booleans.
        "SELECT SUM(CASE WHEN status = 'created' THEN 1 ELSE 0 END), "
        "MIN(CASE WHEN status = 'submitted' THEN COALESCE(next_poll_ms, 0) END) FROM batches "
        "WHERE status IN ('created', 'submitted')"
    )
    tickets = await db.fetchone(
        "SELECT MIN(CASE WHEN status IN ('queued', 'submitted') THEN deadline_ms END), "
        "MIN(CASE WHEN status = 'queued' AND lane IN ('offpeak', 'realtime') "
        "THEN not_before_ms END), SUM(CASE WHEN status = 'realtime' THEN 1 ELSE 0 END) "
        "FROM tickets WHERE status IN ('queued', 'submitted', 'realtime')"
    )
    hooks = await db.fetchone("SELECT MIN(next_attempt_ms) FROM webhooks WHERE status = 'pending'")
    return Outlook(
        created_batches=int((batches[0] if batches else 0) or 0),
        next_poll_ms=batches[1] if batches else None,
        earliest_deadline_ms=tickets[0] if tickets else None,
        next_release_ms=tickets[1] if tickets else None,
        realtime_tickets=int((tickets[2] if tickets else 0) or 0),
        next_webhook_ms=hooks[0] if hooks else None,
    )
