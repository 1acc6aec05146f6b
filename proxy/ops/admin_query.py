"""What the admin API and the ops page both read: query parameters of the listings, the
list envelope with its cursors, and the alerts that hold now.

Listing parameters (all optional)::

    since   a duration back from now (24h, 7d; at most 30d), 0 for all time, or Unix
            seconds
    after   an id: the page of older rows that follows it
    before  an id: the page of newer rows that precedes it (not with ``after``)
    limit   1..500, default 50

plus equality filters per listing (``lane``, ``model``, ``key``, ``status``, ...). A
bad value is a 400 naming the parameter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from proxy.context import Services
from proxy.durations import DurationError, parse_duration
from proxy.errors import BadRequest
from proxy.ops.alerts import Alert, Thresholds, evaluate
from proxy.store import admin as store
from proxy.store.jobs import BatchState, TicketStatus

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_TEXT = 200
# Unix seconds from here on are timestamps (2001-09-09), not a count of anything.
_EPOCH_FLOOR = 1_000_000_000
ROUTE_STATUS_WORDS = tuple(store.OUTCOMES)
TICKET_STATUSES = tuple(status.value for status in TicketStatus)
BATCH_STATUSES = tuple(state.value for state in BatchState)


@dataclass(frozen=True, slots=True)
class ListQuery:
    filters: dict[str, Any] = field(default_factory=dict)
    since_ms: int = 0
    after: str | None = None
    before: str | None = None
    limit: int = DEFAULT_LIMIT
    outcome: str | None = None  # routes only: "ok" or "failed"


def now_ms(services: Services) -> int:
    return int(services.clock.now() * 1000)


def since_ms(params: Mapping[str, str], now: int, default: str = "0") -> int:
    # An empty value (a form's "all time" choice) means the default.
    raw = (params.get("since") or "").strip() or default
    if raw.isdigit() and int(raw) >= _EPOCH_FLOOR:
        return int(raw) * 1000
    try:
        seconds = parse_duration(raw)
    except DurationError as exc:
        raise BadRequest(
            f"'since': {exc}; or Unix seconds, or 0 for all time.", param="since"
        ) from None
    return now - seconds * 1000 if seconds else 0


def text(params: Mapping[str, str], name: str) -> str | None:
    value = params.get(name)
    if value is None or value.strip() == "":
        return None
    if len(value) > MAX_TEXT:
        raise BadRequest(f"'{name}' is longer than {MAX_TEXT} characters.", param=name)
    return value.strip()


def limit(params: Mapping[str, str]) -> int:
    raw = params.get("limit")
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadRequest(f"'limit' must be an integer from 1 to {MAX_LIMIT}.", param="limit")
    return int(raw)


def _choices(params: Mapping[str, str], name: str, allowed: Sequence[str]) -> tuple[str, ...]:
    """A comma-separated list of allowed words (``status=failed,expired``)."""
    value = text(params, name)
    if value is None:
        return ()
    words = tuple(dict.fromkeys(word.strip() for word in value.split(",")))
    for word in words:
        if word not in allowed:
            raise BadRequest(f"'{name}' must be one of {', '.join(allowed)}.", param=name)
    return words


def _base(params: Mapping[str, str], now: int, names: Sequence[str]) -> ListQuery:
    after, before = text(params, "after"), text(params, "before")
    if after is not None and before is not None:
        raise BadRequest("Give 'after' or 'before', not both.", param="before")
    filters: dict[str, Any] = {}
    for name in names:
        value = text(params, name)
        if value is not None:
            filters[name] = value
    return ListQuery(filters, since_ms(params, now), after, before, limit(params))


def route_query(params: Mapping[str, str], now: int) -> ListQuery:
    """``status`` is an HTTP status (``429``) or ``ok`` / ``failed``."""
    query = _base(params, now, ("lane", "model", "key", "provider", "endpoint", "ticket"))
    for name in ("after", "before"):
        cursor = getattr(query, name)
        if cursor is not None and not cursor.isdigit():
            raise BadRequest(f"'{name}' must be a routing-log id (an integer).", param=name)
    status = text(params, "status")
    if status is None:
        return query
    if status in ROUTE_STATUS_WORDS:
        return _with(query, outcome=status)
    if not status.isdigit() or not 100 <= int(status) <= 599:
        raise BadRequest("'status' must be an HTTP status, 'ok' or 'failed'.", param="status")
    return _with(query, filters={**query.filters, "status": int(status)})


def ticket_query(params: Mapping[str, str], now: int) -> ListQuery:
    query = _base(params, now, ("lane", "model", "key", "provider", "batch"))
    statuses = _choices(params, "status", TICKET_STATUSES)
    return _with(query, filters={**query.filters, "status": statuses}) if statuses else query


def batch_query(params: Mapping[str, str], now: int) -> ListQuery:
    query = _base(params, now, ("provider", "model"))
    statuses = _choices(params, "status", BATCH_STATUSES)
    return _with(query, filters={**query.filters, "status": statuses}) if statuses else query


def _with(query: ListQuery, **changes: Any) -> ListQuery:
    values = {name: getattr(query, name) for name in ListQuery.__slots__}
    values.update(changes)
    return ListQuery(**values)


def envelope(
    request: Request, query: ListQuery, data: list[dict[str, Any]], has_more: bool
) -> dict[str, Any]:
    """The list object: ``next`` repeats the request one page further in the direction
    of travel (older for ``after`` or no cursor, newer for ``before``)."""
    first = data[0]["id"] if data else None
    last = data[-1]["id"] if data else None
    next_url = None
    if has_more and data:
        if query.before is not None:
            url = request.url.remove_query_params("after").include_query_params(before=first)
        else:
            url = request.url.remove_query_params("before").include_query_params(after=last)
        next_url = f"{url.path}?{url.query}"
    return {
        "object": "list",
        "data": data,
        "first_id": first,
        "last_id": last,
        "has_more": has_more,
        "next": next_url,
    }


async def current_alerts(services: Services, now: int) -> list[Alert]:
    facts = await store.alert_facts(services.db, now)
    return evaluate(facts, Thresholds.from_settings(services.settings), now)
