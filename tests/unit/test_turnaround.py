"""The learnt batch turnaround (``proxy.deferral.turnaround``) on hand-worked cases."""

from __future__ import annotations

import pytest

from proxy.deferral.turnaround import WINDOW, TurnaroundWatch, median_turnaround

HOUR = 3600.0


def test_no_batch_no_estimate() -> None:
    assert median_turnaround([], []) is None


def test_finished_batches_alone_give_their_median() -> None:
    # Kaplan-Meier with nothing censored: S(10) = 2/3, S(20) = 1/3 <= 1/2.
    assert median_turnaround([30, 10, 20], []) == 20


def test_running_batches_count_as_at_least_their_age() -> None:
    # At risk at 10: all five, S = 4/5; at 20: 20, 25, 30, 100, S = 4/5 * 3/4 = 0.6;
    # at 30: 30 and 100 (25 left the risk set still running), S = 0.3 <= 1/2.
    assert median_turnaround([10, 20, 30], [25, 100]) == 30
    # Counting the ages as turnarounds would have said 25.


def test_young_running_batches_do_not_pull_the_estimate_down() -> None:
    # Three batches submitted a second ago are censored at 1 s: they leave the risk
    # set before the first finished turnaround, which then decides as if alone.
    assert median_turnaround([10, 20, 30], [1, 1, 1]) == 20


def test_until_half_have_ended_the_oldest_is_a_lower_bound() -> None:
    assert median_turnaround([], [HOUR, 5 * HOUR]) == 5 * HOUR
    assert median_turnaround([2 * HOUR], [6 * HOUR, 7 * HOUR]) == 7 * HOUR


def test_the_watch_keeps_a_day_of_batches_per_provider() -> None:
    watch = TurnaroundWatch()
    watch.finished("openai", at=0.0, seconds=10 * HOUR)  # slow, yesterday
    watch.finished("openai", at=WINDOW + 100, seconds=HOUR)
    watch.finished("gemini", at=WINDOW + 100, seconds=0.25 * HOUR)
    # Gemini: one of three ended (15 min), two still running at 2 h and 3 h.
    watch.refresh(WINDOW + 200, {"gemini": [2 * HOUR, 3 * HOUR]})
    assert watch.expected == {"openai": HOUR, "gemini": 3 * HOUR}
    assert watch.longest == {"openai": HOUR, "gemini": 3 * HOUR}
    watch.refresh(WINDOW + 300, {})  # (they were cancelled: no longer running)
    assert watch.expected["gemini"] == pytest.approx(0.25 * HOUR)


def test_no_poll_before_the_fastest_recent_batch_could_have_ended() -> None:
    watch = TurnaroundWatch()
    assert watch.first_poll("gemini", age=0.0) == 0.0  # nothing learnt: poll as usual
    for seconds in (900.0, 1200.0, 1000.0):
        watch.finished("gemini", at=5000.0, seconds=seconds)
    watch.refresh(5000.0, {})
    assert watch.fastest == {"gemini": 900.0}
    assert watch.first_poll("gemini", age=30.0) == pytest.approx(0.8 * 900 - 30)
    assert watch.first_poll("gemini", age=800.0) == 0.0
    assert watch.first_poll("openai", age=30.0) == 0.0
