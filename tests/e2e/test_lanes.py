"""Lane choice through the HTTP proxy: the tolerance header, flex, and its fallback."""

from __future__ import annotations

import openai
import pytest

from adapters.emulators.openai.errors import flex_unavailable_fault
from tests.e2e.conftest import PATIENT_KEY, Stack

MESSAGES = [{"role": "user", "content": "Classify this ticket."}]


def test_flex_lane_sends_service_tier_flex_and_costs_less(fresh: Stack) -> None:
    raw = fresh.client().chat.completions.with_raw_response.create(
        model="flex-mini", messages=MESSAGES, extra_headers={"X-Latency-Tolerance": "5m"}
    )
    assert raw.headers["x-costroute-lane"] == "flex"
    assert raw.parse().service_tier == "flex"
    assert fresh.openai_state.requests[-1]["json"]["service_tier"] == "flex"
    row = fresh.new_routes(1)[-1]
    assert row["lane"] == "flex"
    assert "flex" in row["reason"]
    assert row["cost_usd"] == pytest.approx(row["baseline_usd"] / 2)


def test_flex_without_capacity_falls_back_to_the_standard_tier(fresh: Stack) -> None:
    fresh.openai_state.faults.add(flex_unavailable_fault(times=3))
    raw = fresh.client().chat.completions.with_raw_response.create(
        model="flex-mini", messages=MESSAGES, extra_headers={"X-Latency-Tolerance": "5m"}
    )
    assert raw.headers["x-costroute-lane"] == "realtime"
    sent = [request["json"] for request in fresh.openai_state.requests]
    assert [body.get("service_tier") for body in sent] == ["flex", "flex", "flex", None]
    row = fresh.new_routes(1)[-1]
    assert row["lane"] == "realtime"
    assert "flex capacity unavailable" in row["reason"]


def test_short_tolerance_on_a_non_flex_model_is_real_time_with_the_reason(fresh: Stack) -> None:
    raw = fresh.client().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, extra_headers={"X-Latency-Tolerance": "90s"}
    )
    assert raw.headers["x-costroute-lane"] == "realtime"
    row = fresh.new_routes(1)[-1]
    assert "batch.min_tolerance" in row["reason"]


@pytest.mark.parametrize("value", ["soon", "1.5h", "-1h", "10", "1w", "99999d"])
def test_malformed_tolerance_is_400_naming_the_header_and_queues_nothing(
    fresh: Stack, value: str
) -> None:
    with fresh.http() as http:
        response = http.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": MESSAGES},
            headers={"X-Latency-Tolerance": value},
        )
        tickets = http.get("/v1/tickets").json()["data"]
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "X-Latency-Tolerance"
    assert fresh.openai_state.requests == []
    assert all(t["created_at"] for t in tickets)  # listing works; nothing new is queued
    assert not [t for t in tickets if t.get("model") == "gpt-4o-mini" and value in str(t)]


def test_stream_with_a_tolerance_header_is_400(fresh: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        fresh.client().chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            extra_headers={"X-Latency-Tolerance": "4h"},
        )
    assert info.value.param == "X-Latency-Tolerance"


def test_a_keys_default_tolerance_applies_unless_the_caller_streams(fresh: Stack) -> None:
    client = fresh.client(key=PATIENT_KEY)
    raw = client.chat.completions.with_raw_response.create(model="flex-mini", messages=MESSAGES)
    assert raw.headers["x-costroute-lane"] == "flex"  # default_tolerance = 5m
    chunks = list(client.chat.completions.create(model="flex-mini", messages=MESSAGES, stream=True))
    assert chunks
    assert "service_tier" not in fresh.openai_state.requests[-1]["json"]
    zero = client.chat.completions.with_raw_response.create(
        model="flex-mini", messages=MESSAGES, extra_headers={"X-Latency-Tolerance": "0"}
    )
    assert zero.headers["x-costroute-lane"] == "realtime"
