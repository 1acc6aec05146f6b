"""The OpenAI emulator's Responses API (providers-2.md §1): objects strictly against the
SDK's types, the exact stream event sequence, background mode on the clock, retrieve with
replay, cancel, delete, input items, errors; the official SDK's create, stream, parse and
retrieve against it."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import Response, ResponseInputItem
from pydantic import BaseModel, TypeAdapter

from adapters.clock import ManualClock
from tests.sdk_checks import strict

from .conftest import AUTH


async def _create(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post("/v1/responses", json={"model": "gpt-4o-mini", **body}, headers=AUTH)


def _events(raw: str) -> list[dict[str, Any]]:
    events = []
    for block in raw.strip().split("\n\n"):
        name, data = block.split("\n")
        assert name.startswith("event: ")
        assert data.startswith("data: ")
        event = json.loads(data[len("data: ") :])
        assert event["type"] == name[len("event: ") :]
        events.append(event)
    return events


async def test_a_plain_response_validates_strictly(client: httpx.AsyncClient) -> None:
    reply = await _create(client, input="Say hello", instructions="Be brief.")
    assert reply.status_code == 200
    response = strict(Response, reply.json())
    assert response.status == "completed"
    assert response.instructions == "Be brief."
    assert response.output[0].type == "message"
    assert response.output_text
    assert response.usage is not None
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens


async def test_the_stream_is_the_documented_event_sequence(client: httpx.AsyncClient) -> None:
    reply = await _create(client, input="Tell me a story", stream=True)
    assert reply.headers["content-type"].startswith("text/event-stream")
    assert "[DONE]" not in reply.text
    events = _events(reply.text)
    types = [e["type"] for e in events]
    assert types[:5] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    final = strict(Response, events[-1]["response"])
    assert deltas == final.output_text
    assert final.usage is not None


async def test_unknown_fields_and_small_output_caps_are_refused(client: httpx.AsyncClient) -> None:
    reply = await _create(client, input="hi", temprature=0.5)
    assert reply.status_code == 400
    assert reply.json()["error"]["param"] == "temprature"
    reply = await _create(client, input="hi", max_output_tokens=8)
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "integer_below_min_value"
    reply = await client.post("/v1/responses", json={"input": "hi"}, headers=AUTH)
    assert reply.json()["error"]["param"] == "model"


async def test_background_moves_with_the_clock_and_cancel_is_for_background_only(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    created = strict(Response, (await _create(client, input="later", background=True)).json())
    assert created.status == "queued"
    assert created.output == []
    clock.advance(1.5)
    now = strict(Response, (await client.get(f"/v1/responses/{created.id}", headers=AUTH)).json())
    assert now.status == "in_progress"
    clock.advance(5)
    done = strict(Response, (await client.get(f"/v1/responses/{created.id}", headers=AUTH)).json())
    assert done.status == "completed"
    assert done.output_text
    # Cancelling a finished background response returns it unchanged (idempotent).
    again = await client.post(f"/v1/responses/{created.id}/cancel", headers=AUTH)
    assert again.json()["status"] == "completed"

    other = strict(Response, (await _create(client, input="x", background=True)).json())
    cancelled = await client.post(f"/v1/responses/{other.id}/cancel", headers=AUTH)
    assert strict(Response, cancelled.json()).status == "cancelled"
    clock.advance(10)
    still = await client.get(f"/v1/responses/{other.id}", headers=AUTH)
    assert still.json()["status"] == "cancelled"

    sync = strict(Response, (await _create(client, input="now")).json())
    refused = await client.post(f"/v1/responses/{sync.id}/cancel", headers=AUTH)
    assert refused.status_code == 400


async def test_retrieve_replays_the_stream_after_a_cursor(client: httpx.AsyncClient) -> None:
    created = (await _create(client, input="replay me", stream=True)).text
    first = _events(created)
    response_id = first[0]["response"]["id"]
    replay = await client.get(
        f"/v1/responses/{response_id}", params={"stream": "true", "starting_after": 3}, headers=AUTH
    )
    events = _events(replay.text)
    assert [e["sequence_number"] for e in events] == [e["sequence_number"] for e in first[4:]]


async def test_delete_input_items_and_previous_response(client: httpx.AsyncClient) -> None:
    first = strict(Response, (await _create(client, input="My name is Ada.")).json())
    items = await client.get(f"/v1/responses/{first.id}/input_items", headers=AUTH)
    page = items.json()
    assert page["object"] == "list"
    assert [item["content"] for item in page["data"]] == ["My name is Ada."]
    TypeAdapter(list[ResponseInputItem]).validate_python(
        [{k: v for k, v in item.items() if k != "id"} for item in page["data"]]
    )
    second = await _create(client, input="What is my name?", previous_response_id=first.id)
    assert strict(Response, second.json()).previous_response_id == first.id
    deleted = await client.delete(f"/v1/responses/{first.id}", headers=AUTH)
    assert deleted.json() == {"id": first.id, "object": "response", "deleted": True}
    gone = await client.get(f"/v1/responses/{first.id}", headers=AUTH)
    assert gone.status_code == 404
    missing = await _create(client, input="x", previous_response_id=first.id)
    assert missing.json()["error"]["code"] == "previous_response_not_found"


async def test_function_calls_round_trip(client: httpx.AsyncClient) -> None:
    tool = {
        "type": "function",
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
        "strict": True,
    }
    first = strict(Response, (await _create(client, input="Weather?", tools=[tool])).json())
    call = first.output[0]
    assert call.type == "function_call"
    assert "city" in json.loads(call.arguments)
    follow = [
        {"role": "user", "content": "Weather?"},
        call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
    ]
    second = strict(Response, (await _create(client, input=follow, tools=[tool])).json())
    assert second.output[0].type == "message"


async def test_batch_lines_answer_responses(app: Any) -> None:
    status, body = app.state.emulator.answer_line(
        "/v1/responses", {"model": "gpt-4o-mini", "input": "batched"}
    )
    assert status == 200
    strict(Response, body)
    status, body = app.state.emulator.answer_line(
        "/v1/responses", {"model": "gpt-4o-mini", "input": "x", "stream": True}
    )
    assert status == 400


class Answer(BaseModel):
    answer: str


async def test_the_official_sdk_runs_create_stream_parse_retrieve(
    sdk: openai.AsyncOpenAI,
) -> None:
    created = await sdk.responses.create(model="gpt-4o-mini", input="Hello")
    assert created.output_text
    fetched = await sdk.responses.retrieve(created.id)
    assert fetched.id == created.id
    async with sdk.responses.stream(model="gpt-4o-mini", input="Stream please") as stream:
        text = "".join(
            [event.delta async for event in stream if event.type == "response.output_text.delta"]
        )
        final = await stream.get_final_response()
    assert text == final.output_text
    parsed = await sdk.responses.parse(model="gpt-4o-mini", input="JSON", text_format=Answer)
    assert isinstance(parsed.output_parsed, Answer)
    await sdk.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        await sdk.responses.retrieve(created.id)
