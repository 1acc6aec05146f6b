"""Every failure the proxy returns is an OpenAI envelope with the status that makes the
official SDK raise the matching exception class; bad input writes nothing but a log row."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from adapters.emulators.openai.server import OpenAIEmulatorConfig
from adapters.emulators.openai.server import create_app as openai_emulator
from proxy.app import create_app
from tests.e2e.conftest import CLIENT_KEY, ENV, Stack, stack_settings
from tests.support import ServerThread, free_port

MESSAGES = [{"role": "user", "content": "hello"}]


def _envelope(response: httpx.Response) -> dict[str, object]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    return body["error"]


def test_bad_key_is_401(fresh: Stack) -> None:
    with pytest.raises(openai.AuthenticationError):
        fresh.client(key="sk-wrong").chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    with fresh.http(None) as http:
        response = http.post(
            "/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": MESSAGES}
        )
    assert response.status_code == 401
    assert _envelope(response)["code"] == "invalid_api_key"
    assert fresh.openai_state.requests == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": MESSAGES}, "model"),
        ({"model": "gpt-4o-mini"}, "messages"),
        ({"model": "gpt-4o-mini", "messages": []}, "messages"),
        ({"model": "gpt-4o-mini", "messages": "hi"}, "messages"),
        ({"model": 5, "messages": MESSAGES}, "model"),
        ({"model": "gpt-4o-mini", "messages": [{"role": "wizard", "content": "x"}]}, "messages"),
        ({"model": "gpt-4o-mini", "messages": [{"role": "tool", "content": "x"}]}, "messages"),
        ({"model": "gpt-4o-mini", "messages": MESSAGES, "stream": "yes"}, "stream"),
        ({"model": "unknown-model", "messages": MESSAGES}, "model"),
    ],
)
def test_invalid_bodies_are_400_naming_the_field(
    fresh: Stack, body: dict[str, object], param: str
) -> None:
    with fresh.http() as http:
        response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    error = _envelope(response)
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert fresh.openai_state.requests == []


def test_unknown_model_raises_bad_request_in_the_sdk(fresh: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        fresh.client().chat.completions.create(model="gpt-9", messages=MESSAGES)
    assert info.value.code == "model_not_found"


def test_malformed_json_is_400(fresh: Stack) -> None:
    with fresh.http() as http:
        response = http.post(
            "/v1/chat/completions",
            content=b'{"model": "gpt-4o-mini", "messages": [',
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 400
    assert "JSON" in str(_envelope(response)["message"])


def test_unknown_route_is_404_envelope(fresh: Stack) -> None:
    with fresh.http() as http:
        response = http.get("/v1/assistants")
        assert response.status_code == 404
        _envelope(response)
        wrong_method = http.get("/v1/chat/completions")
    assert wrong_method.status_code == 405
    _envelope(wrong_method)


def test_body_over_the_limit_is_413_before_it_is_read(fresh: Stack) -> None:
    huge = (
        b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"' + b"x" * 200_000 + b'"}]}'
    )
    with fresh.http() as http:
        response = http.post(
            "/v1/chat/completions", content=huge, headers={"content-type": "application/json"}
        )
    assert response.status_code == 413
    assert _envelope(response)["code"] == "request_too_large"

    def chunked() -> Iterator[bytes]:  # no Content-Length: refused while streaming in
        for _ in range(50):
            yield b"x" * 8192

    with fresh.http() as http:
        response = http.post("/v1/chat/completions", content=chunked())
    assert response.status_code == 413
    with pytest.raises(openai.APIStatusError) as info:
        fresh.client().chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "y" * 100_000}]
        )
    assert info.value.status_code == 413


def test_upstream_4xx_passes_through(fresh: Stack) -> None:
    fresh.openai_state.faults.add(
        status=400,
        body={
            "error": {
                "message": "This model's maximum context length is 128000 tokens.",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }
        },
    )
    with pytest.raises(openai.BadRequestError) as info:
        fresh.client().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert info.value.code == "context_length_exceeded"
    assert info.value.param == "messages"
    assert len(fresh.openai_state.requests) == 1  # 400s are not retried


def test_upstream_429_is_retried_honouring_retry_after(fresh: Stack) -> None:
    fresh.openai_state.faults.add(status=429, retry_after=0.2, times=1)
    completion = fresh.client().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert completion.choices
    assert len(fresh.openai_state.requests) == 2
    assert fresh.new_routes(1)[-1]["attempts"] == 2


def test_upstream_429_storm_passes_through_with_retry_after(fresh: Stack) -> None:
    fresh.openai_state.faults.add(status=429, retry_after=1, times=-1)
    with pytest.raises(openai.RateLimitError) as info:
        fresh.client().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert info.value.response.headers["retry-after"] == "1"
    assert len(fresh.openai_state.requests) == 3  # first try + max_retries
    row = fresh.new_routes(1)[-1]
    assert (row["status"], row["attempts"]) == (429, 3)


def test_upstream_5xx_after_retries_is_an_internal_server_error(fresh: Stack) -> None:
    fresh.openai_state.faults.add(status=503, times=-1)
    with pytest.raises(openai.InternalServerError) as info:
        fresh.client().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert info.value.status_code == 503


def test_upstream_malformed_body_is_502(fresh: Stack) -> None:
    fresh.openai_state.faults.add(malformed=True, times=-1)
    with pytest.raises(openai.InternalServerError) as info:
        fresh.client().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert info.value.status_code == 502


def test_dropped_connection_is_retried(fresh: Stack) -> None:
    fresh.openai_state.faults.add(drop=True, times=1)
    completion = fresh.client().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert completion.choices


def test_stream_error_before_first_byte_is_a_status(fresh: Stack) -> None:
    fresh.openai_state.faults.add(
        status=400,
        body={
            "error": {
                "message": "bad",
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        },
    )
    with pytest.raises(openai.BadRequestError):
        list(
            fresh.client().chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, stream=True
            )
        )


def test_stream_cut_mid_way_gives_the_caller_an_error_not_a_hang(fresh: Stack) -> None:
    fresh.openai_state.faults.add(drop_after_events=2)
    with pytest.raises(openai.APIError):
        list(
            fresh.client().chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, stream=True
            )
        )
    assert fresh.new_routes(1)[-1]["status"] == 502


def test_bad_input_writes_nothing_but_a_log_row(fresh: Stack) -> None:
    with fresh.http() as http:
        http.post("/v1/chat/completions", json={"model": "nope", "messages": MESSAGES})
    rows = fresh.new_routes(1)
    assert len(rows) == 1
    assert (rows[-1]["status"], rows[-1]["error_code"], rows[-1]["key_name"]) == (
        400,
        "model_not_found",
        "team-a",
    )

    async def count_tickets() -> int:
        row = await fresh.proxy.app.state.services.db.fetchone("SELECT COUNT(*) FROM tickets")
        return int(row[0])

    assert fresh.proxy.call(count_tickets()) == 0


def test_unreachable_and_slow_upstreams(tmp_path: Path) -> None:
    slow = ServerThread(openai_emulator(OpenAIEmulatorConfig(flavour="deepseek"))).start()
    try:
        dead_port = free_port()  # nothing listens here
        settings = stack_settings(
            tmp_path,
            f"http://127.0.0.1:{dead_port}",
            slow.url,
            server={"upstream_timeout": "1s"},
            retry={"max_retries": 0},
        )
        # deepseek points at the live emulator, which we make slow.
        proxy = ServerThread(create_app(settings, environ=ENV)).start()
        try:
            client = openai.OpenAI(base_url=proxy.url + "/v1", api_key=CLIENT_KEY, max_retries=0)
            with pytest.raises(openai.InternalServerError) as info:
                client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            assert info.value.status_code == 502
            slow.app.state.faults.add(latency=2.5)
            with pytest.raises(openai.APIStatusError) as timeout:
                client.chat.completions.create(model="deepseek-flash", messages=MESSAGES)
            assert timeout.value.status_code == 504
        finally:
            proxy.stop()
    finally:
        slow.stop()
