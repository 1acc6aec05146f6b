"""Auth, error statuses and every fault kind, seen through raw httpx and through the
official SDK (which must raise the right exception class and honour the retry headers);
plus request recording, rate-limit headers and the ``/_emulator`` control routes."""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion
from starlette.applications import Starlette

from adapters.clock import ManualClock
from adapters.emulators.faults import Fault
from adapters.emulators.openai.errors import (
    flex_unavailable_fault,
    insufficient_quota_fault,
    rate_limit_fault,
)
from adapters.emulators.openai.ratelimit import go_duration
from adapters.emulators.transport import ConnectionDropped
from tests.emulators.conftest import AUTH, KEY, sdk_for
from tests.sdk_checks import strict

URL = "/v1/chat/completions"
BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


async def ask(sdk: openai.AsyncOpenAI) -> ChatCompletion:
    return await sdk.chat.completions.create(model="gpt-4o", messages=BODY["messages"])  # type: ignore[arg-type]


async def test_missing_and_wrong_keys(make_app: Any) -> None:
    app = make_app(api_keys=frozenset({KEY}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
        missing = await c.post(URL, json=BODY)
        assert missing.status_code == 401
        assert "You didn't provide an API key" in missing.json()["error"]["message"]
        wrong_key = "sk-wrong-key-1234567890abcd"
        wrong = await c.post(URL, json=BODY, headers={"authorization": f"Bearer {wrong_key}"})
        assert wrong.status_code == 401
        error = wrong.json()["error"]
        assert error["code"] == "invalid_api_key"
        assert wrong_key not in error["message"]
        assert "abcd" in error["message"]
        ok = await c.post(URL, json=BODY, headers=AUTH)
        assert ok.status_code == 200
    sdk = sdk_for(app)
    sdk.api_key = "sk-nope-nope-nope"
    with pytest.raises(openai.AuthenticationError):
        await ask(sdk)
    await sdk.close()


async def test_requests_are_recorded_with_lowercase_headers(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    await client.post(URL, json=BODY, headers={**AUTH, "X-Custom": "yes"})
    await client.get("/v1/models", headers=AUTH)
    first, second = app.state.requests
    assert (first["method"], first["path"], first["json"]) == ("POST", URL, BODY)
    assert first["headers"]["authorization"] == f"Bearer {KEY}"
    assert first["headers"]["x-custom"] == "yes"
    assert (second["method"], second["json"]) == ("GET", None)


async def test_request_log_is_bounded(make_app: Any) -> None:
    app = make_app(request_log_size=5)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
        for i in range(8):
            await c.get(f"/v1/models/gpt-{i}", headers=AUTH)
    assert [r["path"] for r in app.state.requests] == [f"/v1/models/gpt-{i}" for i in range(3, 8)]


STATUS_CLASSES = [
    (400, openai.BadRequestError),
    (401, openai.AuthenticationError),
    (403, openai.PermissionDeniedError),
    (404, openai.NotFoundError),
    (409, openai.ConflictError),
    (422, openai.UnprocessableEntityError),
    (429, openai.RateLimitError),
    (500, openai.InternalServerError),
    (502, openai.InternalServerError),
    (503, openai.InternalServerError),
]


@pytest.mark.parametrize(("status", "error_class"), STATUS_CLASSES)
async def test_status_faults_map_to_sdk_exceptions(
    app: Starlette, status: int, error_class: type[openai.APIStatusError]
) -> None:
    app.state.faults.add(status=status)
    sdk = sdk_for(app)
    with pytest.raises(error_class) as info:
        await ask(sdk)
    assert info.value.status_code == status
    body = info.value.body
    assert isinstance(body, dict)
    assert set(body) == {"message", "type", "param", "code"}
    assert await ask(sdk)  # the fault was used up
    await sdk.close()


async def test_status_fault_with_a_custom_body(app: Starlette, client: httpx.AsyncClient) -> None:
    error = {"message": "nope", "type": "invalid_request_error", "param": "x", "code": "y"}
    app.state.faults.add(status=400, body={"error": error}, path="/chat/completions")
    assert (await client.get("/v1/models", headers=AUTH)).status_code == 200  # path filter
    response = await client.post(URL, json=BODY, headers=AUTH)
    assert (response.status_code, response.json()) == (400, {"error": error})


async def test_429_carries_retry_and_ratelimit_headers(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    app.state.faults.add(rate_limit_fault(retry_after=2, retry_after_ms=1500))
    response = await client.post(URL, json=BODY, headers=AUTH)
    assert response.status_code == 429
    headers = response.headers
    assert headers["retry-after"] == "2"
    assert headers["retry-after-ms"] == "1500"
    assert headers["x-ratelimit-remaining-tokens"] == "0"
    for name in ("limit-requests", "limit-tokens", "remaining-requests", "reset-tokens"):
        assert f"x-ratelimit-{name}" in headers
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("tokens", "rate_limit_exceeded")
    assert "Rate limit reached for gpt-4o" in error["message"]


async def test_sdk_retries_a_429_honouring_retry_after_ms(app: Starlette) -> None:
    app.state.faults.add(status=429, retry_after_ms=10)
    sdk = sdk_for(app, max_retries=2)
    assert (await ask(sdk)).choices
    assert len(app.state.requests) == 2
    await sdk.close()


async def test_x_should_retry_false_stops_sdk_retries(app: Starlette) -> None:
    app.state.faults.add(status=500, should_retry=False, times=-1)
    sdk = sdk_for(app, max_retries=2)
    with pytest.raises(openai.InternalServerError) as info:
        await ask(sdk)
    assert info.value.response.headers["x-should-retry"] == "false"
    assert len(app.state.requests) == 1
    await sdk.close()


async def test_flex_and_quota_helpers(app: Starlette) -> None:
    sdk = sdk_for(app)
    app.state.faults.add(flex_unavailable_fault())
    with pytest.raises(openai.RateLimitError) as info:
        await sdk.chat.completions.create(
            model="gpt-4o",
            messages=BODY["messages"],
            service_tier="flex",  # type: ignore[arg-type]
        )
    assert info.value.code == "resource_unavailable"
    app.state.faults.add(insufficient_quota_fault())
    with pytest.raises(openai.RateLimitError) as info:
        await ask(sdk)
    assert info.value.code == "insufficient_quota"
    await sdk.close()


async def test_drop_in_process_is_a_transport_error(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    app.state.faults.add(drop=True)
    with pytest.raises(httpx.RemoteProtocolError) as info:
        await client.post(URL, json=BODY, headers=AUTH)
    assert isinstance(info.value, ConnectionDropped)
    app.state.faults.add(drop=True)
    sdk = sdk_for(app)
    with pytest.raises(openai.APIConnectionError):
        await ask(sdk)
    await sdk.close()


async def test_malformed_is_200_with_invalid_json(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    app.state.faults.add(malformed=True)
    response = await client.post(URL, json=BODY, headers=AUTH)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    with pytest.raises(ValueError):  # noqa: PT011 - any JSON decode error
        response.json()


async def test_latency_fault_and_config_latency(make_app: Any) -> None:
    app = make_app(latency=0.03)
    app.state.faults.add(latency=0.05)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
        started = time.perf_counter()
        assert (await c.post(URL, json=BODY, headers=AUTH)).status_code == 200
        assert time.perf_counter() - started >= 0.075


async def test_faults_apply_times_and_forever(app: Starlette, client: httpx.AsyncClient) -> None:
    app.state.faults.add(status=503, times=2)
    codes = [(await client.get("/v1/models", headers=AUTH)).status_code for _ in range(3)]
    assert codes == [503, 503, 200]
    app.state.faults.add(status=500, times=-1)
    codes = [(await client.get("/v1/models", headers=AUTH)).status_code for _ in range(3)]
    assert codes == [500, 500, 500]
    app.state.faults.clear()
    assert (await client.get("/v1/models", headers=AUTH)).status_code == 200


async def test_control_routes(
    app: Starlette, client: httpx.AsyncClient, clock: ManualClock
) -> None:
    added = await client.post("/_emulator/faults", json={"status": 503, "path": "/models"})
    assert added.status_code == 200
    assert added.json()["status"] == 503
    listed = (await client.get("/_emulator/faults")).json()["data"]
    assert [f["status"] for f in listed] == [503]
    assert (await client.get("/v1/models", headers=AUTH)).status_code == 503
    await client.post("/_emulator/faults", json=Fault(status=500, times=-1).model_dump())
    assert (await client.delete("/_emulator/faults")).status_code == 200
    assert (await client.get("/v1/models", headers=AUTH)).status_code == 200
    bad = await client.post("/_emulator/faults", json={"status": 500, "explode": True})
    assert bad.status_code == 422

    recorded = (await client.get("/_emulator/requests")).json()["data"]
    assert [r["path"] for r in recorded] == ["/v1/models", "/v1/models"]  # control calls are not
    await client.delete("/_emulator/requests")
    assert app.state.requests == []

    before = clock.now()
    moved = await client.post("/_emulator/clock", json={"advance": 90})
    assert moved.json() == {"now": before + 90}
    assert clock.now() == before + 90
    assert (await client.post("/_emulator/clock", json={"set": 5.0})).json() == {"now": 5.0}
    assert (await client.get("/_emulator/clock")).json() == {"now": 5.0}
    assert (await client.post("/_emulator/clock", json={"advance": "x"})).status_code == 400
    assert (await client.post("/_emulator/clock", json={})).status_code == 400


async def test_clock_control_needs_a_manual_clock() -> None:
    from adapters.emulators.openai.server import create_app

    app = create_app()  # system clock
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
        assert (await c.post("/_emulator/clock", json={"advance": 1})).status_code == 409


async def test_ratelimit_headers_count_the_minute(
    app: Starlette, client: httpx.AsyncClient, clock: ManualClock
) -> None:
    first = await client.post(URL, json=BODY, headers=AUTH)
    second = await client.post(URL, json=BODY, headers=AUTH)
    assert int(first.headers["x-ratelimit-remaining-requests"]) == 9999
    assert int(second.headers["x-ratelimit-remaining-requests"]) == 9998
    spent = second.json()["usage"]["total_tokens"] * 2
    assert int(second.headers["x-ratelimit-remaining-tokens"]) == 30_000_000 - spent
    clock.advance(61)
    third = await client.post(URL, json=BODY, headers=AUTH)
    assert int(third.headers["x-ratelimit-remaining-requests"]) == 9999


async def test_enforced_rate_limit(make_app: Any, clock: ManualClock) -> None:
    app = make_app(rpm_limit=2, enforce_rate_limits=True)
    sdk = sdk_for(app)
    await ask(sdk)
    clock.advance(10)
    await ask(sdk)
    with pytest.raises(openai.RateLimitError) as info:
        await ask(sdk)
    assert info.value.code == "rate_limit_exceeded"
    assert info.value.response.headers["retry-after"] == "50"
    clock.advance(50)
    assert (await ask(sdk)).choices
    await sdk.close()


def test_go_durations() -> None:
    assert [go_duration(s) for s in (0.012, 0.0, 1.5, 6, 360)] == [
        "12ms",
        "1ms",
        "1.5s",
        "6s",
        "6m0s",
    ]


async def test_unknown_routes_use_the_openai_envelope(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/assistants", json={}, headers=AUTH)
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Invalid URL (POST /v1/assistants)"
    response = await client.get(URL, headers=AUTH)
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Invalid URL (GET /v1/chat/completions)"


async def test_sdk_validates_a_completion_after_faults(app: Starlette) -> None:
    app.state.faults.add(status=502)
    sdk = sdk_for(app, max_retries=1)
    completion = await ask(sdk)  # 502 is retried by the SDK
    strict(ChatCompletion, completion.model_dump(mode="json", exclude_unset=True))
    await sdk.close()
