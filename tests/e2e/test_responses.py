"""The Responses API end to end: the official openai SDK -> costroute under uvicorn -> the
OpenAI emulator (Responses + Files/Batches) on one ManualClock. Real time (plain,
streamed, parse, function calls, OpenAI background mode), a response id's routes with
ownership, and deferral in the SDK's own background shape through a provider batch."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import Response
from pydantic import BaseModel

from adapters.clock import ManualClock
from adapters.emulators.openai.batch.emulator import BatchEmulatorConfig
from adapters.emulators.openai.errors import flex_unavailable_fault
from adapters.emulators.openai.server import OpenAIEmulatorConfig
from adapters.emulators.openai.server import create_app as openai_emulator
from proxy.app import create_app
from proxy.settings import parse_settings
from tests.sdk_checks import strict
from tests.support import ServerThread

TEAM_A = "sk-responses-team-a-00000"
TEAM_B = "sk-responses-team-b-00000"
OPS = "sk-responses-ops-00000000"
ENV = {"A": TEAM_A, "B": TEAM_B, "OPS": OPS, "OPENAI": "sk-up", "DS": "sk-ds"}
RUN = 103.0  # the emulator's batch: validate 1 s + run 100 s + finalize 1 s
LATER = {"X-Latency-Tolerance": "4h"}


class Stack:
    def __init__(self, proxy: ServerThread, emulator: ServerThread, clock: ManualClock) -> None:
        self.proxy, self.emulator, self.clock = proxy, emulator, clock

    def sdk(self, key: str = TEAM_A) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.proxy.url + "/v1", api_key=key, max_retries=0)

    def http(self, key: str = TEAM_A) -> httpx.Client:
        return httpx.Client(
            base_url=self.proxy.url, headers={"authorization": f"Bearer {key}"}, timeout=70
        )

    def routes(self) -> list[dict[str, Any]]:
        services = self.proxy.app.state.services

        async def fetch() -> list[dict[str, Any]]:
            await services.routelog.flush()
            rows = await services.db.fetchall("SELECT * FROM routes ORDER BY id")
            return [dict(row) for row in rows]

        rows: list[dict[str, Any]] = self.proxy.call(fetch())
        return rows


@pytest.fixture(scope="module")
def s(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp: Path = tmp_path_factory.mktemp("responses")
    clock = ManualClock()
    batch_config = BatchEmulatorConfig(validation_delay=1, processing_time=100, finalize_delay=1)
    emulator = ServerThread(
        openai_emulator(OpenAIEmulatorConfig(), clock=clock, batch_config=batch_config)
    ).start()
    deepseek = ServerThread(openai_emulator(OpenAIEmulatorConfig(flavour="deepseek"))).start()
    settings = parse_settings(
        {
            "store": {"path": str(tmp / "costroute.db")},
            "auth": {"keys": [{"name": "team-a", "key_env": "A"},
                              {"name": "team-b", "key_env": "B"},
                              {"name": "ops", "key_env": "OPS", "admin": True}]},
            "providers": {
                "openai": {"type": "openai", "base_url": emulator.url + "/v1",
                           "api_key_env": "OPENAI"},
                "deepseek": {"type": "deepseek", "base_url": deepseek.url, "api_key_env": "DS"},
            },
            "models": {
                "gpt-4o-mini": {"provider": "openai"},
                "flex-mini": {"provider": "openai", "upstream_model": "gpt-4o-mini",
                              "flex": True},
                "deepseek-flash": {"provider": "deepseek"},
            },
            "batch": {"poll_interval": "1s", "flush_interval": "1s"},
            "retry": {"max_retries": 1, "backoff_base": 0.01, "backoff_max": 0.05},
        }
    )  # fmt: skip
    proxy = ServerThread(create_app(settings, clock=clock, environ=ENV)).start()
    try:
        yield Stack(proxy, emulator, clock)
    finally:
        proxy.stop()
        deepseek.stop()
        emulator.stop()


def _row(s: Stack, request_id: str) -> dict[str, Any]:
    rows = [r for r in s.routes() if r["request_id"] == request_id]
    assert len(rows) == 1
    return rows[0]


def test_a_plain_response_is_passed_through_metered_and_logged(s: Stack) -> None:
    raw = s.sdk().responses.with_raw_response.create(
        model="gpt-4o-mini", input="Say hello", instructions="Be brief."
    )
    assert raw.headers["x-costroute-lane"] == "realtime"
    response = strict(Response, raw.http_response.json())
    assert response.status == "completed"
    assert response.output_text
    row = _row(s, raw.headers["x-request-id"])
    assert row["endpoint"] == "/v1/responses"
    assert row["status"] == 200
    assert response.usage is not None
    assert row["prompt_tokens"] == response.usage.input_tokens
    assert row["completion_tokens"] == response.usage.output_tokens
    assert row["cost_usd"] is not None
    assert row["cost_usd"] > 0


def test_a_stream_relays_the_named_events_in_order_and_is_metered(s: Stack) -> None:
    with (
        s.http() as client,
        client.stream(
            "POST",
            "/v1/responses",
            json={"model": "gpt-4o-mini", "input": "Stream", "stream": True},
        ) as reply,
    ):
        assert reply.status_code == 200
        request_id = reply.headers["x-request-id"]
        blocks = reply.read().decode().strip().split("\n\n")
    events = []
    for block in blocks:
        name, data = block.split("\n")
        event = json.loads(data.removeprefix("data: "))
        assert name == f"event: {event['type']}"
        events.append(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "response.created"
    assert events[-1]["type"] == "response.completed"
    final = strict(Response, events[-1]["response"])
    row = _row(s, request_id)
    assert row["stream"] == 1
    assert final.usage is not None
    assert row["completion_tokens"] == final.usage.output_tokens

    with s.sdk().responses.stream(model="gpt-4o-mini", input="Again") as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        assert text == stream.get_final_response().output_text


class Verdict(BaseModel):
    label: str
    score: int


def test_structured_output_and_a_function_call_round_trip(s: Stack) -> None:
    parsed = s.sdk().responses.parse(model="gpt-4o-mini", input="Rate it", text_format=Verdict)
    assert isinstance(parsed.output_parsed, Verdict)
    tool = {
        "type": "function",
        "name": "lookup",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}},
                       "required": ["q"], "additionalProperties": False},
        "strict": True,
    }  # fmt: skip
    first = s.sdk().responses.create(model="gpt-4o-mini", input="Look it up", tools=[tool])
    call = first.output[0]
    assert call.type == "function_call"
    second = s.sdk().responses.create(
        model="gpt-4o-mini",
        tools=[tool],
        input=[
            {"role": "user", "content": "Look it up"},
            {"type": "function_call", "call_id": call.call_id, "name": call.name,
             "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "42"},
        ],
    )  # fmt: skip
    assert second.output[0].type == "message"


def test_a_response_id_belongs_to_the_key_that_made_it(s: Stack) -> None:
    mine = s.sdk().responses.create(model="gpt-4o-mini", input="Mine")
    assert s.sdk().responses.retrieve(mine.id).id == mine.id
    items = s.sdk().responses.input_items.list(mine.id)
    assert [item.type for item in items.data] == ["message"]
    other = s.sdk(TEAM_B)
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.delete(mine.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.cancel(mine.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.input_items.list(mine.id)
    # Still there for its owner; deleted, then gone for everyone.
    s.sdk().responses.delete(mine.id)
    with pytest.raises(openai.NotFoundError):
        s.sdk().responses.retrieve(mine.id)
    # A response made with store=false is kept by no one.
    unstored = s.sdk().responses.create(model="gpt-4o-mini", input="x", store=False)
    with pytest.raises(openai.NotFoundError):
        s.sdk().responses.retrieve(unstored.id)


def test_openais_own_background_mode_passes_through(s: Stack) -> None:
    created = s.sdk().responses.create(model="gpt-4o-mini", input="Work", background=True)
    assert created.status == "queued"
    s.clock.advance(10)
    done = s.sdk().responses.retrieve(created.id)
    assert done.status == "completed"
    assert done.output_text
    sync = s.sdk().responses.create(model="gpt-4o-mini", input="now")
    with pytest.raises(openai.BadRequestError):
        s.sdk().responses.cancel(sync.id)


def test_a_deferred_response_completes_through_a_batch_and_is_polled_by_retrieve(
    s: Stack,
) -> None:
    raw = s.sdk().responses.with_raw_response.create(
        model="gpt-4o-mini", input="Summarise Hamlet", background=True, extra_headers=LATER
    )
    assert raw.http_response.status_code == 200
    queued = strict(Response, raw.http_response.json())
    assert queued.status == "queued"
    assert queued.background is True
    ticket_id = raw.headers["x-costroute-ticket"]
    assert queued.id == "resp_" + ticket_id
    assert raw.headers["x-costroute-lane"] == "batch"
    with s.http() as client:
        assert client.get(f"/v1/tickets/{ticket_id}").json()["status"] == "queued"
        assert client.post("/admin/flush").status_code == 403
    with s.http(OPS) as ops:
        assert ops.post("/admin/flush").status_code == 200
    assert s.sdk().responses.retrieve(queued.id).status == "in_progress"
    s.clock.advance(RUN)
    with s.http() as client:
        final = client.get(f"/v1/tickets/{ticket_id}", params={"wait": 20}).json()
    assert final["status"] == "completed"
    done = s.sdk().responses.retrieve(queued.id)
    strict(Response, done.model_dump(mode="json", exclude_unset=True))
    assert done.status == "completed"
    assert done.id == queued.id
    assert done.output_text
    assert done.usage is not None
    items = s.sdk().responses.input_items.list(queued.id)
    assert items.data[0].type == "message"
    with pytest.raises(openai.NotFoundError):
        s.sdk(TEAM_B).responses.retrieve(queued.id)
    rows = [r for r in s.routes() if r["ticket_id"] == ticket_id]
    final_rows = [r for r in rows if r["status"] == 200]
    assert final_rows
    assert final_rows[-1]["lane"] == "batch"
    assert final_rows[-1]["saved_usd"] > 0


def test_a_deferred_response_can_be_cancelled_and_deleted(s: Stack) -> None:
    queued = s.sdk().responses.create(model="gpt-4o-mini", input="Never mind", extra_headers=LATER)
    assert queued.status == "queued"
    with pytest.raises(openai.NotFoundError):
        s.sdk(TEAM_B).responses.cancel(queued.id)
    cancelled = s.sdk().responses.cancel(queued.id)
    assert cancelled.status == "cancelled"
    assert s.sdk().responses.retrieve(queued.id).status == "cancelled"
    s.sdk().responses.delete(queued.id)
    with pytest.raises(openai.NotFoundError):
        s.sdk().responses.retrieve(queued.id)


def test_a_provider_without_a_responses_api_is_bridged_through_chat(s: Stack) -> None:
    raw = s.sdk().responses.with_raw_response.create(
        model="deepseek-flash", input="Say hi", instructions="Be brief.", max_output_tokens=200
    )
    response = strict(Response, raw.http_response.json())
    assert response.status == "completed"
    assert response.output_text
    assert response.usage is not None
    row = _row(s, raw.headers["x-request-id"])
    assert (row["provider"], row["endpoint"]) == ("deepseek", "/v1/responses")
    assert row["prompt_tokens"] == response.usage.input_tokens
    with s.sdk().responses.stream(model="deepseek-flash", input="Stream it") as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert events[0].type == "response.created"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == final.output_text
    with s.http() as client:
        body = {"model": "deepseek-flash", "input": "Raw", "stream": True}
        raw_events = client.post("/v1/responses", json=body).text.strip().split("\n\n")
    last = json.loads(raw_events[-1].split("\n")[1].removeprefix("data: "))
    assert last["type"] == "response.completed"
    strict(Response, last["response"])


def test_a_bridged_function_call_round_trip(s: Stack) -> None:
    tool = {"type": "function", "name": "lookup", "strict": True,
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}},
                           "required": ["q"], "additionalProperties": False}}  # fmt: skip
    first = s.sdk().responses.create(model="deepseek-flash", input="Look it up", tools=[tool])
    call = first.output[0]
    assert call.type == "function_call"
    assert "q" in json.loads(call.arguments)
    second = s.sdk().responses.create(
        model="deepseek-flash",
        tools=[tool],
        input=[
            {"role": "user", "content": "Look it up"},
            {"type": "function_call", "call_id": call.call_id, "name": call.name,
             "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "42"},
        ],
    )  # fmt: skip
    assert second.output[0].type == "message"


def test_what_cannot_be_bridged_is_a_400_naming_the_field(s: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as search:
        s.sdk().responses.create(model="deepseek-flash", input="hi", tools=[{"type": "web_search"}])
    assert search.value.param == "tools[0]"
    with pytest.raises(openai.BadRequestError) as state:
        s.sdk().responses.create(
            model="deepseek-flash", input="hi", previous_response_id="resp_abc"
        )
    assert state.value.param == "previous_response_id"


def test_what_cannot_be_served_is_a_clear_400(s: Stack) -> None:
    with pytest.raises(openai.BadRequestError, match="X-Latency-Tolerance"):
        s.sdk().responses.create(model="gpt-4o-mini", input="hi", stream=True, extra_headers=LATER)
    with pytest.raises(openai.BadRequestError, match="model"):
        s.sdk().responses.create(model="not-configured", input="hi")
    with s.http() as client:
        reply = client.post("/v1/responses", json={"input": "no model"})
    assert reply.status_code == 400
    assert reply.json()["error"]["param"] == "model"


def test_upstream_errors_are_retried_then_surface_as_the_sdks_exceptions(s: Stack) -> None:
    faults = s.emulator.app.state.faults
    faults.add(status=429, path="/v1/responses", times=1, retry_after=0)
    ok = s.sdk().responses.create(model="gpt-4o-mini", input="retried once")
    assert ok.status == "completed"  # the 429 was retried by costroute's policy
    faults.add(status=429, path="/v1/responses", times=5, retry_after=0)
    with pytest.raises(openai.RateLimitError):
        s.sdk().responses.create(model="gpt-4o-mini", input="still limited")
    faults.clear()
    faults.add(status=500, path="/v1/responses", times=5)
    with pytest.raises(openai.InternalServerError):
        s.sdk().responses.create(model="gpt-4o-mini", input="broken")
    faults.clear()


def test_a_stored_stream_is_resumed_after_a_cursor_through_costroute(s: Stack) -> None:
    created = s.sdk().responses.create(model="gpt-4o-mini", input="Replay me")
    with s.http() as client:
        reply = client.get(
            f"/v1/responses/{created.id}", params={"stream": "true", "starting_after": 2}
        )
        other = httpx.get(
            f"{s.proxy.url}/v1/responses/{created.id}",
            params={"stream": "true"},
            headers={"authorization": f"Bearer {TEAM_B}"},
        )
    assert reply.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(b.split("\n")[1][6:]) for b in reply.text.strip().split("\n\n")]
    assert events[0]["sequence_number"] == 3
    assert events[-1]["type"] == "response.completed"
    assert other.status_code == 404


def test_a_short_tolerance_on_a_flex_model_takes_the_flex_tier_then_falls_back(s: Stack) -> None:
    soon = {"X-Latency-Tolerance": "5m"}
    raw = s.sdk().responses.with_raw_response.create(
        model="flex-mini", input="Cheap please", extra_headers=soon
    )
    assert raw.headers["x-costroute-lane"] == "flex"
    assert strict(Response, raw.http_response.json()).service_tier == "flex"
    row = _row(s, raw.headers["x-request-id"])
    assert row["cost_usd"] == pytest.approx(row["baseline_usd"] / 2)
    s.emulator.app.state.faults.add(flex_unavailable_fault(path="/responses", times=2))
    raw = s.sdk().responses.with_raw_response.create(
        model="flex-mini", input="Busy", extra_headers=soon
    )
    assert raw.headers["x-costroute-lane"] == "realtime"
    assert "flex capacity unavailable" in _row(s, raw.headers["x-request-id"])["reason"]
    s.emulator.app.state.faults.clear()
