"""The lane decision: pure, no I/O, so it is tested with tables of cases.

``plan(...) -> Decision`` looks at the caller's latency tolerance, the model's configured
capabilities and the provider's price windows, and returns where the request goes and why.

Order of preference, cheapest first among the lanes whose completion fits the deadline:

1. ``batch``: the provider has a batch lane, the model allows it, and the tolerance is at
   least ``batch.min_tolerance`` (a batch may take hours; half price).
2. ``offpeak``: the provider has time-of-day price windows and a cheaper one opens before
   the deadline (less the guard's margin); the request is held and sent directly then.
3. ``flex``: OpenAI's flex tier for flex-capable chat models, when the tolerance is at
   least ``batch.flex_min_tolerance`` (synchronous, slower, half price).
4. ``realtime`` otherwise, with the reason why nothing cheaper fitted.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from proxy.durations import format_duration
from proxy.settings import PriceWindow, Settings

# Provider types whose batch adapter exists (adapters/openai_batch.py).
BATCH_PROVIDER_TYPES = frozenset({"openai"})
FLEX_PROVIDER_TYPES = frozenset({"openai"})
CHAT = "/v1/chat/completions"


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
) -> Decision:
    """Choose the lane for one request. ``model`` must be configured; ``tolerance`` is in
    seconds (``None`` or 0: the caller wants the answer now)."""
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

    if provider.type not in BATCH_PROVIDER_TYPES:
        why_not.append(f"no batch lane for {provider.type}")
    elif not config.batch:
        why_not.append(f"batch disabled for {model}")
    elif tolerance < batch.min_tolerance:
        minimum = format_duration(batch.min_tolerance)
        why_not.append(f"tolerance {tol} < batch.min_tolerance {minimum}")
    else:
        return Decision(
            Lane.BATCH,
            name,
            upstream,
            f"tolerance {tol} >= batch.min_tolerance {format_duration(batch.min_tolerance)}: "
            f"{name} batch at batch price",
            deadline=deadline,
        )

    if provider.price_windows:
        latest = deadline - batch.deadline_margin
        found = next_cheaper_window_start(provider.price_windows, now, latest)
        if found is not None:
            start, current, cheaper = found
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

    if config.flex and provider.type in FLEX_PROVIDER_TYPES and endpoint == CHAT:
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


# --- price windows ---------------------------------------------------------------------

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def multiplier_at(windows: Sequence[PriceWindow], when: float) -> float:
    """The price multiplier at ``when`` (UTC): the first window containing it, else 1."""
    moment = dt.datetime.fromtimestamp(when, dt.UTC)
    minute = moment.hour * 60 + moment.minute
    today = _DAYS[moment.weekday()]
    yesterday = _DAYS[(moment.weekday() - 1) % 7]
    for window in windows:
        start, end = window.minutes()
        if start < end:
            inside = today in window.days and start <= minute < end
        else:  # wraps midnight: the window belongs to the day it starts on
            inside = (today in window.days and minute >= start) or (
                yesterday in window.days and minute < end
            )
        if inside:
            return window.multiplier
    return 1.0


def next_cheaper_window_start(
    windows: Sequence[PriceWindow], now: float, latest: float
) -> tuple[float, float, float] | None:
    """The first moment in (now, latest] whose price multiplier is below the current
    one, as (when, current multiplier, that multiplier); ``None`` if there is none."""
    if latest <= now:
        return None
    current = multiplier_at(windows, now)
    day0 = dt.datetime.fromtimestamp(now, dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    boundaries: set[float] = set()
    day = day0
    while day.timestamp() <= latest:
        boundaries.add(day.timestamp())
        for window in windows:
            for minutes in window.minutes():
                boundaries.add(day.timestamp() + minutes * 60)
        day += dt.timedelta(days=1)
    for edge in sorted(b for b in boundaries if now < b <= latest):
        price = multiplier_at(windows, edge)
        if price < current:
            return edge, current, price
    return None
