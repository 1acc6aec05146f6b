"""Routing-log rows for tickets (pure): one when a ticket is accepted (status 202) and one
when it ends, with its tokens and cost.

They are written by the store in the same transaction as the ticket change they
describe, never through the buffered ``RouteLog``: a process killed just after a ticket
ended must not lose the row that says so, nor write it twice when the work is redone.
"""

from __future__ import annotations

from typing import Any

from proxy.store.jobs import NewTicket, Outcome, TicketFacts, TicketStatus
from proxy.store.routes import COLUMNS

_INDEX = {name: i for i, name in enumerate(COLUMNS)}
_DEFAULTS = {"stream": 0, "attempts": 1}
# Final statuses as HTTP statuses in the log; 499 ("client closed") marks a cancellation.
_FINAL_STATUS = {TicketStatus.COMPLETED: 200, TicketStatus.CANCELLED: 499}


# The defaults in place, copied per row (ingest builds 50,000 rows per batch, and
# merging the defaults into each call's fields cost a dict per row).
_BLANK: tuple[Any, ...] = tuple(_DEFAULTS.get(name) for name in COLUMNS)


def route_row(**fields: Any) -> tuple[Any, ...]:
    """A ``routes`` row in column order; an unknown column name is a bug (KeyError)."""
    row = list(_BLANK)
    for name, value in fields.items():
        row[_INDEX[name]] = value
    return tuple(row)


def accepted(item: NewTicket, ticket_id: str, replayed: bool) -> tuple[Any, ...]:
    return route_row(
        ts_ms=item.created_ms,
        request_id=item.request_id,
        key_name=item.key_name,
        endpoint=item.endpoint,
        model=item.model,
        provider=item.provider,
        lane=item.lane,
        reason=f"idempotent replay of {ticket_id}" if replayed else item.reason,
        status=202,
        ticket_id=ticket_id,
        tolerance_s=_tolerance(item.created_ms, item.deadline_ms),
    )


def final(ticket: TicketFacts, outcome: Outcome, *, now_ms: int) -> tuple[Any, ...]:
    """The row for ``ticket`` (as it was before it ended) ending with ``outcome``, in the
    lane that served it."""
    error = outcome.error or {}
    status = _FINAL_STATUS.get(outcome.status)
    if status is None:
        status = 400 if error.get("type") == "invalid_request_error" else 502
    cost = outcome.cost or (None, None, None)
    return route_row(
        ts_ms=now_ms,
        request_id=ticket.request_id,
        key_name=ticket.key_name,
        endpoint=ticket.endpoint,
        model=ticket.model,
        provider=ticket.provider,
        lane=ticket.lane + (f"+{outcome.lane_suffix}" if outcome.lane_suffix else ""),
        reason=outcome.detail,
        status=status,
        error_code=error.get("code"),
        latency_ms=float(now_ms - ticket.created_ms),
        attempts=max(ticket.attempts, 1),
        prompt_tokens=outcome.prompt_tokens,
        completion_tokens=outcome.completion_tokens,
        cached_tokens=outcome.cached_tokens,
        cost_usd=cost[0],
        baseline_usd=cost[1],
        saved_usd=cost[2],
        ticket_id=ticket.id,
        tolerance_s=_tolerance(ticket.created_ms, ticket.deadline_ms),
    )


def _tolerance(created_ms: int, deadline_ms: int) -> int | None:
    return max(deadline_ms - created_ms, 0) // 1000 or None
