"""The cost rules of proxy.costs.pricing, on hand-set prices (no genai-prices)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from adapters.wire import Usage
from proxy.costs.pricing import Cost, Pricer, UsageFacts
from proxy.costs.sources import load_shipped_table
from proxy.settings import ModelPrice, PriceWindow

MONDAY_NOON = datetime(2026, 11, 23, 12, 0, tzinfo=UTC).timestamp()
MONDAY_PEAK = datetime(2026, 11, 23, 2, 0, tzinfo=UTC).timestamp()
MONDAY_NIGHT = datetime(2026, 11, 23, 20, 0, tzinfo=UTC).timestamp()

# 600 uncached + 400 cached prompt tokens, 500 completion tokens at $2 / $0.50 / $8 per 1M:
# 600 * 2 + 400 * 0.5 + 500 * 8 = 5,400 micro-dollars; without the cache 1000 * 2 + 4000.
USAGE = UsageFacts(prompt_tokens=1000, completion_tokens=500, cached_tokens=400)
LIST = 0.0054
LIST_UNCACHED = 0.006
PEAK = PriceWindow(
    name="peak",
    days=["mon", "tue", "wed", "thu", "fri"],
    start="01:00",
    end="04:00",
    multiplier=2.0,
)


def pricer(**price: float | bool) -> Pricer:
    base: dict[str, object] = {"input": 2.0, "output": 8.0, "cached_input": 0.5}
    return Pricer(
        user_models={"m": ModelPrice.model_validate(base | price)},
        provider_windows={"windowed": [PEAK]},
    )


def cost(
    p: Pricer,
    lane: str,
    *,
    provider: str = "plain",
    at: float = MONDAY_NOON,
    received_at: float | None = None,
    cache_storage_usd: float = 0.0,
) -> Cost:
    result = p.cost(
        provider_type="openai",
        provider=provider,
        model="m",
        usage=USAGE,
        lane=lane,
        at=at,
        received_at=received_at,
        cache_storage_usd=cache_storage_usd,
    )
    assert result is not None
    return result


@pytest.mark.parametrize(
    ("lane", "extra", "actual", "baseline"),
    [
        ("realtime", {}, LIST, LIST),
        ("flex", {}, LIST / 2, LIST),
        ("batch", {}, LIST / 2, LIST),
        ("offpeak", {}, LIST, LIST),
        # Explicit cache: storage added to actual, baseline bills cached tokens as input.
        ("realtime+cache", {"cache_storage_usd": 0.001}, LIST + 0.001, LIST_UNCACHED),
        ("realtime+cache", {"cache_storage_usd": 0.0}, LIST, LIST_UNCACHED),
        ("batch+cache", {"cache_storage_usd": 0.0002}, LIST / 2 + 0.0002, LIST_UNCACHED),
        ("flex+cache", {}, LIST / 2, LIST_UNCACHED),
    ],
)
def test_lane_table(lane: str, extra: dict[str, float], actual: float, baseline: float) -> None:
    result = cost(pricer(), lane, **extra)
    assert result.actual == pytest.approx(actual)
    assert result.baseline == pytest.approx(baseline)
    assert result.saved == pytest.approx(baseline - actual)


def test_realtime_saves_exactly_nothing() -> None:
    assert cost(pricer(), "realtime").saved == 0.0


def test_negative_saving_when_cache_storage_does_not_pay_off() -> None:
    result = cost(pricer(), "realtime+cache", cache_storage_usd=0.01)
    assert result.saved == pytest.approx(LIST_UNCACHED - LIST - 0.01)
    assert result.saved < 0


def test_discounts_come_from_the_price() -> None:
    p = pricer(batch_discount=0.25, flex_discount=0.1)
    assert cost(p, "batch").actual == pytest.approx(LIST * 0.75)
    assert cost(p, "flex").actual == pytest.approx(LIST * 0.9)


def test_batch_may_leave_cached_tokens_undiscounted() -> None:
    # As the shipped table says for Gemini.
    shipped = load_shipped_table(
        "checked = 2026-01-01\n[providers.openai]\nbatch_discounts_cached = false\n"
    )
    price = ModelPrice(input=2.0, output=8.0, cached_input=0.5)
    p = Pricer(shipped=shipped, user_models={"m": price})
    # 600 * 2 * 0.5 + 400 * 0.5 + 500 * 8 * 0.5
    assert cost(p, "batch").actual == pytest.approx(0.0028)


def test_cached_price_defaults_to_input() -> None:
    p = Pricer(user_models={"m": ModelPrice(input=2.0, output=8.0)})
    assert cost(p, "realtime").actual == pytest.approx(LIST_UNCACHED)


@pytest.mark.parametrize(
    ("lane", "received", "sent", "actual", "baseline"),
    [
        # Held from the peak into the off-peak window: baseline is "sent on arrival".
        ("offpeak", MONDAY_PEAK, MONDAY_NOON, LIST, 2 * LIST),
        # Escalated by the deadline guard into the peak: a negative saving.
        ("offpeak", MONDAY_NOON, MONDAY_PEAK, 2 * LIST, LIST),
        ("realtime", MONDAY_PEAK, MONDAY_PEAK, 2 * LIST, 2 * LIST),
        ("batch", MONDAY_PEAK, MONDAY_NIGHT, LIST / 2, 2 * LIST),
    ],
)
def test_price_windows(
    lane: str, received: float, sent: float, actual: float, baseline: float
) -> None:
    result = cost(pricer(), lane, provider="windowed", at=sent, received_at=received)
    assert result.actual == pytest.approx(actual)
    assert result.baseline == pytest.approx(baseline)


def test_windows_belong_to_the_provider() -> None:
    assert cost(pricer(), "realtime", provider="plain", at=MONDAY_PEAK).actual == pytest.approx(
        LIST
    )


def test_reasoning_tokens_are_part_of_completion_tokens() -> None:
    p = pricer()
    with_reasoning = UsageFacts(1000, 500, 400, reasoning_tokens=300)
    a = p.cost(
        provider_type="openai",
        provider="x",
        model="m",
        usage=with_reasoning,
        lane="realtime",
        at=MONDAY_NOON,
    )
    assert a is not None
    assert a.actual == pytest.approx(LIST)


def test_accepts_the_adapters_usage_type() -> None:
    usage = Usage(prompt_tokens=1000, completion_tokens=500, cached_tokens=400)
    result = pricer().cost(
        provider_type="openai", provider="x", model="m", usage=usage, lane="flex", at=0.0
    )
    assert result is not None
    assert result.actual == pytest.approx(LIST / 2)


def test_bad_usage_is_clamped() -> None:
    usage = UsageFacts(prompt_tokens=100, completion_tokens=-5, cached_tokens=500)
    result = pricer().cost(
        provider_type="openai", provider="x", model="m", usage=usage, lane="realtime", at=0.0
    )
    assert result is not None
    assert result.actual == pytest.approx(100 * 0.5 / 1e6)


def test_unknown_model_is_none_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    p = pricer()
    with caplog.at_level(logging.WARNING, logger="proxy.costs.pricing"):
        for _ in range(3):
            assert (
                p.cost(
                    provider_type="openai",
                    provider="x",
                    model="nope",
                    usage=USAGE,
                    lane="realtime",
                    at=0.0,
                )
                is None
            )
    assert [r.getMessage() for r in caplog.records] == [
        "no price known for openai model 'nope': its cost is recorded as null"
    ]
    assert p.model_price("openai", "nope") is None


@pytest.mark.parametrize("lane", ["", "priority", "batch+", "realtime+storage", "cache"])
def test_unknown_lane_is_a_programming_error(lane: str) -> None:
    with pytest.raises(ValueError, match="unknown lane"):
        cost(pricer(), lane)


def test_model_price_round_trips() -> None:
    price = pricer(cache_storage_per_hour=1.0).model_price("openai", "m")
    assert price == ModelPrice(input=2.0, output=8.0, cached_input=0.5, cache_storage_per_hour=1.0)


def test_storage_cost() -> None:
    p = pricer(cache_storage_per_hour=4.5)
    assert p.storage_cost("openai", "m", tokens=2_000_000, seconds=1800, at=0) == pytest.approx(4.5)
    assert p.storage_cost("openai", "nope", tokens=1, seconds=1, at=0) is None


def test_qualified_key_beats_bare_key() -> None:
    p = Pricer(
        user_models={
            "m": ModelPrice(input=1.0, output=1.0),
            "deepseek/m": ModelPrice(input=3.0, output=3.0),
        }
    )
    assert p.model_price("openai", "m") == ModelPrice(input=1.0, output=1.0, cached_input=1.0)
    assert p.model_price("deepseek", "m") == ModelPrice(input=3.0, output=3.0, cached_input=3.0)
