"""Real-time upstream faults over real sockets (end-to-end basics are in tests/e2e):
one slow or failing provider never holds up another, a Retry-After beyond the cap is
passed on rather than slept, storms of failures are answered one envelope each, an
in-band upstream stream error reaches the caller, and a provider's 200 whose body is
not the shape it should be is a 502, never a 500."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.hardening.stack import CLIENT_A, MESSAGES, HardStack


def _chat(s: HardStack, model: str, **extra: object) -> httpx.Response:
    with s.http(CLIENT_A) as client:
        return client.post(
            "/v1/chat/completions", json={"model": model, "messages": MESSAGES, **extra}
        )


def _envelope(response: httpx.Response) -> dict[str, object]:
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, object] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_a_slow_provider_does_not_hold_up_the_others(fresh: HardStack) -> None:
    fresh.openai.app.state.faults.add(path="/chat/completions", latency=2.0, times=-1)
    with ThreadPoolExecutor(16) as pool:
        slow = [pool.submit(_chat, fresh, "gpt-4o-mini") for _ in range(8)]
        time.sleep(0.2)  # the slow calls are now in flight
        started = time.monotonic()
        quick = [pool.submit(_chat, fresh, "deepseek-flash") for _ in range(8)]
        assert all(f.result().status_code == 200 for f in quick)
        quick_time = time.monotonic() - started
        assert httpx.get(fresh.url + "/healthz").status_code == 200
        assert all(f.result().status_code == 200 for f in slow)
    assert quick_time < 1.2, quick_time  # the slow calls take 2 s each


def test_a_retry_after_beyond_the_cap_is_passed_on_not_slept(fresh: HardStack) -> None:
    fresh.openai.app.state.faults.add(status=429, retry_after=30, times=-1)
    started = time.monotonic()
    response = _chat(fresh, "gpt-4o-mini")
    assert time.monotonic() - started < 2  # retry.max_retry_after is 1 s
    assert response.status_code == 429
    assert response.headers["retry-after"] == "30"
    assert _envelope(response)["code"] == "rate_limit_exceeded"
    assert len(fresh.openai.app.state.requests) == 1  # not worth retrying within the cap


@pytest.mark.parametrize(
    ("fault", "status"),
    [
        ({"status": 503}, 503),
        ({"drop": True}, 502),
        ({"malformed": True}, 502),
    ],
)
def test_storms_get_one_envelope_each_and_the_proxy_recovers(
    fresh: HardStack, fault: dict[str, object], status: int
) -> None:
    fresh.openai.app.state.faults.add(times=-1, **fault)
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: _chat(fresh, "gpt-4o-mini"), range(24)))
    assert {a.status_code for a in answers} == {status}
    for answer in answers:
        _envelope(answer)
    fresh.openai.app.state.faults.clear()
    assert _chat(fresh, "gpt-4o-mini").status_code == 200
    rows = fresh.sql("SELECT status FROM routes WHERE status = ?", (status,))
    assert len(rows) >= 24  # every failure has its routing-log row


def test_an_in_band_stream_error_reaches_the_caller(fresh: HardStack) -> None:
    fresh.openai.app.state.faults.add(error_after_events=2)
    started = time.monotonic()
    response = _chat(fresh, "gpt-4o-mini", stream=True)
    assert time.monotonic() - started < 3
    events = [line for line in response.text.split("\n\n") if line.startswith("data: ")]
    assert '"error"' in events[-1] or '"error"' in events[-2], events[-2:]


def test_a_gemini_reply_of_the_wrong_shape_is_a_502(fresh: HardStack) -> None:
    fresh.gemini.app.state.faults.add(
        status=200, body={"candidates": [{"finishReason": ["STOP"]}]}, times=-1
    )
    response = _chat(fresh, "gemini-2.5-flash")
    assert response.status_code == 502
    _envelope(response)


def test_an_openai_reply_of_the_wrong_shape_is_not_a_500(fresh: HardStack) -> None:
    fresh.openai.app.state.faults.add(status=200, body={"choices": "nope", "usage": [1]}, times=-1)
    response = _chat(fresh, "gpt-4o-mini")
    assert response.status_code != 500
    if response.status_code >= 400:
        _envelope(response)
