"""``costroute report``: requests, tokens, cost, baseline and savings, grouped.

``build_report`` is shared with the admin API; what counts as one request, as failed or
as unpriced is defined in ``proxy.store.reports``. Costs of unpriced requests are unknown,
so a group's cost sums the known ones and the group is flagged.

``with_best`` adds savings realised against the theoretical best for the period
(``proxy.costs.realised.from_log``: the requests that *ended* in it, each at the cheapest
lane its tolerance allowed, with each provider's median batch turnaround of the period
as the nominal one): the same figures ``costroute simulate`` reports.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import io
import sys
import time
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from proxy.costs.pricing import Pricer
from proxy.costs.realised import Realised, from_log
from proxy.durations import DurationError, parse_duration
from proxy.settings import ConfigError, Settings, load_settings
from proxy.store.db import Database
from proxy.store.reports import GROUP_EXPRESSIONS, report_groups

GROUPINGS = tuple(GROUP_EXPRESSIONS)
NONE_GROUP = "(none)"
TOTAL_GROUP = "(total)"
# Money is kept as floats; renderings round to a millionth of a cent.
_DIGITS = 8


@dataclass(frozen=True, slots=True)
class ReportRow:
    group: str
    requests: int
    failed: int
    pending: int
    unpriced: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost: float
    baseline: float
    savings: float

    @property
    def failure_rate(self) -> float:
        """Failed among the requests that have ended (pending ones have not)."""
        ended = self.requests - self.pending
        return self.failed / ended if ended else 0.0

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for field in fields(self):
            value = getattr(self, field.name)
            out[field.name] = round(value, _DIGITS) if isinstance(value, float) else value
            if field.name == "failed":
                out["failure_rate"] = round(self.failure_rate, 6)
        out["cost_unknown"] = self.unpriced > 0
        return out


@dataclass(frozen=True, slots=True)
class Report:
    by: str
    since_ms: int
    until_ms: int
    rows: tuple[ReportRow, ...]
    total: ReportRow
    # Savings realised against the theoretical best (``with_best``), and the nominal
    # batch turnaround (s) per provider it assumed.
    best: Realised | None = None
    best_turnaround: dict[str, float] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "by": self.by,
            "since": _iso(self.since_ms, "%Y-%m-%dT%H:%M:%SZ"),
            "until": _iso(self.until_ms, "%Y-%m-%dT%H:%M:%SZ"),
            "since_ms": self.since_ms,
            "until_ms": self.until_ms,
            "rows": [row.as_dict() for row in self.rows],
            "total": self.total.as_dict(),
        }
        if self.best is not None:
            out["best"] = {
                **self.best.to_json(),
                "nominal_turnaround_s": {
                    p: round(s, 1) for p, s in sorted(self.best_turnaround.items())
                },
            }
        return out


async def build_report(db: Database, *, since_ms: int, by: str, now_ms: int) -> Report:
    """Requests from ``since_ms`` to ``now_ms`` (both inclusive) grouped ``by`` one of
    ``GROUPINGS``; raises ``ValueError`` for another grouping."""
    if by not in GROUP_EXPRESSIONS:
        raise ValueError(f"cannot group by {by!r}: use one of {', '.join(GROUPINGS)}")
    raw = await report_groups(db, since_ms=since_ms, until_ms=now_ms, by=by)
    rows = tuple(_row(item) for item in raw)
    return Report(by, since_ms, now_ms, rows, _sum(rows))


async def with_best(db: Database, report: Report, settings: Settings, pricer: Pricer) -> Report:
    """``report`` with savings realised against the theoretical best for its period."""
    found, nominal = await from_log(
        db, settings, pricer, since_ms=report.since_ms, until_ms=report.until_ms + 1
    )
    return replace(report, best=found, best_turnaround=dict(nominal.turnaround))


def best_line(best: Realised) -> str:
    """One sentence for people: the share of the best possible saving taken."""
    share = best.realised
    if share is None:
        return (
            f"Savings realised: nothing could have been saved on the {best.requests:,} "
            "finished requests (none could wait for a cheaper lane)."
        )
    return (
        f"Savings realised: {100 * share:.1f} % of the best possible saving "
        f"(saved {_money(best.saved_usd)} of {_money(best.possible_usd)} possible; "
        f"theoretical best {_money(best.best_usd)} for the {best.requests:,} finished requests)."
    )


def _row(item: dict[str, Any]) -> ReportRow:
    group = item["group"]
    return ReportRow(
        group=NONE_GROUP if group is None else str(group),
        **{f.name: item[f.name] for f in fields(ReportRow) if f.name != "group"},
    )


def _sum(rows: tuple[ReportRow, ...]) -> ReportRow:
    totals = {f.name: sum(getattr(row, f.name) for row in rows) for f in fields(ReportRow)[1:]}
    for name in ("cost", "baseline", "savings"):
        totals[name] = float(totals[name])
    return ReportRow(group=TOTAL_GROUP, **totals)


# --- renderings --------------------------------------------------------------------------

_CSV_COLUMNS = (
    "group",
    "requests",
    "failed",
    "failure_rate",
    "pending",
    "unpriced",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cost",
    "baseline",
    "savings",
    "cost_unknown",
)


def render_json(report: Report) -> str:
    return orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2).decode()


def render_csv(report: Report) -> str:
    """One line per group, then the ``(total)`` line."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=_CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in (*report.rows, report.total):
        writer.writerow(row.as_dict())
    return out.getvalue()


def render_table(report: Report) -> str:
    header = ("requests", "failed", "fail %", "prompt", "completion", "cached", "cost")
    lines = [
        f"costroute report, {_iso(report.since_ms)} to {_iso(report.until_ms)}, by {report.by}",
        "",
    ]
    table: list[tuple[str, ...]] = [(report.by, *header, "baseline", "savings")]
    for row in (*report.rows, report.total):
        flag = "*" if row.unpriced else ""
        table.append(
            (
                row.group,
                f"{row.requests:,}",
                f"{row.failed:,}",
                f"{row.failure_rate * 100:.1f}",
                f"{row.prompt_tokens:,}",
                f"{row.completion_tokens:,}",
                f"{row.cached_tokens:,}",
                _money(row.cost) + flag,
                _money(row.baseline),
                _money(row.savings),
            )
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    for number, line in enumerate(table):
        if number == len(table) - 1:
            lines.append("  ".join("-" * width for width in widths))
        cells = [line[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(line[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    notes = []
    if report.total.unpriced:
        notes.append(
            f"* {report.total.unpriced:,} successful requests have no known price "
            "(their model is missing from the price table); their cost is not included."
        )
    if report.total.pending:
        notes.append(f"{report.total.pending:,} deferred requests are still pending.")
    if report.best is not None:
        notes.append(best_line(report.best))
    return "\n".join([*lines, "", *notes] if notes else lines)


def _money(value: float) -> str:
    sign = "-" if value < 0 else ""
    amount = abs(value)
    return f"{sign}${amount:,.2f}" if amount >= 1 or amount == 0 else f"{sign}${amount:.4f}"


def _iso(ms: int, form: str = "%Y-%m-%d %H:%M UTC") -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime(form)


# --- the command -------------------------------------------------------------------------


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("report", help="requests, tokens, cost and savings, grouped")
    p.add_argument("--config", required=True, help="path to the TOML config")
    p.add_argument(
        "--since", default="7d", help="how far back, e.g. 24h or 7d (at most 30d; 0: all time)"
    )
    p.add_argument("--by", choices=GROUPINGS, default="lane", help="grouping (default: lane)")
    form = p.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="print JSON")
    form.add_argument("--csv", action="store_true", help="print CSV")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    try:
        since = parse_duration(args.since)
    except DurationError as exc:
        raise ConfigError(f"--since: {exc}") from None
    target = settings.store.target()
    # Opening a SQLite file would create an empty one: say what is wrong instead.
    if settings.store.url_env is None and not Path(target).exists():
        raise ConfigError(f"store.path: no database at {settings.store.path}")
    now_ms = int(time.time() * 1000)
    since_ms = now_ms - since * 1000 if since else 0
    report = asyncio.run(_read(target, settings, since_ms=since_ms, by=args.by, now_ms=now_ms))
    if args.json:
        sys.stdout.write(render_json(report) + "\n")
    elif args.csv:
        sys.stdout.write(render_csv(report))
    else:
        sys.stdout.write(render_table(report) + "\n")
    return 0


async def _read(path: str, settings: Settings, *, since_ms: int, by: str, now_ms: int) -> Report:
    db = await Database.open(path)
    try:
        report = await build_report(db, since_ms=since_ms, by=by, now_ms=now_ms)
        return await with_best(db, report, settings, Pricer.from_settings(settings))
    finally:
        await db.close()
