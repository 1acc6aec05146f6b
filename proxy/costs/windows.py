"""Provider price windows: time-of-day multipliers in UTC (``PriceWindow`` in settings).

A window belongs to the weekdays it *starts* on; one whose ``end`` is earlier than its
``start`` wraps past midnight into the next day, and ``start == end`` means a whole day
from ``start``. Where windows overlap, the first listed wins. Outside every window the
multiplier is 1. Pure: the planner uses these to hold a request for a cheaper window, the
pricer to price it.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

from proxy.settings import PriceWindow

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class _Window:
    days: frozenset[int]  # 0 = Monday
    start: int  # minutes after midnight UTC
    end: int
    multiplier: float


def _compile(windows: Sequence[PriceWindow]) -> tuple[_Window, ...]:
    return tuple(
        _Window(frozenset(_DAYS.index(d) for d in w.days), *w.minutes(), w.multiplier)
        for w in windows
    )


def _multiplier(windows: Sequence[_Window], at: float) -> float:
    day = math.floor(at / 86400)
    minute = (at - day * 86400) / 60
    weekday = (day + 3) % 7  # 1970-01-01 was a Thursday
    for window in windows:
        if window.start < window.end:
            if weekday in window.days and window.start <= minute < window.end:
                return window.multiplier
        elif (weekday in window.days and minute >= window.start) or (
            (weekday - 1) % 7 in window.days and minute < window.end
        ):
            return window.multiplier
    return 1.0


def window_multiplier(windows: Sequence[PriceWindow], at: float) -> float:
    """The price multiplier at Unix time ``at`` (see the module docstring)."""
    return _multiplier(_compile(windows), at)


def next_cheaper_window_start(
    windows: Sequence[PriceWindow], now: float, deadline: float
) -> float | None:
    """The earliest time in (now, deadline) whose multiplier is lower than now's."""
    if not windows or deadline <= now:
        return None
    compiled = _compile(windows)
    current = _multiplier(compiled, now)
    first_day = math.floor(now / 86400)
    last_day = min(math.floor(deadline / 86400), first_day + 400)
    edges = sorted(
        day * 86400 + minute * 60
        for day in range(first_day, last_day + 1)
        for window in compiled
        for minute in (window.start, window.end)
    )
    for edge in edges:
        if now < edge < deadline and _multiplier(compiled, edge) < current:
            return float(edge)
    return None


NO_WINDOWS: tuple[PriceWindow, ...] = ()


@dataclass(frozen=True, slots=True)
class DatedWindows:
    """Window sets that change over time (a provider's peak hours began on a date)."""

    starts: tuple[float, ...]  # ascending, starts[0] == -inf
    windows: tuple[tuple[PriceWindow, ...], ...]
    compiled: tuple[tuple[_Window, ...], ...]

    @classmethod
    def of(cls, dated: Sequence[tuple[float, tuple[PriceWindow, ...]]]) -> DatedWindows:
        ordered = sorted(dated, key=lambda item: item[0])
        if not ordered or ordered[0][0] != -math.inf:
            ordered.insert(0, (-math.inf, NO_WINDOWS))
        windows = tuple(ws for _, ws in ordered)
        compiled = tuple(_compile(ws) for ws in windows)
        return cls(tuple(start for start, _ in ordered), windows, compiled)

    def index(self, at: float) -> int:
        return bisect.bisect_right(self.starts, at) - 1

    def multiplier(self, at: float) -> float:
        return _multiplier(self.compiled[self.index(at)], at)


NO_DATED_WINDOWS = DatedWindows.of([])
