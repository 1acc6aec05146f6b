"""Price windows: the multiplier at a moment and the next cheaper window."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from proxy.costs.pricing import next_cheaper_window_start, window_multiplier
from proxy.settings import PriceWindow

WEEKDAYS = ["mon", "tue", "wed", "thu", "fri"]
PEAK = [
    PriceWindow(name="am", days=WEEKDAYS, start="01:00", end="04:00", multiplier=2.0),
    PriceWindow(name="pm", days=WEEKDAYS, start="06:00", end="10:00", multiplier=2.0),
]
FRIDAY_NIGHT = [PriceWindow(name="n", days=["fri"], start="22:00", end="02:00", multiplier=0.5)]
OFFPEAK = [PriceWindow(name="off", start="16:30", end="00:30", multiplier=0.5)]


def at(day: int, hour: int, minute: int = 0, second: int = 0) -> float:
    """November 2026: the 23rd is a Monday, the 27th a Friday, the 28th a Saturday."""
    return datetime(2026, 11, day, hour, minute, second, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("windows", "moment", "expected"),
    [
        (PEAK, at(23, 0, 59, 59), 1.0),
        (PEAK, at(23, 1), 2.0),
        (PEAK, at(23, 3, 59, 59), 2.0),
        (PEAK, at(23, 4), 1.0),
        (PEAK, at(23, 6), 2.0),
        (PEAK, at(27, 9, 30), 2.0),
        (PEAK, at(28, 2), 1.0),  # Saturday
        (PEAK, at(29, 7), 1.0),  # Sunday
        # A window that wraps midnight belongs to the day it starts on.
        (FRIDAY_NIGHT, at(27, 22), 0.5),
        (FRIDAY_NIGHT, at(28, 1, 59), 0.5),  # Saturday morning, Friday's window
        (FRIDAY_NIGHT, at(28, 2), 1.0),
        (FRIDAY_NIGHT, at(28, 23), 1.0),  # Saturday night: no window starts on Saturday
        (FRIDAY_NIGHT, at(27, 1), 1.0),  # Friday morning: Thursday has no window
        (OFFPEAK, at(23, 16, 29), 1.0),
        (OFFPEAK, at(23, 16, 30), 0.5),
        (OFFPEAK, at(24, 0, 29), 0.5),
        (OFFPEAK, at(24, 0, 30), 1.0),
        ([], at(23, 12), 1.0),
    ],
)
def test_window_multiplier(windows: list[PriceWindow], moment: float, expected: float) -> None:
    assert window_multiplier(windows, moment) == expected


def test_equal_start_and_end_is_a_whole_day() -> None:
    sunday = [PriceWindow(name="sun", days=["sun"], start="00:00", end="00:00", multiplier=0.7)]
    assert window_multiplier(sunday, at(29, 0)) == 0.7
    assert window_multiplier(sunday, at(29, 23, 59)) == 0.7
    assert window_multiplier(sunday, at(30, 0)) == 1.0
    assert window_multiplier(sunday, at(28, 23, 59)) == 1.0


def test_first_matching_window_wins() -> None:
    overlapping = [
        PriceWindow(name="a", start="01:00", end="03:00", multiplier=3.0),
        PriceWindow(name="b", start="02:00", end="05:00", multiplier=0.5),
    ]
    assert window_multiplier(overlapping, at(23, 2, 30)) == 3.0
    assert window_multiplier(overlapping, at(23, 4)) == 0.5


@pytest.mark.parametrize(
    ("windows", "now", "deadline", "expected"),
    [
        (PEAK, at(23, 2), at(23, 8), at(23, 4)),  # peak now: off-peak at 04:00
        (PEAK, at(23, 2), at(23, 4), None),  # the deadline is not "before" it
        (PEAK, at(23, 2), at(23, 4, 0, 1), at(23, 4)),
        (PEAK, at(23, 12), at(25, 12), None),  # already at the cheapest price
        (PEAK, at(27, 9), at(28, 9), at(27, 10)),  # Friday peak ends at 10:00
        (OFFPEAK, at(23, 12), at(24, 12), at(23, 16, 30)),
        (OFFPEAK, at(23, 12), at(23, 16), None),
        (OFFPEAK, at(23, 17), at(24, 12), None),  # inside the cheap window
        (FRIDAY_NIGHT, at(23, 12), at(30, 0), at(27, 22)),
        ([], at(23, 12), at(30, 12), None),
        (PEAK, at(23, 2), at(23, 1), None),  # deadline already passed
    ],
)
def test_next_cheaper_window_start(
    windows: list[PriceWindow], now: float, deadline: float, expected: float | None
) -> None:
    assert next_cheaper_window_start(windows, now, deadline) == expected


def test_next_cheaper_window_finds_the_cheapest_step_not_just_any_change() -> None:
    steps = [
        PriceWindow(name="dear", start="08:00", end="12:00", multiplier=3.0),
        PriceWindow(name="cheap", start="20:00", end="22:00", multiplier=0.5),
    ]
    # At 09:00 (3x) the next change, 12:00, is already cheaper (1x).
    assert next_cheaper_window_start(steps, at(23, 9), at(24, 9)) == at(23, 12)
    # At 13:00 (1x) only the 20:00 window is cheaper; 08:00 tomorrow is dearer.
    assert next_cheaper_window_start(steps, at(23, 13), at(24, 9)) == at(23, 20)
