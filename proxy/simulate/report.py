"""What a simulated run shows: cost against the all-real-time baseline and the
theoretical best, deadlines, latency by lane, batches, retries and escalations.

Every figure comes from the run's own store (routing log, tickets, batches, events): the
same rows ``costroute report`` and the ops page read for real traffic.

Latency: a deferred request's is virtual time from arrival to its final routing-log row;
a real-time or flex call is answered at once on the virtual clock (plus any retry
backoff), so the scenario's ``realtime_latency``/``flex_latency`` is added as its service
time. A request with a tolerance meets its deadline when it completed successfully
within it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from proxy.costs.best import Best, Nominal
from proxy.costs.pricing import Pricer
from proxy.costs.realised import Prefix, Realised, call_of, realised
from proxy.simulate.engine import Run, Sent
from proxy.store.outcomes import Served


@dataclass(frozen=True, slots=True)
class LaneStats:
    lane: str
    requests: int
    cost_usd: float
    p50_s: float
    p95_s: float


@dataclass(frozen=True, slots=True)
class Point:
    """Cumulative dollars at a moment of the run (for the chart)."""

    hours: float
    actual: float
    baseline: float
    best: float


@dataclass(frozen=True, slots=True)
class Report:
    workload: str
    scenario: str
    seed: int
    requests: int
    simulated_hours: float
    wall_seconds: float
    money: Realised
    with_deadline: int
    deadlines_met: int
    failed: int
    lanes: tuple[LaneStats, ...]
    batches: dict[str, int]
    lines_requeued: int
    escalations: int
    escalation_cost_usd: float
    unfinished: int
    best_lanes: dict[str, int]
    curve: tuple[Point, ...] = field(default=())
    quantum: float = 1.0

    @property
    def deadlines_pct(self) -> float | None:
        return None if not self.with_deadline else 100 * self.deadlines_met / self.with_deadline

    def to_json(self) -> dict[str, Any]:
        pct = self.deadlines_pct
        return {
            "object": "simulation",
            "workload": self.workload,
            "scenario": self.scenario,
            "seed": self.seed,
            "requests": self.requests,
            "simulated_hours": round(self.simulated_hours, 3),
            "wall_seconds": round(self.wall_seconds, 2),
            "arrival_quantum_s": self.quantum,
            **self.money.to_json(),
            "deadlines": {
                "with_deadline": self.with_deadline,
                "met": self.deadlines_met,
                "met_pct": None if pct is None else round(pct, 3),
            },
            "failed": self.failed,
            "unfinished": self.unfinished,
            "lanes": [
                {
                    "lane": s.lane,
                    "requests": s.requests,
                    "cost_usd": round(s.cost_usd, 6),
                    "latency_p50_s": round(s.p50_s, 1),
                    "latency_p95_s": round(s.p95_s, 1),
                }
                for s in self.lanes
            ],
            "best_lanes": self.best_lanes,
            "batches_created": self.batches,
            "lines_requeued": self.lines_requeued,
            "escalations": {
                "count": self.escalations,
                "cost_usd": round(self.escalation_cost_usd, 6),
            },
        }


def build(run: Run, pricer: Pricer, *, workload: str) -> Report:
    by_ticket = {row.ticket_id: row for row in run.served if row.ticket_id}
    by_request = {row.request_id: row for row in run.served if not row.ticket_id}
    settings = run.settings
    rows: list[Served] = []
    sents: list[Sent] = []
    for sent in run.sent:
        row = by_ticket.get(sent.ticket_id or "") or by_request.get(sent.request_id or "")
        if row is not None:
            rows.append(row)
            sents.append(sent)
    calls = [
        call_of(
            row,
            settings,
            received_at=sent.sent_at,
            prefix=Prefix(sent.request.prefix, sent.request.prefix_tokens)
            if sent.request.prefix
            else None,
        )
        for row, sent in zip(rows, sents, strict=True)
    ]
    scenario_nominal = Nominal(
        turnaround={
            name: run.scenario.world(name, provider.type).batch_turnaround.median
            for name, provider in settings.providers.items()
        },
        flex_latency=min(
            (run.scenario.world(n, p.type).flex_latency for n, p in settings.providers.items()),
            default=60.0,
        ),
    )
    money, bests = realised(rows, calls, pricer, scenario_nominal)
    latency: dict[str, list[float]] = {}
    lane_cost: dict[str, float] = {}
    met = with_deadline = 0
    for row, sent in zip(rows, sents, strict=True):
        seconds = _latency(run, row, sent)
        lane = _lane_label(row, run)
        latency.setdefault(lane, []).append(seconds)
        lane_cost[lane] = lane_cost.get(lane, 0.0) + (row.cost_usd or 0.0)
        tolerance = row.tolerance_s
        if tolerance:
            with_deadline += 1
            met += int(row.status == 200 and seconds <= tolerance)
    answered = {id(s) for s in sents}
    for sent in run.sent:  # refused or never finished: a tolerance it had is missed
        if id(sent) not in answered and sent.request.tolerance:
            with_deadline += 1
    failed = sum(1 for s in run.sent if s.status is None or s.status >= 400)
    failed += sum(1 for row in rows if row.status != 200 and row.ticket_id)
    lanes = tuple(
        LaneStats(lane, len(values), lane_cost[lane], _pct(values, 50), _pct(values, 95))
        for lane, values in sorted(latency.items())
    )
    batches: dict[str, int] = {}
    for (provider, _status), count in run.batches.items():
        batches[provider] = batches.get(provider, 0) + count
    escalation_cost = sum((row.cost_usd or 0.0) for row in rows if row.ticket_id in run.escalated)
    best_lanes: dict[str, int] = {}
    for best in bests:
        if best is not None:
            best_lanes[best.lane] = best_lanes.get(best.lane, 0) + 1
    return Report(
        workload=workload,
        scenario=run.scenario.name,
        seed=run.seed,
        requests=len(run.sent),
        simulated_hours=(run.end - run.start) / 3600,
        wall_seconds=run.wall_seconds,
        money=money,
        with_deadline=with_deadline,
        deadlines_met=met,
        failed=failed,
        lanes=lanes,
        batches=batches,
        lines_requeued=run.requeued,
        escalations=len(run.escalated),
        escalation_cost_usd=escalation_cost,
        unfinished=run.unfinished,
        best_lanes=dict(sorted(best_lanes.items())),
        curve=_curve(run, rows, sents, bests),
        quantum=run.quantum,
    )


def _lane_label(row: Served, run: Run) -> str:
    if row.ticket_id in run.escalated:
        return "escalated"
    return row.lane


def _latency(run: Run, row: Served, sent: Sent) -> float:
    if row.ticket_id:
        return max(row.ended_ms / 1000 - sent.sent_at, 0.0)
    answered = sent.answered_at if sent.answered_at is not None else sent.sent_at
    provider = run.settings.providers.get(row.provider or "")
    world = run.scenario.world(row.provider or "", provider.type if provider else "")
    service = world.flex_latency if row.lane.startswith("flex") else world.realtime_latency
    return answered - sent.sent_at + service


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = max(math.ceil(q / 100 * len(ordered)) - 1, 0)
    return ordered[rank]


def _curve(
    run: Run, rows: Sequence[Served], sents: Sequence[Sent], bests: Sequence[Best | None]
) -> tuple[Point, ...]:
    """Cumulative cost, baseline and best, by the hour each request arrived."""
    events = sorted(
        (
            sent.sent_at,
            row.cost_usd or 0.0,
            row.baseline_usd or 0.0,
            min(best.cost, row.cost_usd or 0.0) if best is not None else 0.0,
        )
        for row, sent, best in zip(rows, sents, bests, strict=True)
        if row.cost_usd is not None and row.baseline_usd is not None and best is not None
    )
    points = [Point(0.0, 0.0, 0.0, 0.0)]
    actual = baseline = best_total = 0.0
    for at, cost, base, best in events:
        actual += cost
        baseline += base
        best_total += best
        points.append(Point((at - run.start) / 3600, actual, baseline, best_total))
    return tuple(points)


def render(report: Report) -> str:
    money = report.money
    share = money.realised
    pct = report.deadlines_pct
    lines = [
        f"costroute simulate: {report.workload} under scenario {report.scenario!r} "
        f"(seed {report.seed})",
        f"  {report.requests:,} requests over {report.simulated_hours:.1f} simulated hours, "
        f"run in {report.wall_seconds:.1f} s "
        f"({report.requests / max(report.wall_seconds, 1e-9):,.0f} requests/s)",
        "",
        f"  {'cost':<34}${money.actual_usd:>12,.4f}",
        f"  {'all real time (baseline)':<34}${money.baseline_usd:>12,.4f}",
        f"  {'theoretical best':<34}${money.best_usd:>12,.4f}",
        f"  {'saved':<34}${money.saved_usd:>12,.4f}  of ${money.possible_usd:,.4f} possible",
        f"  {'savings realised':<34}"
        + (
            f"{100 * share:>12.1f} %  of the best possible saving"
            if share is not None
            else f"{'n/a':>13}  (nothing could be saved)"
        ),
        f"  {'deadlines met':<34}"
        + (
            f"{pct:>12.2f} %  ({report.deadlines_met:,} of {report.with_deadline:,})"
            if pct is not None
            else f"{'n/a':>13}  (no request had a tolerance)"
        ),
        "",
        f"  {'lane':<16}{'requests':>10}{'cost $':>12}{'p50':>10}{'p95':>10}",
    ]
    for lane in report.lanes:
        lines.append(
            f"  {lane.lane:<16}{lane.requests:>10,}{lane.cost_usd:>12,.4f}"
            f"{_human(lane.p50_s):>10}{_human(lane.p95_s):>10}"
        )
    batches = ", ".join(f"{p} {n}" for p, n in sorted(report.batches.items())) or "none"
    best = ", ".join(f"{lane} {n}" for lane, n in report.best_lanes.items()) or "none"
    lines += [
        "",
        f"  batches created: {batches}; lines requeued: {report.lines_requeued:,}",
        f"  escalated to real time by the deadline guard: {report.escalations:,} "
        f"(cost ${report.escalation_cost_usd:,.4f})",
        f"  failed: {report.failed:,}; unfinished at the end: {report.unfinished:,}",
        f"  theoretical best by lane: {best}",
    ]
    return "\n".join(lines)


def _human(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"
