"""``GET /admin``: the ops page, server-rendered HTML with no script at all.

Alerts, savings by day (an inline SVG bar chart of the last 14 days) with savings
realised against the theoretical best over the last 24 hours, the queue and the
newest batches, and the routing log with filters (a plain GET form: ``since``, ``lane``,
``model``, ``key``, ``provider``, ``status``, as in ``GET /admin/routes``) and cursor
links. Every value from the database is HTML-escaped; keys appear by name only.
Authentication and the login form are in ``proxy.ops.signin``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from proxy.context import Services
from proxy.costs.pricing import Pricer
from proxy.costs.realised import from_log
from proxy.costs.reports import best_line, build_report
from proxy.lanes.planner import Lane
from proxy.ops import admin_query as q
from proxy.ops.alerts import Alert, human_duration
from proxy.ops.fleet import read_your_writes
from proxy.ops.signin import (
    PageAuth,
    authenticate_page,
    html_page,
    login,
    login_form,
    logout,
    page_endpoint,
    template,
)
from proxy.store import admin as store
from proxy.store.reports import queue_gauges

CHART_DAYS = 14
LOG_LIMIT = 50
BATCH_LIMIT = 10
_DAY_MS = 86_400_000
SINCE_CHOICES = (("", "all time"), ("1h", "1 hour"), ("24h", "24 hours"), ("7d", "7 days"),
                 ("30d", "30 days"))  # fmt: skip
FILTER_FIELDS = ("lane", "model", "key", "provider", "status")


def money(value: float | None) -> str:
    if value is None:
        return "–"
    sign = "-" if value < 0 else ""
    amount = abs(value)
    return f"{sign}${amount:,.2f}" if amount >= 1 or amount == 0 else f"{sign}${amount:.4f}"


def when(ms: int | None) -> str:
    if ms is None:
        return "–"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _cell(value: Any, cls: str = "") -> str:
    text = "–" if value is None else escape(str(value))
    return f'<td class="{cls}">{text}</td>' if cls else f"<td>{text}</td>"


def _table(headers: Iterable[str], rows: list[str], empty: str, table_id: str) -> str:
    if not rows:
        return f'<p class="muted" id="{table_id}-empty">{escape(empty)}</p>'
    head = "".join(
        f'<th class="num">{escape(h[1:])}</th>' if h.startswith("#") else f"<th>{escape(h)}</th>"
        for h in headers
    )
    return (
        f'<table id="{table_id}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def render_alerts(alerts: list[Alert]) -> str:
    if not alerts:
        return (
            '<p class="none" id="no-alerts">'
            "No alerts: batches, queues and webhooks are healthy.</p>"
        )
    items = "".join(
        f'<li class="{a.severity.value}" data-kind="{a.kind.value}">'
        f'<span class="sev">{a.severity.value}</span>{escape(a.message)}</li>'
        for a in alerts
    )
    return f'<ul class="alerts">{items}</ul>'


def savings_chart(days: list[tuple[str, float, float, float]]) -> str:
    """``days``: (YYYY-MM-DD, savings, cost, baseline), oldest first. Bars grow up for
    savings and down (red) for overspend; each bar has a tooltip."""
    width, height, left, bottom, top = 640, 200, 56, 24, 12
    plot_h = height - bottom - top
    high = max([0.0, *(d[1] for d in days)])
    low = min([0.0, *(d[1] for d in days)])
    span = (high - low) or 1.0
    zero_y = top + plot_h * high / span
    step = (width - left - 8) / max(len(days), 1)
    parts = [
        f'<svg id="savings-chart" role="img" aria-labelledby="savings-chart-title" '
        f'viewBox="0 0 {width} {height}" width="100%" preserveAspectRatio="xMidYMid meet">',
        '<title id="savings-chart-title">Savings by day, USD</title>',
        f'<line x1="{left}" x2="{width - 8}" y1="{zero_y:.1f}" y2="{zero_y:.1f}" '
        'stroke="#8792a8" stroke-width="1"/>',
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end" fill="#5d6678">'
        f"{escape(money(high))}</text>",
        f'<text x="{left - 6}" y="{zero_y + 4:.1f}" text-anchor="end" fill="#5d6678">$0</text>',
    ]
    if low < 0:
        parts.append(
            f'<text x="{left - 6}" y="{top + plot_h:.1f}" text-anchor="end" fill="#5d6678">'
            f"{escape(money(low))}</text>"
        )
    for index, (day, saved, cost, baseline) in enumerate(days):
        x = left + index * step + step * 0.15
        bar_h = abs(saved) / span * plot_h
        y = zero_y - bar_h if saved >= 0 else zero_y
        colour = "#1b8a4b" if saved >= 0 else "#c0312b"
        tip = f"{day}: saved {money(saved)} (cost {money(cost)}, list price {money(baseline)})"
        parts.append(
            f'<rect class="bar" data-day="{day}" x="{x:.1f}" y="{y:.1f}" '
            f'width="{step * 0.7:.1f}" height="{max(bar_h, 0.5):.1f}" fill="{colour}">'
            f"<title>{escape(tip)}</title></rect>"
        )
        if (len(days) - 1 - index) % 2 == 0:  # every other day, always the last
            parts.append(
                f'<text x="{x + step * 0.35:.1f}" y="{height - 6}" text-anchor="middle" '
                f'fill="#5d6678">{day[5:]}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


async def _savings(services: Services, now: int) -> str:
    today = datetime.fromtimestamp(now / 1000, UTC).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    first = today - timedelta(days=CHART_DAYS - 1)
    report = await build_report(
        services.db, since_ms=int(first.timestamp() * 1000), by="day", now_ms=now
    )
    by_day = {row.group: row for row in report.rows}
    days = []
    for offset in range(CHART_DAYS):
        day = (first + timedelta(days=offset)).strftime("%Y-%m-%d")
        row = by_day.get(day)
        days.append((day, row.savings, row.cost, row.baseline) if row else (day, 0.0, 0.0, 0.0))
    total = report.total
    summary = (
        f'<p id="savings-total">Saved <b>{escape(money(total.savings))}</b> in the last '
        f"{CHART_DAYS} days: {total.requests:,} requests cost {escape(money(total.cost))} "
        f"against {escape(money(total.baseline))} at list price in real time.</p>"
    )
    legend = (
        '<p class="muted">Green: saved against the list price in real time; red: overspent '
        "(a cache whose storage did not pay off). Hover a bar for the day's figures.</p>"
    )
    return summary + await _best(services, now) + savings_chart(days) + legend


async def _best(services: Services, now: int) -> str:
    """Savings realised against the best possible, over the last day only: the best is
    worked out per request from the routing log, on every page load."""
    pricer = services.extras.get("pricer")
    if not isinstance(pricer, Pricer):
        return ""
    found, _ = await from_log(
        services.db, services.settings, pricer, since_ms=now - _DAY_MS, until_ms=now + 1
    )
    return (
        f'<p id="savings-best">Last 24 hours. {escape(best_line(found))} '
        '<span class="muted">Any period: <code>costroute report --since 30d</code> or '
        "<code>GET /admin/report</code>.</span></p>"
    )


async def _queue(services: Services, now: int) -> str:
    gauges = await queue_gauges(services.db)
    stats = [
        (gauges.depth.get(status, 0), label)
        for status, label in (("queued", "queued"), ("submitted", "in batches"),
                              ("realtime", "sending directly"))
    ]  # fmt: skip
    oldest = (
        "–"
        if gauges.oldest_queued_ms is None
        else human_duration((now - gauges.oldest_queued_ms) / 1000)
    )
    active = sum(gauges.active_batches.values())
    html = "".join(
        f'<div class="stat"><b>{n:,}</b><span>{label}</span></div>' for n, label in stats
    )
    html += f'<div class="stat"><b id="oldest-queued">{oldest}</b><span>oldest queued</span></div>'
    html += f'<div class="stat"><b>{active:,}</b><span>live batches</span></div>'
    per_provider = ", ".join(f"{escape(p)}: {n}" for p, n in sorted(gauges.active_batches.items()))
    note = f'<p class="muted">Live batches by provider: {per_provider}</p>' if per_provider else ""
    return f'<div class="stats">{html}</div>{note}'


async def _batches(services: Services, now: int) -> str:
    rows, _ = await store.list_batches(services.db, limit=BATCH_LIMIT)
    lines = []
    for b in rows:
        started = b["submitted_ms"] or b["created_ms"]
        ended = b["finished_ms"] if b["finished_ms"] is not None else now
        lines.append(
            f'<tr data-status="{escape(b["status"])}">'
            + _cell(b["id"])
            + _cell(f"{b['provider']} · {b['model']}")
            + f'<td><span class="pill">{escape(b["status"])}</span></td>'
            + _cell(
                f"{b['completed_lines']:,} / {b['failed_lines']:,} / {b['line_count']:,}", "num"
            )
            + _cell(human_duration((now - b["created_ms"]) / 1000), "num")
            + _cell(human_duration((ended - started) / 1000), "num")
            + _cell(b["provider_batch_id"])
            + "</tr>"
        )
    headers = ("Batch", "Provider · model", "Status", "#Done / failed / lines", "#Age", "#Running",
               "Provider batch id")  # fmt: skip
    more = '<p class="muted">Newest 10; all of them at <code>GET /admin/batches</code>.</p>'
    return _table(headers, lines, "No batches yet.", "batch-table") + (more if rows else "")


def _filters(params: Mapping[str, str]) -> str:
    since = params.get("since", "")
    options = "".join(
        f'<option value="{v}"{" selected" if v == since else ""}>{escape(label)}</option>'
        for v, label in SINCE_CHOICES
    )
    lanes = "".join(f'<option value="{lane.value}">' for lane in Lane)
    fields = [f'<label>Since<select name="since" id="f-since">{options}</select></label>']
    hints = {"lane": ' list="lanes"', "status": ' list="statuses" placeholder="ok, failed, 429"'}
    for name in FILTER_FIELDS:
        value = escape(params.get(name, ""), quote=True)
        fields.append(
            f'<label>{name.capitalize()}<input name="{name}" id="f-{name}" value="{value}" '
            f'size="14"{hints.get(name, "")}></label>'
        )
    return (
        f'<form class="filters" method="get" action="/admin" id="filters">{"".join(fields)}'
        '<button type="submit" id="apply">Filter</button><a href="/admin">Clear</a>'
        f'<datalist id="lanes">{lanes}</datalist>'
        '<datalist id="statuses"><option value="ok"><option value="failed"></datalist></form>'
    )


def _route_row(r: dict[str, Any]) -> str:
    failed = r["status"] >= 400 and r["status"] != 499
    tokens = None
    if r["prompt_tokens"] is not None or r["completion_tokens"] is not None:
        tokens = f"{r['prompt_tokens'] or 0:,} / {r['completion_tokens'] or 0:,}"
    latency = None if r["latency_ms"] is None else f"{r['latency_ms']:,.0f}"
    return (
        f'<tr data-id="{r["id"]}">'
        + _cell(when(r["ts_ms"]))
        + _cell(r["key_name"])
        + _cell(r["model"])
        + _cell(r["provider"])
        + _cell(r["lane"])
        + _cell(r["status"], "num fail" if failed else "num ok")
        + _cell(latency, "num")
        + _cell(tokens, "num")
        + _cell(money(r["cost_usd"]), "num")
        + _cell(money(r["saved_usd"]), "num")
        + _cell(
            r["reason"] if not r["error_code"] else f"{r['reason']} ({r['error_code']})", "reason"
        )
        + "</tr>"
    )


async def _log(request: Request, services: Services, now: int) -> str:
    params = request.query_params
    query = q.route_query({**params, "limit": params.get("limit", str(LOG_LIMIT))}, now)
    rows, more = await store.list_routes(
        services.db,
        filters=query.filters,
        outcome=query.outcome,
        since_ms=query.since_ms,
        after=None if query.after is None else int(query.after),
        before=None if query.before is None else int(query.before),
        limit=query.limit,
    )
    headers = ("Time", "Key", "Model", "Provider", "Lane", "#Status", "#Latency ms",
               "#Tokens in / out", "#Cost", "#Saved", "Reason")  # fmt: skip
    table = _table(headers, [_route_row(r) for r in rows], "No requests match.", "log-table")
    kept = {k: v for k, v in params.items() if k in (*FILTER_FIELDS, "since") and v}
    links = []
    # Newest first: "after" walks to older rows, "before" to newer ones.
    newer = query.after is not None or (query.before is not None and more)
    older = more if query.before is None else True
    if rows and newer:
        href = escape(urlencode({**kept, "before": rows[0]["id"]}))
        links.append(f'<a id="newer" href="/admin?{href}">← Newer</a>')
    if rows and older:
        href = escape(urlencode({**kept, "after": rows[-1]["id"]}))
        links.append(f'<a id="older" href="/admin?{href}">Older →</a>')
    if query.after is not None or query.before is not None:
        links.append(f'<a id="newest" href="/admin?{escape(urlencode(kept))}">Newest</a>')
    note = " (more below)" if more else ""
    shown = f'<p class="muted" id="log-count">{len(rows)} requests shown{note}.</p>'
    return shown + table + f'<div class="pager">{"".join(links)}</div>'


async def ops_page(request: Request, services: Services) -> Response:
    """The ops page: alerts, savings by day, queue, batches and the routing log."""
    page: PageAuth = await authenticate_page(request, services)
    await read_your_writes(services)
    now = q.now_ms(services)
    logout_button = ""
    if page.session is not None:
        logout_button = (
            f'<input type="hidden" name="csrf" value="{escape(page.session.csrf, quote=True)}">'
            '<button type="submit" id="logout">Log out</button>'
        )
    body = template("ops_page.html").substitute(
        who=escape(page.caller.name),
        logout=logout_button,
        alerts=render_alerts(await q.current_alerts(services, now)),
        savings=await _savings(services, now),
        queue=await _queue(services, now),
        batches=await _batches(services, now),
        filters=_filters(request.query_params),
        log=await _log(request, services, now),
        rendered=when(now),
    )
    return html_page("costroute ops", body)


async def _login(request: Request, services: Services) -> Response:
    """The ops page login: GET the form, POST the admin key."""
    handler = login_form if request.method == "GET" else login
    return await handler(request, services)


def _endpoint(handler: Callable[[Request, Services], Awaitable[Response]]) -> Any:
    endpoint = page_endpoint(handler)
    endpoint.__doc__ = handler.__doc__
    return endpoint


def page_routes() -> list[BaseRoute]:
    """Not wrapped by the app's bearer wrapper: they take a header or a session cookie."""
    return [
        Route("/admin", _endpoint(ops_page), methods=["GET"]),
        Route("/admin/login", _endpoint(_login), methods=["GET", "POST"]),
        Route("/admin/logout", _endpoint(logout), methods=["POST"]),
    ]
