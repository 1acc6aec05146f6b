"""Gemini emulator: auth, Google's error envelope, every fault kind, and the control routes."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from adapters.clock import ManualClock, SystemClock
from adapters.emulators.faults import Fault
from adapters.emulators.gemini.config import GeminiEmulatorConfig
from adapters.emulators.gemini.server import create_app
from tests.support import ServerThread, serve

KEY = {"x-goog-api-key": "good-key"}
GENERATE = "/v1beta/models/gemini-2.5-flash:generateContent"
STREAM = "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
BODY = {"contents": [{"role": "user", "parts": [{"text": "a reply of several words please"}]}]}


@pytest.fixture
def app() -> Any:
    config = GeminiEmulatorConfig(api_keys=frozenset({"good-key"}), max_recorded_requests=5)
    return create_app(config, clock=ManualClock())


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gemini", headers=KEY) as c:
        yield c


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    with serve(create_app(clock=ManualClock())) as running:
        yield running


def envelope(response: httpx.Response, code: int, status: str) -> dict[str, Any]:
    assert response.status_code == code, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code
    assert error["status"] == status
    assert isinstance(error["message"], str)
    assert error["message"]
    return error


# -- auth ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"x-goog-api-key": ""}, {"x-goog-api-key": "wrong"}],
    ids=["none", "empty", "wrong"],
)
async def test_bad_keys_are_refused_as_google_does(app: Any, headers: dict[str, str]) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://g") as bare:
        response = await bare.post(GENERATE, json=BODY, headers=headers)
    error = envelope(response, 400, "INVALID_ARGUMENT")
    assert error["message"] == "API key not valid. Please pass a valid API key."
    info = error["details"][0]
    assert info["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    assert info["reason"] == "API_KEY_INVALID"
    assert info["domain"] == "googleapis.com"


async def test_key_in_the_query_and_any_key_by_default(app: Any) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://g") as bare:
        response = await bare.post(GENERATE, params={"key": "good-key"}, json=BODY)
        assert response.status_code == 200
    open_app = create_app()
    transport = httpx.ASGITransport(app=open_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://g") as bare:
        assert (await bare.post(GENERATE, json=BODY, headers={"x-goog-api-key": "any"})).is_success
        envelope(await bare.post(GENERATE, json=BODY), 400, "INVALID_ARGUMENT")


async def test_forbidden_when_configured() -> None:
    app = create_app(GeminiEmulatorConfig(api_keys=frozenset({"k"}), auth_error_status=403))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://g") as bare:
        response = await bare.post(GENERATE, json=BODY, headers={"x-goog-api-key": "nope"})
    envelope(response, 403, "PERMISSION_DENIED")


async def test_auth_comes_before_faults(app: Any, client: httpx.AsyncClient) -> None:
    app.state.faults.add(status=503)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://g") as bare:
        envelope(await bare.post(GENERATE, json=BODY), 400, "INVALID_ARGUMENT")
    envelope(await client.post(GENERATE, json=BODY), 503, "UNAVAILABLE")


# -- status faults -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (400, "INVALID_ARGUMENT"),
        (403, "PERMISSION_DENIED"),
        (404, "NOT_FOUND"),
        (500, "INTERNAL"),
        (503, "UNAVAILABLE"),
        (504, "DEADLINE_EXCEEDED"),
    ],
)
async def test_status_faults_use_googles_envelope(
    app: Any, client: httpx.AsyncClient, code: int, status: str
) -> None:
    app.state.faults.add(status=code)
    envelope(await client.post(GENERATE, json=BODY), code, status)
    assert (await client.post(GENERATE, json=BODY)).status_code == 200


async def test_rate_limit_carries_retry_info_not_a_header(
    app: Any, client: httpx.AsyncClient
) -> None:
    app.state.faults.add(status=429, retry_after=7.5, retry_after_ms=7500, should_retry=True)
    response = await client.post(GENERATE, json=BODY)
    error = envelope(response, 429, "RESOURCE_EXHAUSTED")
    kinds = {d["@type"].rsplit(".", 1)[-1]: d for d in error["details"]}
    assert kinds["RetryInfo"]["retryDelay"] == "7.5s"
    assert kinds["QuotaFailure"]["violations"][0]["quotaDimensions"]["model"] == "gemini-2.5-flash"
    assert "retry-after" not in response.headers
    assert response.headers["retry-after-ms"] == "7500"
    assert response.headers["x-should-retry"] == "true"


async def test_fault_body_times_and_path(app: Any, client: httpx.AsyncClient) -> None:
    app.state.faults.add(status=500, body={"error": {"code": 500, "message": "custom"}}, times=2)
    app.state.faults.add(path="cachedContents", status=404)
    for _ in range(2):
        response = await client.post(GENERATE, json=BODY)
        assert response.json() == {"error": {"code": 500, "message": "custom"}}
    assert (await client.post(GENERATE, json=BODY)).status_code == 200
    envelope(await client.get("/v1beta/cachedContents"), 404, "NOT_FOUND")


async def test_status_200_with_a_body_serves_that_reply(
    app: Any, client: httpx.AsyncClient
) -> None:
    blocked = {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}}
    app.state.faults.add(status=200, body=blocked)
    response = await client.post(GENERATE, json=BODY)
    assert response.status_code == 200
    assert response.json() == blocked


async def test_fault_latency_and_config_latency() -> None:
    app = create_app(GeminiEmulatorConfig(latency=0.05), clock=SystemClock())
    app.state.faults.add(latency=0.1)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://g", headers=KEY) as c:
        started = time.perf_counter()
        assert (await c.post(GENERATE, json=BODY)).status_code == 200
        assert time.perf_counter() - started >= 0.15


# -- broken bodies and streams -------------------------------------------------------------


async def test_malformed_body(app: Any, client: httpx.AsyncClient) -> None:
    app.state.faults.add(malformed=True)
    response = await client.post(GENERATE, json=BODY)
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()


async def test_drop_in_process_is_a_remote_protocol_error(
    app: Any, client: httpx.AsyncClient
) -> None:
    app.state.faults.add(drop=True)
    with pytest.raises(httpx.RemoteProtocolError):
        await client.post(GENERATE, json=BODY)
    assert (await client.post(GENERATE, json=BODY)).status_code == 200


async def test_drop_under_uvicorn_cuts_the_connection(server: ServerThread) -> None:
    server.app.state.faults.add(drop=True)
    async with httpx.AsyncClient(base_url=server.url, headers=KEY) as c:
        with pytest.raises(httpx.RemoteProtocolError):
            await c.post(GENERATE, json=BODY)
        assert (await c.post(GENERATE, json=BODY)).status_code == 200


async def stream_lines(c: httpx.AsyncClient, path: str, into: list[str]) -> None:
    async with c.stream("POST", path, json=BODY) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line:
                into.append(line)


async def test_stream_dropped_after_events_under_uvicorn(server: ServerThread) -> None:
    server.app.state.faults.add(path=":streamGenerateContent", drop_after_events=2)
    received: list[str] = []
    async with httpx.AsyncClient(base_url=server.url, headers=KEY) as c:
        with pytest.raises(httpx.RemoteProtocolError):
            await stream_lines(c, f"{STREAM}?alt=sse", received)
        assert len(received) == 2
        whole: list[str] = []
        await stream_lines(c, f"{STREAM}?alt=sse", whole)
        assert len(whole) > 2


async def test_stream_error_after_events(app: Any, client: httpx.AsyncClient) -> None:
    app.state.faults.add(error_after_events=1, status=503)
    response = await client.post(f"{STREAM}?alt=sse", json=BODY)
    events = [json.loads(e[6:]) for e in response.text.split("\r\n\r\n") if e]
    assert len(events) == 2
    assert "candidates" in events[0]
    assert events[1]["error"]["code"] == 503
    assert events[1]["error"]["status"] == "UNAVAILABLE"


async def test_stream_error_in_a_json_array(app: Any, client: httpx.AsyncClient) -> None:
    app.state.faults.add(error_after_events=2)
    response = await client.post(STREAM, json=BODY)
    chunks = json.loads(response.text)
    assert len(chunks) == 3
    assert chunks[-1]["error"]["status"] == "INTERNAL"


async def test_stream_faults_past_the_end_still_happen(app: Any, client: httpx.AsyncClient) -> None:
    app.state.faults.add(error_after_events=1000)
    response = await client.post(f"{STREAM}?alt=sse", json=BODY)
    assert response.text.rstrip().endswith('"status": "INTERNAL"}}')
    app.state.faults.add(drop_after_events=1000)
    with pytest.raises(httpx.RemoteProtocolError):
        await client.post(f"{STREAM}?alt=sse", json=BODY)


async def test_stream_faults_on_a_plain_call_act_at_once(
    app: Any, client: httpx.AsyncClient
) -> None:
    app.state.faults.add(error_after_events=3)
    envelope(await client.post(GENERATE, json=BODY), 500, "INTERNAL")
    app.state.faults.add(drop_after_events=3)
    with pytest.raises(httpx.RemoteProtocolError):
        await client.post(GENERATE, json=BODY)


async def test_malformed_stream(app: Any, client: httpx.AsyncClient) -> None:
    app.state.faults.add(malformed=True)
    response = await client.post(f"{STREAM}?alt=sse", json=BODY)
    (event,) = [e for e in response.text.split("\r\n\r\n") if e]
    with pytest.raises(json.JSONDecodeError):
        json.loads(event[len("data: ") :])


# -- control routes and recording ----------------------------------------------------------


async def test_control_routes_need_no_key(app: Any) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://g") as bare:
        added = await bare.post("/_emulator/faults", json={"status": 503, "times": 1})
        assert added.status_code == 200
        assert len(app.state.faults.faults) == 1
        response = await bare.post(GENERATE, json=BODY, headers=KEY)
        envelope(response, 503, "UNAVAILABLE")
        await bare.post("/_emulator/faults", json={"status": 500, "times": -1})
        assert (await bare.delete("/_emulator/faults")).status_code == 200
        assert app.state.faults.faults == []
        moved = await bare.post("/_emulator/clock", json={"advance": 30})
        assert moved.json()["now"] == app.state.clock.now() == ManualClock().now() + 30


async def test_requests_are_recorded_and_bounded(app: Any, client: httpx.AsyncClient) -> None:
    await client.post(GENERATE, params={"alt": "json"}, json=BODY)
    (first,) = app.state.requests
    assert first["method"] == "POST"
    assert first["path"] == GENERATE
    assert first["query"] == {"alt": "json"}
    assert first["headers"]["x-goog-api-key"] == "good-key"
    assert first["json"] == BODY
    for _ in range(7):
        await client.get("/v1beta/models")
    assert len(app.state.requests) == 5
    listed = await client.get("/_emulator/requests")
    assert len(listed.json()["data"]) == 5
    await client.delete("/_emulator/requests")
    assert len(app.state.requests) == 0


async def test_unknown_routes_answer_in_the_envelope(client: httpx.AsyncClient) -> None:
    envelope(await client.get("/v1beta/nothing-here"), 404, "NOT_FOUND")
    envelope(await client.put("/v1beta/cachedContents"), 404, "NOT_FOUND")
    envelope(await client.post("/v1beta/models/gemini-2.5-flash:fly", json={}), 404, "NOT_FOUND")


def test_create_app_without_arguments() -> None:
    app = create_app()
    assert isinstance(app.state.clock, SystemClock)
    assert app.state.faults.faults == []
    assert isinstance(app.state.faults.add(Fault(status=500)), Fault)
