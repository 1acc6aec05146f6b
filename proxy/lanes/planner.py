"""The lane decision: pure, no I/O, so it is tested with tables of cases.

``plan(...) -> Decision`` looks at the caller's latency tolerance, the model's configured
capabilities and the provider's price windows, and returns where the request goes and why.

Order of preference, cheapest first among the lanes whose completion fits the deadline:

1. ``batch``: the provider has a batch lane, the model allows it, and the tolerance is at
   least ``batch.min_tolerance`` (a batch may take hours; half price) and, when the
   scheduler has learnt the provider's recent batch turnaround (``turnaround``), that
   turnaround plus ``batch.deadline_margin``: a batch that cannot be back in time is
   escalated by the deadline guard and paid twice (``proxy.deferral.turnaround``).
2. ``offpeak``: the provider has time-of-day price windows (its config's, else the shipped
   ones the pricer charges by: ``proxy.costs.pricing.windows_in_force``) and a cheaper one
   opens before the deadline (less the guard's margin); the request is held and sent
   directly then.
3. ``flex``: OpenAI's flex tier for flex-capable chat models, when the tolerance is at
   least ``batch.flex_min_tolerance`` (synchronous, slower, half price).
4. ``realtime`` otherwise, with the reason why nothing cheaper fitted.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from adapters.registry import capabilities
from proxy.costs.pricing import windows_in_force
from proxy.costs.windows import next_cheaper_window_start, window_multiplier
from proxy.durations import format_duration
from proxy.settings import Settings

CHAT = "/v1/chat/completions"
# OpenAI serves the flex tier on both (``service_tier: "flex"``).
FLEX_ENDPOINTS = frozenset({CHAT, "/v1/responses"})


class Lane(StrEnum):
    REALTIME = "realtime"
    FLEX = "flex"
    BATCH = "batch"
    # Held in the queue until a cheaper price window opens, then sent directly.
    OFFPEAK = "offpeak"


@dataclass(frozen=True, slots=True)
class Decision:
    lane: Lane
    provider: str
    upstream_model: str
    reason: str
    # Unix seconds; set for deferred lanes.
    deadline: float | None = None
    # Unix seconds before which a held request must not be sent (price windows).
    not_before: float | None = None

    @property
    def deferred(self) -> bool:
        return self.lane in (Lane.BATCH, Lane.OFFPEAK)


def plan(
    *,
    model: str,
    endpoint: str,
    tolerance: int | None,
    settings: Settings,
    now: float,
    turnaround: Mapping[str, float] | None = None,
) -> Decision:
    """Choose the lane for one request. ``model`` must be configured; ``tolerance`` is in
    seconds (``None`` or 0: the caller wants the answer now). ``turnaround``: provider
    name -> its recent batch turnaround in seconds, where known."""
    config = settings.models[model]
    provider = settings.providers[config.provider]
    upstream = config.upstream_model or model
    name = config.provider
    if not tolerance:
        return Decision(Lane.REALTIME, name, upstream, "no latency tolerance")
    batch = settings.batch
    deadline = now + tolerance
    tol = format_duration(tolerance)
    why_not: list[str] = []
    learnt = turnaround.get(name) if turnaround else None

    lanes = capabilities(provider.type)
    if not lanes.batch:
        why_not.append(f"no batch lane for {provider.type}")
    elif lanes.batch_endpoints is not None and endpoint not in lanes.batch_endpoints:
        why_not.append(f"no {provider.type} batch lane for {endpoint}")
    elif not config.batch:
        why_not.append(f"batch disabled for {model}")
    elif tolerance < batch.min_tolerance:
        minimum = format_duration(batch.min_tolerance)
        why_not.append(f"tolerance {tol} < batch.min_tolerance {minimum}")
    elif learnt is not None and tolerance < learnt + batch.deadline_margin:
        why_not.append(
            f"tolerance {tol} < {name}'s recent batch turnaround {format_duration(learnt)} "
            f"+ batch.deadline_margin {format_duration(batch.deadline_margin)}"
        )
    else:
        return Decision(
            Lane.BATCH,
            name,
            upstream,
            f"tolerance {tol} >= batch.min_tolerance {format_duration(batch.min_tolerance)}: "
            f"{name} batch at batch price",
            deadline=deadline,
        )

    # Shipped windows count as much as configured ones: a DeepSeek request with no
    # ``price_windows`` in the config is still charged twice over in peak hours.
    windows = windows_in_force(provider, now)
    if windows:
        latest = deadline - batch.deadline_margin
        start = next_cheaper_window_start(windows, now, latest)
        if start is not None:
            current = window_multiplier(windows, now)
            cheaper = window_multiplier(windows, start)
            when = dt.datetime.fromtimestamp(start, dt.UTC).strftime("%a %H:%M UTC")
            return Decision(
                Lane.OFFPEAK,
                name,
                upstream,
                _because(
                    why_not,
                    f"{name} charges {current:g}x now; held until {when} ({cheaper:g}x), "
                    f"before the {tol} deadline",
                ),
                deadline=deadline,
                not_before=start,
            )
        why_not.append("no cheaper price window before the deadline")

    if config.flex and capabilities(provider.type).flex and endpoint in FLEX_ENDPOINTS:
        if tolerance >= batch.flex_min_tolerance:
            return Decision(
                Lane.FLEX,
                name,
                upstream,
                _because(
                    why_not,
                    f"tolerance {tol} >= batch.flex_min_tolerance "
                    f"{format_duration(batch.flex_min_tolerance)}: flex tier at batch price",
                ),
            )
        minimum = format_duration(batch.flex_min_tolerance)
        why_not.append(f"tolerance {tol} < batch.flex_min_tolerance {minimum}")
    return Decision(Lane.REALTIME, name, upstream, "real time: " + "; ".join(why_not))


def _because(why_not: list[str], chosen: str) -> str:
    return "; ".join([*why_not, chosen])
