"""Admin HTTP API (admin keys only), all JSON, lists newest first with cursors:

- ``GET /admin/routes``: the routing log; filters ``since``, ``lane``, ``model``, ``key``,
  ``provider``, ``endpoint``, ``ticket``, ``status`` (an HTTP status, ``ok`` or ``failed``).
- ``GET /admin/tickets``: every key's tickets (no bodies, no results); filters ``since``,
  ``status`` (comma-separated, internal names incl. ``realtime``), ``lane``, ``model``,
  ``key``, ``provider``, ``batch``.
- ``GET /admin/batches``: local batches with line counts, age and provider ids; filters
  ``since``, ``status``, ``provider``, ``model``.
- ``GET /admin/report``: ``costroute report`` as JSON (``since``, default 7d; ``by``,
  default lane) plus ``alerts`` and ``queue``.

Paging and parameters are described in ``proxy.ops.admin_query``. Client keys appear by name
only; provider keys are never read here. A callback URL is shown as its host alone (its
path or query may hold the receiver's token). ``admin_routes`` also returns the ops page
routes, which authenticate themselves (bearer header or session cookie).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from proxy.auth import require_admin
from proxy.context import Caller, Services
from proxy.costs.pricing import Pricer
from proxy.costs.reports import GROUPINGS, build_report, with_best
from proxy.deferral.userbatch import batch_object as batch_view
from proxy.errors import BadRequest
from proxy.ops import admin_query as q
from proxy.ops.alerts import host_of
from proxy.ops.fleet import read_your_writes
from proxy.ops.page import page_routes
from proxy.store import admin as store
from proxy.store import userfiles
from proxy.store.reports import queue_gauges

Endpoint = Callable[[Request], Awaitable[Response]]
Wrap = Callable[[str, Endpoint], Endpoint]


def _admin(request: Request) -> Services:
    caller: Caller = request.state.caller
    require_admin(caller)
    services: Services = request.app.state.services
    return services


async def _admin_read(request: Request) -> Services:
    """An admin read: it sees every request that finished before it was asked, on any
    replica (``proxy.ops.fleet``)."""
    services = _admin(request)
    await read_your_writes(services)
    return services


def _json(body: object) -> Response:
    return Response(
        orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS),
        media_type="application/json",
        headers={"cache-control": "no-store"},
    )


def _cursor_error(query: q.ListQuery, what: str) -> BadRequest:
    name = "after" if query.after is not None else "before"
    return BadRequest(f"'{name}' names no {what}: '{getattr(query, name)}'.", param=name)


def _loads(raw: Any) -> Any:
    if raw is None:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return str(raw)


def route_object(row: dict[str, Any]) -> dict[str, Any]:
    return {"object": "route", **row, "stream": bool(row["stream"])}


def ticket_admin_object(row: dict[str, Any]) -> dict[str, Any]:
    out = {"object": "ticket", **row}
    url = out.pop("callback_url")
    out["callback_host"] = None if url is None else host_of(url)
    out["error"] = _loads(row["error"])
    out["idempotent"] = bool(row["idempotent"])
    return out


def batch_object(row: dict[str, Any], now_ms: int) -> dict[str, Any]:
    out = {"object": "batch", **row, "errors": _loads(row["errors"])}
    started = row["submitted_ms"] or row["created_ms"]
    ended = row["finished_ms"] if row["finished_ms"] is not None else now_ms
    out["age_s"] = max(now_ms - row["created_ms"], 0) // 1000
    out["running_s"] = max(ended - started, 0) // 1000
    live = row["status"] in ("created", "submitted")
    done = row["completed_lines"] + row["failed_lines"]
    out["pending_lines"] = max(row["line_count"] - done, 0) if live else 0
    return out


async def list_routes(request: Request) -> Response:
    """The routing log, newest first (admin keys only)."""
    services = await _admin_read(request)
    query = q.route_query(request.query_params, q.now_ms(services))
    rows, more = await store.list_routes(
        services.db,
        filters=query.filters,
        outcome=query.outcome,
        since_ms=query.since_ms,
        after=None if query.after is None else int(query.after),
        before=None if query.before is None else int(query.before),
        limit=query.limit,
    )
    return _json(q.envelope(request, query, [route_object(r) for r in rows], more))


async def list_tickets(request: Request) -> Response:
    """Every key's tickets, newest first (admin keys only)."""
    services = await _admin_read(request)
    query = q.ticket_query(request.query_params, q.now_ms(services))
    try:
        rows, more = await store.list_tickets(
            services.db,
            filters=query.filters,
            since_ms=query.since_ms,
            after=query.after,
            before=query.before,
            limit=query.limit,
        )
    except store.UnknownCursor:
        raise _cursor_error(query, "ticket") from None
    return _json(q.envelope(request, query, [ticket_admin_object(r) for r in rows], more))


async def list_batches(request: Request) -> Response:
    """Local batches with line counts, age and provider ids (admin keys only)."""
    services = await _admin_read(request)
    now = q.now_ms(services)
    query = q.batch_query(request.query_params, now)
    try:
        rows, more = await store.list_batches(
            services.db,
            filters=query.filters,
            since_ms=query.since_ms,
            after=query.after,
            before=query.before,
            limit=query.limit,
        )
    except store.UnknownCursor:
        raise _cursor_error(query, "batch") from None
    return _json(q.envelope(request, query, [batch_object(r, now) for r in rows], more))


async def list_user_batches(request: Request) -> Response:
    """Every key's batches of costroute's own Batch API, newest first (admin keys only):
    ``limit`` (1-100, default 20), ``after`` (a batch id)."""
    services = await _admin_read(request)
    limit = request.query_params.get("limit", "20")
    if not limit.isdigit() or not 1 <= int(limit) <= 100:
        raise BadRequest("Invalid 'limit': expected 1 to 100.", param="limit")
    rows = await userfiles.list_batches(
        services.db, None, limit=int(limit) + 1, after=request.query_params.get("after")
    )
    page = rows[: int(limit)]
    data = []
    for batch in page:
        item = batch_view(batch, await userfiles.line_counts(services.db, batch.id))
        item["key_name"] = batch.key_name
        data.append(item)
    return _json({"object": "list", "data": data, "has_more": len(rows) > len(page)})


async def report(request: Request) -> Response:
    """Requests, cost and savings grouped, with alerts and the queue (admin keys only)."""
    services = await _admin_read(request)
    now = q.now_ms(services)
    since = q.since_ms(request.query_params, now, default="7d")
    by = request.query_params.get("by", "lane")
    if by not in GROUPINGS:
        raise BadRequest(f"'by' must be one of {', '.join(GROUPINGS)}.", param="by")
    built = await build_report(services.db, since_ms=since, by=by, now_ms=now)
    pricer = services.extras.get("pricer")
    if isinstance(pricer, Pricer):
        built = await with_best(services.db, built, services.settings, pricer)
    gauges = await queue_gauges(services.db)
    alerts = await q.current_alerts(services, now)
    body = {
        "object": "report",
        **built.as_dict(),
        "alerts": [alert.as_dict() for alert in alerts],
        "queue": {
            "tickets": gauges.depth,
            "oldest_queued_age_s": None
            if gauges.oldest_queued_ms is None
            else max(now - gauges.oldest_queued_ms, 0) // 1000,
            "active_batches": gauges.active_batches,
        },
    }
    return _json(body)


def admin_routes(wrap: Wrap) -> list[BaseRoute]:
    """The admin JSON API behind ``wrap`` (bearer authentication into
    ``request.state.caller``, error rendering), then the ops page routes, which must not
    be wrapped: a browser logs in with a form and a session cookie, not a header."""
    return [
        Route("/admin/routes", wrap("/admin/routes", list_routes), methods=["GET"]),
        Route("/admin/tickets", wrap("/admin/tickets", list_tickets), methods=["GET"]),
        Route("/admin/batches", wrap("/admin/batches", list_batches), methods=["GET"]),
        Route(
            "/admin/user-batches",
            wrap("/admin/user-batches", list_user_batches),
            methods=["GET"],
        ),
        Route("/admin/report", wrap("/admin/report", report), methods=["GET"]),
        *page_routes(),
    ]
