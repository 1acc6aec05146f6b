"""The deferral queue's request side: accepting a deferred request as a ticket (the 202
path), waking long-polls when a ticket ends, and sending a ticket directly when the
deadline guard or a price window says so.

Enqueue writes through a ``GroupCommit``: concurrent requests share one commit, and each
202 is sent only after its own row is durable. The ``Idempotency-Key`` is a unique index
``(key_name, idempotency_key)``, so a repeated key returns the first ticket, whichever
replica wrote it.

Long-polls wait in the process that holds the request. A ticket that ends in this process
wakes them directly; on a shared database (PostgreSQL) every commit that ends tickets is
also announced on the ``costroute_final`` channel (LISTEN/NOTIFY), so a long-poll on
another replica wakes within milliseconds. A notification can be missed (the listening
connection dropped), so waiters also re-read their ticket every ``FALLBACK_S`` seconds,
and every ``0.5`` s while the listener is reconnecting.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from starlette.responses import Response

from adapters.base import Reply, ResponsesAdapter
from adapters.errors import AdapterError
from adapters.registry import capabilities
from adapters.wire import Usage
from proxy.context import Caller, Services
from proxy.deferral.batchfiles import upstream_body, usage_of
from proxy.deferral.webhooks import callback_url
from proxy.errors import InvalidHeader
from proxy.lanes.planner import Decision
from proxy.lanes.realtime import call_with_retries
from proxy.store import route_rows
from proxy.store import tickets as store
from proxy.store.db import Conn, GroupCommit
from proxy.store.jobs import (
    NewTicket,
    Outcome,
    Ticket,
    TicketFacts,
    TicketStatus,
    new_ticket_id,
    ticket_object,
)

log = logging.getLogger(__name__)

FINAL_CHANNEL = "costroute_final"
# Under PostgreSQL's 8,000-byte limit on a payload; more ids go as "check your waiters".
_PAYLOAD_MAX = 7_900
# A waiter re-reads its ticket this often even when no notification came (seconds).
FALLBACK_S = 5.0
_FALLBACK_OFFLINE_S = 0.5

IDEMPOTENCY_HEADER = "Idempotency-Key"
TICKET_HEADER = "X-Costroute-Ticket"
_MAX_IDEMPOTENCY_KEY = 255


def ticket_response(ticket: Ticket, status: int = 200, **headers: str) -> Response:
    return Response(
        orjson.dumps(ticket_object(ticket)),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def idempotency_key(headers: Mapping[str, str]) -> str | None:
    raw = headers.get(IDEMPOTENCY_HEADER.lower())
    if raw is None:
        return None
    if not 0 < len(raw) <= _MAX_IDEMPOTENCY_KEY or not all(33 <= ord(c) <= 126 for c in raw):
        raise InvalidHeader(
            IDEMPOTENCY_HEADER, f"use 1 to {_MAX_IDEMPOTENCY_KEY} visible ASCII characters"
        )
    return raw


class Deferral:
    """The ticket writer and the long-poll waiters. One per process, in
    ``services.extras["deferral"]``, installed by ``proxy.deferral.scheduler.Scheduler``."""

    def __init__(self, services: Services, *, webhooks_enabled: bool) -> None:
        self._services = services
        self.webhooks_enabled = webhooks_enabled
        self._writer: GroupCommit[NewTicket, str] = GroupCommit(
            services.db, _insert, max_items=1024, name="tickets"
        )
        self._waiters: dict[str, list[asyncio.Event]] = {}
        self._started = False
        self._background: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        if not self._started:
            self._writer.start()
            self._started = True

    async def stop(self) -> None:
        if self._started:
            await self._writer.stop()
            self._started = False
        for task in list(self._background):
            task.cancel()

    async def listen(self) -> None:
        """On a shared database: hear which tickets other replicas ended."""
        db = self._services.db
        if db.shared:
            await db.listen(FINAL_CHANNEL, self._heard)

    def _spawn(self, work: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def announce(self, ticket_ids: list[str]) -> None:
        """Tell the other replicas (after the commit that ended these tickets)."""
        db = self._services.db
        if not db.shared or not ticket_ids:
            return
        payload = ",".join(ticket_ids)
        self._spawn(_notify(db, payload if len(payload) <= _PAYLOAD_MAX else ""))

    def _heard(self, payload: str) -> None:
        if not self._waiters:
            return
        if payload:
            self.notify([i for i in payload.split(",") if i in self._waiters])
        else:
            self._spawn(self._recheck())

    async def _recheck(self) -> None:
        """Wake the waiters whose tickets have ended (after a notification too large to
        name them, or a reconnect of the listener)."""
        ended = await store.final_among(self._services.db, list(self._waiters))
        self.notify(ended)

    async def enqueue(
        self,
        services: Services,
        caller: Caller,
        *,
        endpoint: str,
        model: str,
        body: dict[str, Any],
        decision: Decision,
        headers: Mapping[str, str],
        request_id: str,
    ) -> Response:
        """Validate the deferral headers, commit the ticket, answer 202."""
        ticket, replayed = await self.commit(
            services,
            caller,
            endpoint=endpoint,
            model=model,
            body=body,
            decision=decision,
            headers=headers,
            request_id=request_id,
        )
        extra = {"Idempotent-Replayed": "true"} if replayed else {}
        return ticket_response(
            ticket,
            202,
            Location=f"/v1/tickets/{ticket.id}",
            **{TICKET_HEADER: ticket.id, "x-costroute-lane": ticket.lane},
            **extra,
        )

    async def commit(
        self,
        services: Services,
        caller: Caller,
        *,
        endpoint: str,
        model: str,
        body: dict[str, Any],
        decision: Decision,
        headers: Mapping[str, str],
        request_id: str,
    ) -> tuple[Ticket, bool]:
        """Commit the ticket (durable when this returns): the ticket as answered, and
        whether an ``Idempotency-Key`` replayed an earlier one."""
        key = idempotency_key(headers)
        callback = callback_url(headers, services.settings.webhooks, enabled=self.webhooks_enabled)
        now = services.clock.now()
        now_ms = int(now * 1000)
        upstream = upstream_body(body, decision.upstream_model)
        deadline = decision.deadline if decision.deadline is not None else now
        item = NewTicket(
            id=new_ticket_id(),
            key_name=caller.name,
            request_id=request_id,
            idempotency_key=key,
            endpoint=endpoint,
            model=model,
            provider=decision.provider,
            upstream_model=decision.upstream_model,
            lane=decision.lane.value,
            reason=decision.reason,
            body=upstream,
            # About four bytes of JSON per prompt token: the budget only needs a bound.
            est_tokens=len(upstream) // 4,
            created_ms=now_ms,
            deadline_ms=int(deadline * 1000),
            not_before_ms=int((decision.not_before or 0) * 1000),
            callback_url=callback,
            units=_units(endpoint, body),
        )
        self.start()
        ticket_id = await self._writer.submit(item)
        replayed = ticket_id != item.id
        # A new ticket is answered from what was written; a replay shows the first
        # ticket as it is now.
        ticket = await store.get_ticket(services.db, ticket_id) if replayed else _queued(item)
        assert ticket is not None  # committed before submit returned
        return ticket, replayed

    # --- long-poll ---------------------------------------------------------------------

    def notify(self, ticket_ids: Iterable[str]) -> None:
        for ticket_id in ticket_ids:
            for event in self._waiters.pop(ticket_id, ()):
                event.set()

    async def wait_final(self, ticket_id: str, key_name: str, wait: float) -> Ticket | None:
        """The caller's ticket once final, or as it is after ``wait`` seconds."""
        db = self._services.db
        ticket = await store.get_owned(db, ticket_id, key_name)
        if ticket is None or ticket.status.final or wait <= 0:
            return ticket
        event = asyncio.Event()
        self._waiters.setdefault(ticket_id, []).append(event)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        try:
            # Re-read after registering, so a change between the two reads is not missed.
            ticket = await store.get_owned(db, ticket_id, key_name)
            if ticket is None or ticket.status.final:
                return ticket
            while (left := deadline - loop.time()) > 0:
                step = left
                if db.shared:
                    step = min(left, FALLBACK_S if db.listening else _FALLBACK_OFFLINE_S)
                try:
                    await asyncio.wait_for(event.wait(), step)
                    break
                except TimeoutError:
                    if not db.shared:
                        break
                ticket = await store.get_owned(db, ticket_id, key_name)
                if ticket is None or ticket.status.final:
                    return ticket
            return await store.get_owned(db, ticket_id, key_name)
        finally:
            waiting = self._waiters.get(ticket_id)
            if waiting is not None and event in waiting:
                waiting.remove(event)
                if not waiting:
                    del self._waiters[ticket_id]


async def _insert(conn: Conn, items: list[NewTicket]) -> list[str]:
    # Each request's 202 row in the routing log commits with its ticket.
    return await store.insert_tickets(conn, items, route=route_rows.accepted)


def _queued(item: NewTicket) -> Ticket:
    return Ticket(
        id=item.id,
        key_name=item.key_name,
        request_id=item.request_id,
        endpoint=item.endpoint,
        model=item.model,
        provider=item.provider,
        upstream_model=item.upstream_model,
        lane=item.lane,
        reason=item.reason,
        status=TicketStatus.QUEUED,
        created_ms=item.created_ms,
        deadline_ms=item.deadline_ms,
        not_before_ms=item.not_before_ms,
        updated_ms=item.created_ms,
        attempts=0,
        idempotency_key=item.idempotency_key,
        callback_url=item.callback_url,
    )


def _units(endpoint: str, body: Mapping[str, Any]) -> int:
    """Requests the provider counts for one line: an embeddings input list counts each
    text (or token array); a single token array (a list of ints) counts once."""
    given = body.get("input")
    if not endpoint.endswith("/embeddings") or not isinstance(given, list) or not given:
        return 1
    return 1 if all(isinstance(item, int) for item in given) else len(given)


def deferral_of(services: Services) -> Deferral:
    found = services.extras.get("deferral")
    if not isinstance(found, Deferral):
        raise RuntimeError("the deferral queue is not installed (Scheduler(services) does it)")
    return found


# --- final states --------------------------------------------------------------------


def finalized(services: Services, ticket_ids: Iterable[str]) -> None:
    """After a commit that ended tickets: wake their long-polls. (Their routing-log rows
    and webhooks were written in that same commit.)"""
    found = services.extras.get("deferral")
    if isinstance(found, Deferral):
        ids = list(ticket_ids)
        found.notify(ids)
        found.announce(ids)


async def _notify(db: Any, payload: str) -> None:
    try:
        await db.notify(FINAL_CHANNEL, payload)
    except Exception as exc:  # waiters elsewhere fall back to re-reading
        log.warning("could not announce ended tickets: %s", exc)


def priced(services: Services, ticket: TicketFacts, outcome: Outcome) -> Outcome:
    """``outcome`` with its cost in the lane that served ``ticket``: the baseline is what
    real time would have cost when the caller asked (``received_at``)."""
    pricer = services.extras.get("pricer")
    if pricer is None or outcome.status is not TicketStatus.COMPLETED:
        return outcome
    provider = services.settings.providers.get(ticket.provider)
    if outcome.prompt_tokens is None or provider is None:  # a provider since unconfigured
        return outcome
    usage = Usage(
        prompt_tokens=outcome.prompt_tokens,
        completion_tokens=outcome.completion_tokens or 0,
        cached_tokens=outcome.cached_tokens or 0,
    )
    result = pricer.cost(
        provider_type=provider.type,
        provider=ticket.provider,
        model=ticket.upstream_model,
        usage=usage,
        lane=ticket.lane + (f"+{outcome.lane_suffix}" if outcome.lane_suffix else ""),
        at=services.clock.now(),
        received_at=ticket.created_ms / 1000,
        cache_storage_usd=outcome.cache_storage_usd,
    )
    if result is None:
        return outcome
    return dataclasses.replace(outcome, cost=(result.actual, result.baseline, result.saved))


# --- direct sends (deadline guard, price windows) -------------------------------------


async def send_direct(services: Services, ticket: Ticket, body: bytes) -> bool:
    """Send a ``realtime`` ticket now with the real-time retry policy and finish it.
    False if the ticket had already moved on (another process finished it)."""
    adapter = services.chat.get(ticket.provider)
    if adapter is None:
        message = f"no adapter for provider {ticket.provider}"
        error = {"message": message, "type": "server_error", "param": None, "code": None}
        failed = Outcome(ticket.id, TicketStatus.FAILED, error=error, detail=message)
        return await _finish(services, ticket, failed)
    request = orjson.loads(body)
    endpoint = ticket.endpoint
    provider = services.settings.providers.get(ticket.provider)
    native = provider is not None and capabilities(provider.type).responses

    async def call() -> Reply:
        if endpoint.endswith("/embeddings"):
            return await adapter.embed(request, headers={})
        if endpoint.endswith("/responses") and isinstance(adapter, ResponsesAdapter) and native:
            return await adapter.respond(request, headers={})
        return await adapter.complete(request, headers={})

    try:
        reply, attempts = await call_with_retries(
            call, services.settings.retry, sleep=services.sleep
        )
    except AdapterError as exc:
        tries = int(getattr(exc, "attempts", 1) or 1)
        log.warning("ticket %s: direct send failed: %s", ticket.id, exc.message)
        detail = f"direct send failed after {tries} attempt(s)"
        failed = Outcome(ticket.id, TicketStatus.FAILED, error=exc.error_object(), detail=detail)
        return await _finish(services, ticket, failed, attempts=tries)
    usage = usage_of(reply.parsed if reply.parsed is not None else _parse(reply.body))
    outcome = Outcome(
        ticket.id,
        TicketStatus.COMPLETED,
        result=reply.body,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cached_tokens=usage.cached_tokens,
        detail=f"sent directly ({ticket.lane})",
    )
    return await _finish(services, ticket, priced(services, ticket, outcome), attempts=attempts)


async def _finish(
    services: Services, ticket: Ticket, outcome: Outcome, *, attempts: int = 1
) -> bool:
    now_ms = int(services.clock.now() * 1000)
    tried = dataclasses.replace(ticket, attempts=ticket.attempts + attempts)
    async with services.db.transaction() as conn:
        done = await store.finish(
            conn,
            ticket,
            outcome.status,
            now_ms=now_ms,
            detail=outcome.detail,
            result=outcome.result,
            error=outcome.error,
            usage=(outcome.prompt_tokens, outcome.completion_tokens, outcome.cached_tokens),
            cost=outcome.cost,
            attempts_delta=attempts,
            route=route_rows.final(tried, outcome, now_ms=now_ms),
        )
    if done:
        finalized(services, [ticket.id])
    return done


def _parse(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
