"""Tickets and batches as values, and the state tables that every change obeys.

Ticket (one deferred request)::

    queued ──▶ submitted ──▶ completed | failed
      │  ▲         │
      │  └─────────┘   retryable line failure / expired or cancelled batch / a batch that
      │                never reached the provider (attempts left)
      ├──▶ cancelled   (caller: the ticket API only while queued; a deferred Responses
      │                 call at any time before it ends, its late result then discarded)
      └──▶ realtime ──▶ completed | failed
    submitted ──▶ realtime   (deadline guard: a late batch result is then ignored)

``realtime`` means "being sent directly to the provider": the deadline guard's escalation
and the off-peak lane's release both use it. Callers see it as ``submitted``.

Batch (the local view of one provider batch job)::

    created ──▶ submitted ──▶ completed | failed | expired | cancelled
    created ──▶ failed        (the provider never accepted it; its tickets are requeued)

The local batch row is written, with its tickets claimed, before any upstream call, and
its id travels in the provider batch's metadata, so start-up reconciliation can adopt a
batch the provider accepted just before a crash instead of submitting it twice.

Every change is a conditional ``UPDATE ... WHERE id=? AND status=?`` (see
``proxy/store/tickets.py``) plus a ``ticket_events`` row; ``check_ticket`` and
``check_batch`` are the only judges of what is allowed.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import orjson


class TicketStatus(StrEnum):
    QUEUED = "queued"
    SUBMITTED = "submitted"
    REALTIME = "realtime"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in _TICKET_FINAL

    @property
    def public(self) -> str:
        """The status callers see: the caller contract has no ``realtime``."""
        return "submitted" if self is TicketStatus.REALTIME else self.value


_TICKET_FINAL = frozenset({TicketStatus.COMPLETED, TicketStatus.FAILED, TicketStatus.CANCELLED})

T = TicketStatus
TICKET_TRANSITIONS: frozenset[tuple[TicketStatus, TicketStatus]] = frozenset(
    {
        (T.QUEUED, T.SUBMITTED),
        (T.QUEUED, T.CANCELLED),
        (T.QUEUED, T.REALTIME),
        (T.SUBMITTED, T.QUEUED),
        (T.SUBMITTED, T.COMPLETED),
        (T.SUBMITTED, T.FAILED),
        (T.SUBMITTED, T.REALTIME),
        (T.SUBMITTED, T.CANCELLED),
        (T.REALTIME, T.COMPLETED),
        (T.REALTIME, T.FAILED),
        (T.REALTIME, T.CANCELLED),
    }
)


class BatchState(StrEnum):
    CREATED = "created"
    SUBMITTED = "submitted"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"

    @property
    def live(self) -> bool:
        return self in (BatchState.CREATED, BatchState.SUBMITTED)


B = BatchState
BATCH_TRANSITIONS: frozenset[tuple[BatchState, BatchState]] = frozenset(
    {
        (B.CREATED, B.SUBMITTED),
        (B.CREATED, B.FAILED),
        (B.SUBMITTED, B.COMPLETED),
        (B.SUBMITTED, B.FAILED),
        (B.SUBMITTED, B.EXPIRED),
        (B.SUBMITTED, B.CANCELLED),
    }
)


class TransitionError(ValueError):
    """A change the state table does not allow: a bug in the caller, never user input."""


def check_ticket(old: TicketStatus, new: TicketStatus) -> None:
    if (old, new) not in TICKET_TRANSITIONS:
        raise TransitionError(f"ticket: {old} -> {new} is not allowed")


def check_batch(old: BatchState, new: BatchState) -> None:
    if (old, new) not in BATCH_TRANSITIONS:
        raise TransitionError(f"batch: {old} -> {new} is not allowed")


def new_ticket_id() -> str:
    # 24 random bytes -> 32 URL-safe characters: unguessable, so ids can be shared.
    return "tkt_" + secrets.token_urlsafe(24)


def new_batch_id() -> str:
    return "cb_" + secrets.token_urlsafe(12)


@dataclass(frozen=True, slots=True)
class Ticket:
    """A ticket row without its request body (which only the flusher reads)."""

    id: str
    key_name: str
    request_id: str
    endpoint: str
    model: str
    provider: str
    upstream_model: str
    lane: str
    reason: str
    status: TicketStatus
    created_ms: int
    deadline_ms: int
    not_before_ms: int
    updated_ms: int
    attempts: int
    idempotency_key: str | None = None
    finished_ms: int | None = None
    batch_id: str | None = None
    callback_url: str | None = None
    # The provider's response body exactly as returned (completed tickets).
    result: bytes | None = None
    # The OpenAI error object (failed tickets).
    error: dict[str, Any] | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    cost_usd: float | None = None


class TicketFacts(Protocol):
    """What pricing, routing-log rows and webhooks read of a ticket that is about to
    end: a ``Ticket``, or the lighter row that batch ingest loads for each line."""

    @property
    def id(self) -> str: ...
    @property
    def key_name(self) -> str: ...
    @property
    def request_id(self) -> str: ...
    @property
    def endpoint(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def provider(self) -> str: ...
    @property
    def upstream_model(self) -> str: ...
    @property
    def lane(self) -> str: ...
    @property
    def created_ms(self) -> int: ...
    @property
    def deadline_ms(self) -> int: ...
    @property
    def attempts(self) -> int: ...
    @property
    def callback_url(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class NewTicket:
    """What enqueue writes; ``body`` is the exact upstream request body (JSON bytes)."""

    id: str
    key_name: str
    request_id: str
    idempotency_key: str | None
    endpoint: str
    model: str
    provider: str
    upstream_model: str
    lane: str
    reason: str
    body: bytes
    est_tokens: int
    created_ms: int
    deadline_ms: int
    not_before_ms: int
    callback_url: str | None
    # Requests the provider counts for this line (embedding inputs; 1 for chat).
    units: int = 1


@dataclass(frozen=True, slots=True)
class Batch:
    id: str
    provider: str
    model: str
    endpoint: str
    status: BatchState
    created_ms: int
    line_count: int
    bytes: int
    est_tokens: int
    provider_batch_id: str | None = None
    input_file_id: str | None = None
    submitted_ms: int | None = None
    next_poll_ms: int | None = None
    poll_failures: int = 0
    # The process holding the row's lease, and the epoch it holds it under.
    owner: str | None = None
    epoch: int = 0


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one ticket at a final-or-retry step (the scheduler's verdict)."""

    ticket_id: str
    status: TicketStatus  # COMPLETED, FAILED or QUEUED (retry)
    result: bytes | None = None
    error: dict[str, Any] | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    detail: str = ""
    # (actual, baseline, saved) in USD, for completed work the pricer knows.
    cost: tuple[float, float, float] | None = None
    # "cache" when the work used a managed provider cache: the routing log shows the
    # lane as ``<lane>+cache`` and prices it so (the ticket's own lane stays put).
    lane_suffix: str | None = None
    # A cost on top of the tokens' (Anthropic cache-write premiums), in USD.
    cache_storage_usd: float = 0.0


def ticket_object(ticket: Ticket) -> dict[str, Any]:
    """The public JSON of a ticket. ``result`` is spliced in as the provider's bytes."""
    data: dict[str, Any] = {
        "id": ticket.id,
        "object": "ticket",
        "status": ticket.status.public,
        "model": ticket.model,
        "lane": ticket.lane,
        "created_at": ticket.created_ms // 1000,
        "deadline": ticket.deadline_ms // 1000,
        "attempts": ticket.attempts,
    }
    if ticket.not_before_ms:
        data["not_before"] = ticket.not_before_ms // 1000
    if ticket.finished_ms is not None:
        data["finished_at"] = ticket.finished_ms // 1000
    if ticket.status is TicketStatus.COMPLETED and ticket.result is not None:
        data["result"] = orjson.Fragment(ticket.result)
    if ticket.status is TicketStatus.FAILED:
        data["error"] = ticket.error
    return data
