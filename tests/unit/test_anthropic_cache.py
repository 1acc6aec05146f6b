"""Where costroute places an Anthropic cache breakpoint (pure): table of sightings."""

from __future__ import annotations

import pytest

from adapters.anthropic import cache


@pytest.mark.parametrize(
    ("times", "tokens", "mode", "expected"),
    [
        ([0.0], 5000, "auto", None),  # first sighting: nothing to reuse yet
        ([0.0, 60.0], 5000, "auto", "5m"),  # back within 5 minutes: 5-minute write
        ([0.0, 1200.0], 5000, "auto", "1h"),  # back within the hour: 1-hour write
        ([0.0, 7200.0], 5000, "auto", None),  # rarer than hourly: a write would not pay
        ([0.0, 60.0], 500, "auto", None),  # under the model's minimum: never cached
        ([0.0], 5000, "force", "5m"),
        ([0.0, 60.0, 90.0], 5000, "off", None),
    ],
)
def test_decide(times: list[float], tokens: int, mode: str, expected: str | None) -> None:
    placement = cache.decide(times, prefix_tokens=tokens, minimum=1024, min_repeats=2, mode=mode)
    assert (placement.ttl if placement else None) == expected


def test_a_retried_attempt_is_not_a_new_sighting() -> None:
    seen = cache.Sightings()
    assert len(seen.see("fp", 0.0, 300, "req_1")) == 1
    assert len(seen.see("fp", 1.0, 300, "req_1")) == 1  # the same request, retried
    assert len(seen.see("fp", 2.0, 300, "req_2")) == 2
    assert len(seen.see("fp", 900.0, 300, "req_3")) == 1  # the others left the window


def test_place_marks_the_last_block_of_the_prefix_once() -> None:
    request = {"model": "m", "system": [{"type": "text", "text": "a"},
                                        {"type": "text", "text": "b"}],
               "tools": [{"name": "t", "input_schema": {}}], "messages": []}  # fmt: skip
    placed = cache.place(request, cache.Placement("1h", 5000))
    assert [b.get("cache_control") for b in placed["system"]] == [
        None,
        {"type": "ephemeral", "ttl": "1h"},
    ]
    assert "cache_control" not in request["system"][1]  # the caller's dict is untouched
    assert cache.has_breakpoints(placed)
    assert not cache.has_breakpoints(request)
