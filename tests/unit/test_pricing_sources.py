"""Where prices come from: genai-prices, the shipped table, the user's table and config."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest
from genai_prices import data_snapshot

from proxy.costs.pricing import Pricer, UsageFacts
from proxy.costs.sources import GenaiModel, GenaiPrices, load_price_table, load_shipped_table
from proxy.settings import ConfigError, ModelPrice, parse_settings


def ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()  # type: ignore[misc]


NOW = ts(2026, 11, 25, 12)  # a Wednesday, off-peak
GENAI = "genai-prices"


@pytest.fixture(scope="module")
def genai() -> GenaiPrices:
    return GenaiPrices()


@pytest.fixture
def shipped_pricer(genai: GenaiPrices) -> Pricer:
    return Pricer(shipped=load_shipped_table(), genai=genai)


def test_genai_prices_is_the_default_source(shipped_pricer: Pricer) -> None:
    rates = shipped_pricer.rates("openai", "gpt-4o", NOW)
    assert rates is not None
    assert (rates.input, rates.cached_input, rates.output) == (2.5, 1.25, 10.0)
    assert rates.batch_discount == 0.5
    assert rates.sources[0].startswith(GENAI)
    assert len(rates.sources) == 1


@pytest.mark.parametrize(
    ("model", "prices"),
    [
        ("gpt-4o-mini", (0.15, 0.075, 0.60)),
        ("gpt-4.1", (2.00, 0.50, 8.00)),
        ("gpt-4.1-mini", (0.40, 0.10, 1.60)),
        ("gpt-4o-2024-08-06", (2.50, 1.25, 10.00)),
    ],
)
def test_openai_list_prices_match_the_reference(
    shipped_pricer: Pricer, model: str, prices: tuple[float, float, float]
) -> None:
    rates = shipped_pricer.rates("openai", model, NOW)
    assert rates is not None
    assert (rates.input, rates.cached_input, rates.output) == prices


def test_gemini_gets_storage_and_undiscounted_cached_batch(shipped_pricer: Pricer) -> None:
    flash = shipped_pricer.rates("gemini", "gemini-2.5-flash", NOW)
    pro = shipped_pricer.rates("gemini", "models/gemini-2.5-pro", NOW)
    assert flash is not None
    assert pro is not None
    assert (flash.input, flash.cached_input, flash.output) == (0.30, 0.03, 2.50)
    assert flash.cache_storage_per_hour == 1.0
    assert pro.cache_storage_per_hour == 4.5
    assert not flash.batch_discounts_cached
    assert not flash.flex
    assert flash.sources[0].startswith(GENAI)
    assert flash.sources[1].startswith("prices.toml")
    # Batch halves input and output, not the cached price: 500 * 0.15 + 500 * 0.03 + 100 * 1.25
    usage = UsageFacts(prompt_tokens=1000, completion_tokens=100, cached_tokens=500)
    batch = shipped_pricer.cost(
        provider_type="gemini",
        provider="g",
        model="gemini-2.5-flash",
        usage=usage,
        lane="batch",
        at=NOW,
    )
    assert batch is not None
    assert batch.actual == pytest.approx((500 * 0.15 + 500 * 0.03 + 100 * 1.25) / 1e6)


def test_gemini_pro_long_context_tier(shipped_pricer: Pricer) -> None:
    def price(prompt: int) -> float:
        result = shipped_pricer.cost(
            provider_type="gemini",
            provider="g",
            model="gemini-2.5-pro",
            usage=UsageFacts(prompt, 1000),
            lane="realtime",
            at=NOW,
        )
        assert result is not None
        return result.actual

    assert price(200_000) == pytest.approx((200_000 * 1.25 + 1000 * 10) / 1e6)
    assert price(200_001) == pytest.approx((200_001 * 2.50 + 1000 * 15) / 1e6)


@pytest.mark.parametrize(
    ("model", "at", "prices"),
    [
        # genai-prices has the 2025 off-peak price at every hour: the shipped table corrects it.
        ("deepseek-chat", ts(2025, 6, 1), (0.27, 0.07, 1.10)),
        ("deepseek-chat", ts(2026, 1, 1), (0.28, 0.028, 0.42)),
        ("deepseek-chat", ts(2026, 6, 1), (0.14, 0.0028, 0.28)),
        ("deepseek-reasoner", ts(2025, 6, 1), (0.55, 0.14, 2.19)),
        ("deepseek-reasoner", ts(2026, 1, 1), (0.28, 0.028, 0.42)),
        # V4 prices changed at 16:00 UTC, genai-prices dates it to the next UTC day.
        ("deepseek-v4-flash", ts(2026, 8, 16, 15), (0.14, 0.0028, 0.28)),
        ("deepseek-v4-flash", ts(2026, 8, 16, 17), (0.22, 0.007, 0.66)),
        ("deepseek-v4-flash", ts(2026, 8, 20), (0.22, 0.007, 0.66)),
        ("deepseek-v4-flash", ts(2026, 9, 15), (0.15, 0.003, 0.60)),
        ("deepseek-v4-pro", ts(2026, 8, 16, 17), (0.66, 0.022, 1.98)),
        ("deepseek-flash", NOW, (0.15, 0.003, 0.60)),
    ],
)
def test_deepseek_prices_by_date(
    shipped_pricer: Pricer, model: str, at: float, prices: tuple[float, float, float]
) -> None:
    rates = shipped_pricer.rates("deepseek", model, at)
    assert rates is not None
    assert (rates.input, rates.cached_input, rates.output) == prices
    assert not rates.batch


@pytest.mark.parametrize(
    ("at", "multiplier"),
    [
        (ts(2026, 11, 23, 2), 2.0),  # Monday 02:00: peak
        (ts(2026, 11, 23, 4), 1.0),  # Monday 04:00: off-peak
        (ts(2026, 11, 23, 9, 59), 2.0),
        (ts(2026, 11, 21, 2), 1.0),  # Saturday: off-peak all day (genai-prices says peak)
        (ts(2026, 8, 10, 2), 1.0),  # before peak pricing returned on 2026-08-16
    ],
)
def test_deepseek_peak_windows(shipped_pricer: Pricer, at: float, multiplier: float) -> None:
    usage = UsageFacts(prompt_tokens=1_000_000, completion_tokens=0)
    result = shipped_pricer.cost(
        provider_type="deepseek",
        provider="ds",
        model="deepseek-flash",
        usage=usage,
        lane="realtime",
        at=at,
    )
    assert result is not None
    assert result.actual == pytest.approx(0.15 * multiplier)


def test_config_windows_replace_the_shipped_ones(genai: GenaiPrices) -> None:
    settings = parse_settings(
        {
            "providers": {
                "ds": {
                    "type": "deepseek",
                    "base_url": "http://127.0.0.1:1",
                    "price_windows": [
                        {"name": "night", "start": "22:00", "end": "06:00", "multiplier": 0.5}
                    ],
                }
            }
        }
    )
    p = Pricer.from_settings(settings)
    assert [w.name for w in p.windows("ds", "deepseek", NOW)] == ["night"]
    assert [w.name for w in p.windows("other", "deepseek", NOW)] == [
        "peak-morning",
        "peak-afternoon",
    ]
    assert p.windows("other", "deepseek", ts(2026, 8, 1)) == ()
    assert p.windows("oa", "openai", NOW) == ()


def test_user_layers_win_field_by_field(genai: GenaiPrices, tmp_path: Path) -> None:
    table = tmp_path / "prices.toml"
    table.write_text(
        '[models."gpt-4o"]\ninput = 3.0\noutput = 12.0\n'
        '[models."gemini-2.5-flash"]\ninput = 0.5\noutput = 3.0\n'
        '[models."gemini-2.5-pro"]\ninput = 1.0\noutput = 9.0\n'
    )
    settings = parse_settings(
        {
            "pricing": {
                "table": str(table),
                "models": {"gpt-4o": {"input": 4.0, "output": 16.0, "batch_discount": 0.4}},
            }
        }
    )
    p = Pricer.from_settings(settings)
    gpt = p.rates("openai", "gpt-4o", NOW)
    assert gpt is not None
    # Config beats the table; the cached price nobody overrode stays genai-prices'.
    assert (gpt.input, gpt.cached_input, gpt.output, gpt.batch_discount) == (4.0, 1.25, 16.0, 0.4)
    assert gpt.sources == (genai.label, "pricing.models")
    flash = p.rates("gemini", "gemini-2.5-flash", NOW)
    assert flash is not None
    # The table's prices, the shipped storage price.
    assert (flash.input, flash.output, flash.cache_storage_per_hour) == (0.5, 3.0, 1.0)
    pro = p.rates("gemini", "gemini-2.5-pro", NOW)
    assert pro is not None
    assert pro.tiers == ()  # a user's flat price drops genai-prices' long-context tier


def test_a_user_price_covers_a_model_nobody_knows(genai: GenaiPrices) -> None:
    settings = parse_settings({"pricing": {"models": {"house-model": {"input": 1, "output": 2}}}})
    p = Pricer.from_settings(settings)
    assert p.model_price("openai", "house-model") == ModelPrice(input=1, output=2, cached_input=1)
    rates = p.rates("openai", "house-model", NOW)
    assert rates is not None
    assert rates.sources == ("pricing.models",)


def test_configured_models_without_a_price_warn_at_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = parse_settings(
        {
            "providers": {"oa": {"type": "openai", "base_url": "http://127.0.0.1:1"}},
            "models": {
                "known": {"provider": "oa", "upstream_model": "gpt-4o"},
                "mystery": {"provider": "oa"},
            },
        }
    )
    with caplog.at_level(logging.WARNING, logger="proxy.costs.pricing"):
        Pricer.from_settings(settings)
    assert [r.getMessage() for r in caplog.records] == [
        "no price known for openai model 'mystery': its cost is recorded as null"
    ]


def test_bad_user_table_names_file_and_key(tmp_path: Path) -> None:
    table = tmp_path / "prices.toml"
    table.write_text('[models."gpt-4o"]\ninput = -1\noutput = 2\n')
    with pytest.raises(ConfigError, match=r"models\.gpt-4o\.input"):
        load_price_table(table)
    with pytest.raises(ConfigError, match="cannot read"):
        load_price_table(tmp_path / "missing.toml")
    table.write_text("[models\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_price_table(table)


def test_shipped_table_is_valid_and_dated() -> None:
    table = load_shipped_table()
    assert table.checked.isoformat() == "2026-11-25"
    assert {entry.provider for entry in table.prices} <= {
        "openai",
        "gemini",
        "deepseek",
        "anthropic",
    }
    for entry in table.prices:
        if entry.from_ is not None and entry.until is not None:
            assert entry.from_ < entry.until


def test_genai_lookup_is_precomputed_once_per_model() -> None:
    class Counting(GenaiPrices):
        calls = 0

        def lookup(self, provider_type: str, model: str) -> GenaiModel | None:
            Counting.calls += 1
            return super().lookup(provider_type, model)

    p = Pricer(shipped=load_shipped_table(), genai=Counting())
    usage = UsageFacts(100, 100)
    for hour in range(48):
        at = NOW + hour * 3600
        p.cost(
            provider_type="deepseek",
            provider="ds",
            model="deepseek-flash",
            usage=usage,
            lane="realtime",
            at=at,
        )
        p.cost(provider_type="openai", provider="oa", model="zz", usage=usage, lane="batch", at=at)
    assert Counting.calls == 2


def test_genai_snapshot_is_ours_not_the_global_one() -> None:
    # Something else in the process installs an empty (e.g. auto-updated) snapshot.
    data_snapshot.set_custom_snapshot(data_snapshot.DataSnapshot([], from_auto_update=True))
    try:
        assert GenaiPrices().lookup("openai", "gpt-4o") is not None
    finally:
        data_snapshot.set_custom_snapshot(None)


@pytest.mark.parametrize(
    ("provider_type", "model"),
    [("openai", "gemini-2.5-flash"), ("gemini", "gpt-4o"), ("deepseek", "claude-3-5-haiku")],
)
def test_genai_is_keyed_by_provider_type(
    genai: GenaiPrices, provider_type: str, model: str
) -> None:
    assert genai.lookup(provider_type, model) is None


@pytest.mark.parametrize(
    ("model", "prices"),
    [
        ("claude-sonnet-4-5", (3.0, 0.30, 15.0, 3.75, 6.0)),
        ("claude-haiku-4-5", (1.0, 0.10, 5.0, 1.25, 2.0)),
        ("claude-3-5-haiku", (0.8, 0.08, 4.0, 1.0, 1.6)),
    ],
)
def test_claude_prices_include_both_cache_write_prices_and_the_stacking_batch(
    shipped_pricer: Pricer, model: str, prices: tuple[float, ...]
) -> None:
    rates = shipped_pricer.rates("anthropic", model, NOW)
    assert rates is not None
    found = (rates.input, rates.cached_input, rates.output, rates.cache_write,
             rates.cache_write_1h)  # fmt: skip
    assert found == pytest.approx(prices)
    # Message Batches: every token at half price, cache reads too (the discounts stack).
    assert rates.batch_discount == 0.5
    assert rates.batch_discounts_cached
    assert not rates.flex
    usage = UsageFacts(prompt_tokens=1000, completion_tokens=100, cached_tokens=800)
    cost = shipped_pricer.cost(provider_type="anthropic", provider="anthropic", model=model,
                               usage=usage, lane="batch", at=NOW)  # fmt: skip
    assert cost is not None
    expected = (200 * prices[0] + 800 * prices[1] + 100 * prices[2]) * 0.5 / 1e6
    assert cost.actual == pytest.approx(expected)
