"""HTTP handlers for tickets and the admin flush.

- ``GET /v1/tickets/{id}[?wait=N]``: the caller's ticket; ``wait`` (0-60 s) long-polls
  until a final status, woken in-process when the ticket ends (no busy polling).
- ``POST /v1/tickets/{id}/cancel``: cancel a queued ticket (409 once submitted).
- ``GET /v1/tickets?status=&limit=&after=``: the caller's tickets, newest first.
- ``POST /admin/flush``: every batch queue now (admin keys only).

A ticket belongs to the key that created it; any other key gets 404, never 403, so ids
cannot be probed. Handlers raise ``proxy.errors``; the app renders them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.context import Caller, Services
from proxy.deferral.queue import deferral_of, finalized, ticket_response
from proxy.deferral.scheduler import flush_now
from proxy.errors import BadRequest, Conflict, Forbidden, NotFound
from proxy.store import route_rows
from proxy.store import tickets as store
from proxy.store.jobs import Outcome, TicketStatus, ticket_object

Endpoint = Callable[[Request], Awaitable[Response]]
# How the app puts its authentication (and error rendering) around a handler.
Wrap = Callable[[str, Endpoint], Endpoint]

MAX_WAIT = 60
MAX_LIMIT = 100
# Public status names and the internal states each covers.
_STATUS_FILTER = {
    "queued": ("queued",),
    "submitted": ("submitted", "realtime"),
    "completed": ("completed",),
    "failed": ("failed",),
    "cancelled": ("cancelled",),
}


def _context(request: Request) -> tuple[Services, Caller]:
    services: Services = request.app.state.services
    caller: Caller = request.state.caller
    return services, caller


def _not_found(ticket_id: str) -> NotFound:
    return NotFound(f"No ticket found with id '{ticket_id}'.", param="id")


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"'{name}' must be an integer.", param=name) from None
    if not low <= value <= high:
        raise BadRequest(f"'{name}' must be between {low} and {high}.", param=name)
    return value


async def get_ticket(request: Request) -> Response:
    services, caller = _context(request)
    ticket_id = request.path_params["ticket_id"]
    wait = _int_param(request, "wait", 0, 0, MAX_WAIT)
    ticket = await deferral_of(services).wait_final(ticket_id, caller.name, wait)
    if ticket is None:
        raise _not_found(ticket_id)
    return ticket_response(ticket)


async def cancel_ticket(request: Request) -> Response:
    services, caller = _context(request)
    ticket_id = request.path_params["ticket_id"]
    now_ms = int(services.clock.now() * 1000)
    cancelled = Outcome(ticket_id, TicketStatus.CANCELLED, detail="cancelled by caller")
    moved = await store.cancel(
        services.db,
        ticket_id,
        caller.name,
        now_ms,
        route=lambda before: route_rows.final(before, cancelled, now_ms=now_ms),
    )
    if moved is not None:
        finalized(services, [moved.id])
    ticket = await store.get_owned(services.db, ticket_id, caller.name)
    if ticket is None:
        raise _not_found(ticket_id)
    if ticket.status is not TicketStatus.CANCELLED:
        state = ticket.status.public
        message = f"Ticket '{ticket_id}' is {state}; only queued tickets can be cancelled."
        raise Conflict(message, param="id")
    return ticket_response(ticket)


async def list_tickets(request: Request) -> Response:
    services, caller = _context(request)
    limit = _int_param(request, "limit", 20, 1, MAX_LIMIT)
    status = request.query_params.get("status")
    statuses: tuple[str, ...] = ()
    if status is not None:
        if status not in _STATUS_FILTER:
            raise BadRequest(
                f"'status' must be one of {', '.join(_STATUS_FILTER)}.", param="status"
            )
        statuses = _STATUS_FILTER[status]
    after_id = request.query_params.get("after")
    after = None
    if after_id is not None:
        after = await store.get_owned(services.db, after_id, caller.name)
        if after is None:
            raise BadRequest(f"'after' names no ticket of yours: '{after_id}'.", param="after")
    found, more = await store.list_owned(
        services.db, caller.name, statuses=statuses, limit=limit, after=after
    )
    data = [ticket_object(ticket) for ticket in found]
    body = {
        "object": "list",
        "data": data,
        "first_id": found[0].id if found else None,
        "last_id": found[-1].id if found else None,
        "has_more": more,
    }
    return _json(body)


async def admin_flush(request: Request) -> Response:
    services, caller = _context(request)
    if not caller.admin:
        raise Forbidden("Flushing the queues needs an admin key.")
    summary = await flush_now(services)
    return _json(summary.to_json())


def _json(body: object) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


def _plain(name: str, handler: Endpoint) -> Endpoint:
    return handler


def ticket_routes(wrap: Wrap = _plain) -> list[Route]:
    """The ticket routes; ``wrap(name, handler)`` must authenticate the caller into
    ``request.state.caller`` and render ``ProxyError``s (the app's wrapper does)."""
    return [
        Route("/v1/tickets", wrap("/v1/tickets", list_tickets), methods=["GET"]),
        Route("/v1/tickets/{ticket_id}", wrap("/v1/tickets", get_ticket), methods=["GET"]),
        Route(
            "/v1/tickets/{ticket_id}/cancel",
            wrap("/v1/tickets/cancel", cancel_ticket),
            methods=["POST"],
        ),
    ]


def admin_flush_route(wrap: Wrap = _plain) -> Route:
    return Route("/admin/flush", wrap("/admin/flush", admin_flush), methods=["POST"])
