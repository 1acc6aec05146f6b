"""The planner as a table of cases: tolerance x model capabilities x price windows."""

from __future__ import annotations

import datetime as dt

import pytest

from proxy.lanes.planner import Lane, plan
from proxy.settings import Settings, parse_settings

CHAT = "/v1/chat/completions"
EMBED = "/v1/embeddings"
HOUR = 3600


def at(text: str) -> float:
    """Unix seconds of an ISO UTC time (2026-01-01 is a Thursday)."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


PEAK = [
    {"name": "peak-am", "days": ["mon", "tue", "wed", "thu", "fri"], "start": "01:00",
     "end": "04:00", "multiplier": 2.0},
    {"name": "peak-pm", "days": ["mon", "tue", "wed", "thu", "fri"], "start": "06:00",
     "end": "10:00", "multiplier": 2.0},
]  # fmt: skip


@pytest.fixture(scope="module")
def settings() -> Settings:
    return parse_settings(
        {
            "providers": {
                "openai": {"type": "openai", "base_url": "http://127.0.0.1:1/v1"},
                "deepseek": {
                    "type": "deepseek",
                    "base_url": "http://127.0.0.1:2",
                    "price_windows": PEAK,
                },
                "gemini": {"type": "gemini", "base_url": "http://127.0.0.1:3"},
            },
            "models": {
                "gpt-4o-mini": {"provider": "openai", "flex": True},
                "gpt-4o": {"provider": "openai"},
                "alias": {"provider": "openai", "upstream_model": "gpt-4.1-mini", "flex": True},
                "flex-only": {"provider": "openai", "batch": False, "flex": True},
                "text-embedding-3-small": {"provider": "openai", "kind": "embedding"},
                "deepseek-flash": {"provider": "deepseek"},
                "gemini-2.5-flash": {"provider": "gemini"},
            },
            "batch": {"min_tolerance": "1h", "flex_min_tolerance": "60s", "deadline_margin": "15m"},
        }
    )


THU_0000 = at("2026-01-01T00:00:00")
CASES = [
    # (model, endpoint, tolerance, now, lane, not_before, reason fragment)
    ("gpt-4o-mini", CHAT, None, THU_0000, Lane.REALTIME, None, "no latency tolerance"),
    ("gpt-4o-mini", CHAT, 0, THU_0000, Lane.REALTIME, None, "no latency tolerance"),
    ("gpt-4o-mini", CHAT, 4 * HOUR, THU_0000, Lane.BATCH, None, "4h >= batch.min_tolerance 1h"),
    ("gpt-4o-mini", CHAT, HOUR, THU_0000, Lane.BATCH, None, "1h >= batch.min_tolerance"),
    ("gpt-4o-mini", CHAT, 30 * 60, THU_0000, Lane.FLEX, None, "30m >= batch.flex_min_tolerance"),
    ("gpt-4o-mini", CHAT, 60, THU_0000, Lane.FLEX, None, "flex"),
    ("gpt-4o-mini", CHAT, 30, THU_0000, Lane.REALTIME, None, "30s < batch.flex_min_tolerance"),
    ("gpt-4o", CHAT, 30 * 60, THU_0000, Lane.REALTIME, None, "30m < batch.min_tolerance"),
    ("gpt-4o", CHAT, 24 * HOUR, THU_0000, Lane.BATCH, None, "batch"),
    ("alias", CHAT, 2 * HOUR, THU_0000, Lane.BATCH, None, "batch"),
    ("flex-only", CHAT, 24 * HOUR, THU_0000, Lane.FLEX, None, "batch disabled"),
    ("text-embedding-3-small", EMBED, 4 * HOUR, THU_0000, Lane.BATCH, None, "batch"),
    ("text-embedding-3-small", EMBED, 10 * 60, THU_0000, Lane.REALTIME, None, "min_tolerance"),
    ("gemini-2.5-flash", CHAT, 24 * HOUR, THU_0000, Lane.BATCH, None, "gemini batch at batch"),
    ("gemini-2.5-flash", EMBED, 24 * HOUR, THU_0000, Lane.REALTIME, None,
     "no gemini batch lane for /v1/embeddings"),
    # DeepSeek: peak (2x) Mon-Fri 01:00-04:00 and 06:00-10:00 UTC.
    ("deepseek-flash", CHAT, 4 * HOUR, at("2026-01-01T02:00:00"), Lane.OFFPEAK,
     at("2026-01-01T04:00:00"), "held until Thu 04:00 UTC (1x)"),
    ("deepseek-flash", CHAT, 2 * HOUR, at("2026-01-01T02:00:00"), Lane.REALTIME, None,
     "no cheaper price window before the deadline"),
    ("deepseek-flash", CHAT, 4 * HOUR, at("2026-01-01T05:00:00"), Lane.REALTIME, None,
     "no cheaper price window"),
    ("deepseek-flash", CHAT, 2 * HOUR, at("2026-01-02T09:00:00"), Lane.OFFPEAK,
     at("2026-01-02T10:00:00"), "charges 2x now"),
    ("deepseek-flash", CHAT, 8 * HOUR, at("2026-01-03T02:00:00"), Lane.REALTIME, None,
     "no cheaper"),  # Saturday: off-peak already
    ("deepseek-flash", CHAT, 90, at("2026-01-01T03:59:00"), Lane.REALTIME, None, "no batch lane"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("model", "endpoint", "tolerance", "now", "lane", "not_before", "why"), CASES
)
def test_plan_table(
    settings: Settings,
    model: str,
    endpoint: str,
    tolerance: int | None,
    now: float,
    lane: Lane,
    not_before: float | None,
    why: str,
) -> None:
    decision = plan(model=model, endpoint=endpoint, tolerance=tolerance, settings=settings, now=now)
    assert decision.lane is lane, decision.reason
    assert why in decision.reason
    assert decision.not_before == not_before
    assert decision.provider == settings.models[model].provider
    assert decision.upstream_model == settings.upstream_model(model)
    assert decision.deferred == (lane in (Lane.BATCH, Lane.OFFPEAK))
    if decision.deferred:
        assert tolerance is not None
        assert decision.deadline == now + tolerance
    else:
        assert decision.deadline is None


def test_upstream_model_is_resolved(settings: Settings) -> None:
    decision = plan(model="alias", endpoint=CHAT, tolerance=HOUR, settings=settings, now=THU_0000)
    assert decision.upstream_model == "gpt-4.1-mini"


def test_offpeak_hold_leaves_the_guard_margin(settings: Settings) -> None:
    # Deadline 04:10 leaves 04:10 - 15m = 03:55 < 04:00: the window opens too late.
    now = at("2026-01-01T02:10:00")
    decision = plan(
        model="deepseek-flash", endpoint=CHAT, tolerance=2 * HOUR, settings=settings, now=now
    )
    assert decision.lane is Lane.REALTIME
    later = plan(
        model="deepseek-flash", endpoint=CHAT, tolerance=2 * HOUR + 600, settings=settings, now=now
    )
    assert later.lane is Lane.OFFPEAK


def test_a_discount_window_across_midnight_is_found(settings: Settings) -> None:
    night = {"name": "night", "days": ["thu"], "start": "22:00", "end": "02:00", "multiplier": 0.5}
    data = settings.model_dump()
    data["providers"]["deepseek"]["price_windows"] = [night]
    cheap_nights = Settings.model_validate(data)
    decision = plan(
        model="deepseek-flash",
        endpoint=CHAT,
        tolerance=4 * HOUR,
        settings=cheap_nights,
        now=at("2026-01-01T20:00:00"),
    )
    assert decision.lane is Lane.OFFPEAK
    assert decision.not_before == at("2026-01-01T22:00:00")
    assert "charges 1x now" in decision.reason
    assert "(0.5x)" in decision.reason
    inside = plan(
        model="deepseek-flash",
        endpoint=CHAT,
        tolerance=4 * HOUR,
        settings=cheap_nights,
        now=at("2026-01-02T01:00:00"),  # Friday 01:00, still in Thursday's window
    )
    assert inside.lane is Lane.REALTIME


def test_shipped_windows_hold_a_request_when_the_config_gives_none(settings: Settings) -> None:
    # DeepSeek's peak hours are in the shipped price table from 2026-08-16: the pricer
    # charges 2x in them with no ``price_windows`` configured, so the planner must hold
    # for the off-peak price just the same (it did not, and the simulator showed the loss).
    data = settings.model_dump()
    data["providers"]["deepseek"]["price_windows"] = []
    shipped_only = Settings.model_validate(data)
    monday_0200 = at("2026-11-30T02:00:00")
    decision = plan(
        model="deepseek-flash", endpoint=CHAT, tolerance=4 * HOUR, settings=shipped_only,
        now=monday_0200,
    )  # fmt: skip
    assert decision.lane is Lane.OFFPEAK
    assert decision.not_before == at("2026-11-30T04:00:00")
    before = plan(
        model="deepseek-flash", endpoint=CHAT, tolerance=4 * HOUR, settings=shipped_only,
        now=at("2026-01-01T02:00:00"),  # before the shipped windows began: one price
    )  # fmt: skip
    assert before.lane is Lane.REALTIME
