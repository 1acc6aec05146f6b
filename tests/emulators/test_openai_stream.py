"""SSE streaming on the OpenAI flavour: the exact framing of providers.md §1.4, the usage
chunk, tool-call deltas, and faults that cut a stream or end it with an in-band error."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from starlette.applications import Starlette

from adapters.emulators.openai.stream import pieces
from tests.emulators.conftest import AUTH, sdk_for
from tests.sdk_checks import strict

URL = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "Tell me a story"}]
TOOL = {
    "type": "function",
    "function": {
        "name": "lookup",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}},
            "required": ["query", "limit"],
        },
    },
}


def frames(raw: bytes) -> list[str]:
    """The data of each SSE event, checking the framing on the way."""
    assert raw.endswith(b"\n\n")
    events = raw.decode().split("\n\n")[:-1]
    for event in events:
        assert event.startswith("data: ")
        assert "\n" not in event
    return [event[len("data: ") :] for event in events]


async def drain(
    sdk: openai.AsyncOpenAI, into: list[ChatCompletionChunk] | None = None
) -> list[ChatCompletionChunk]:
    """Stream a reply to HELLO, keeping every chunk received before any error."""
    received = [] if into is None else into
    stream = await sdk.chat.completions.create(model="gpt-4o", messages=HELLO, stream=True)  # type: ignore[arg-type]
    async for chunk in stream:
        received.append(chunk)
    return received


async def stream_raw(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    payload = {"model": "gpt-4o", "messages": HELLO, "stream": True, **body}
    return await client.post(URL, json=payload, headers=AUTH)


async def test_framing_without_usage(client: httpx.AsyncClient) -> None:
    response = await stream_raw(client)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    data = frames(response.content)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    for chunk in chunks:
        strict(ChatCompletionChunk, chunk)
        assert "usage" not in chunk
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["id"] == chunks[0]["id"]
    first, last = chunks[0]["choices"][0], chunks[-1]["choices"][0]
    assert first["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert last["delta"] == {}
    assert last["finish_reason"] == "stop"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    content = [c["choices"][0]["delta"]["content"] for c in chunks[1:-1]]
    assert len(content) > 1
    assert all(len(piece.split()) <= 3 for piece in content)
    # Same words as the non-streaming answer.
    plain = await client.post(URL, json={"model": "gpt-4o", "messages": HELLO}, headers=AUTH)
    assert "".join(content) == plain.json()["choices"][0]["message"]["content"]


async def test_include_usage_adds_one_final_usage_chunk(client: httpx.AsyncClient) -> None:
    response = await stream_raw(client, stream_options={"include_usage": True})
    data = frames(response.content)
    chunks = [json.loads(d) for d in data[:-1]]
    *body, final = chunks
    assert all(c["usage"] is None for c in body)
    assert final["choices"] == []
    plain = await client.post(URL, json={"model": "gpt-4o", "messages": HELLO}, headers=AUTH)
    assert final["usage"] == plain.json()["usage"]


async def test_obfuscation_padding_can_be_turned_off(client: httpx.AsyncClient) -> None:
    padded = [json.loads(d) for d in frames((await stream_raw(client)).content)[:-1]]
    assert any("obfuscation" in c for c in padded)
    plain_response = await stream_raw(client, stream_options={"include_obfuscation": False})
    plain = [json.loads(d) for d in frames(plain_response.content)[:-1]]
    assert not any("obfuscation" in c for c in plain)


async def test_sdk_stream_with_usage(sdk: openai.AsyncOpenAI) -> None:
    stream = await sdk.chat.completions.create(
        model="gpt-4o-mini",
        messages=HELLO,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    for chunk in chunks:
        strict(ChatCompletionChunk, chunk.model_dump(mode="json", exclude_unset=True))
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert chunks[-1].usage.completion_tokens > 0
    assert chunks[-1].service_tier == "default"


async def test_sdk_stream_tool_call_fragments(sdk: openai.AsyncOpenAI) -> None:
    stream = await sdk.chat.completions.create(
        model="gpt-4o",
        messages=HELLO,  # type: ignore[arg-type]
        tools=[TOOL],  # type: ignore[list-item]
        stream=True,
    )
    chunks = [chunk async for chunk in stream]
    deltas = [c.choices[0].delta for c in chunks]
    head = deltas[0].tool_calls
    assert deltas[0].role == "assistant"
    assert head is not None
    assert head[0].id
    assert head[0].type == "function"
    assert head[0].function is not None
    assert head[0].function.name == "lookup"
    fragments = [d.tool_calls[0] for d in deltas[1:] if d.tool_calls]
    assert len(fragments) > 1
    assert all(f.index == 0 and f.id is None for f in fragments)
    arguments = "".join(f.function.arguments or "" for f in fragments if f.function)
    assert set(json.loads(arguments)) == {"query", "limit"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_sdk_stream_several_choices(sdk: openai.AsyncOpenAI) -> None:
    stream = await sdk.chat.completions.create(
        model="gpt-4o",
        messages=HELLO,  # type: ignore[arg-type]
        stream=True,
        n=2,
    )
    finished = {c.choices[0].index async for c in stream if c.choices[0].finish_reason == "stop"}
    assert finished == {0, 1}


async def test_drop_after_events_cuts_the_stream(app: Starlette) -> None:
    app.state.faults.add(drop_after_events=2)
    sdk = sdk_for(app)
    with pytest.raises(openai.APIConnectionError):
        await drain(sdk)
    await sdk.close()


async def test_error_after_events_ends_with_an_in_band_error(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    app.state.faults.add(error_after_events=3)
    data = frames((await stream_raw(client)).content)
    assert len(data) == 4
    assert "[DONE]" not in data
    assert json.loads(data[-1]) == {
        "error": {
            "message": "The server had an error while processing your request. Sorry about that!",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }
    custom = {
        "error": {"message": "overloaded", "type": "server_error", "param": None, "code": None}
    }
    app.state.faults.add(error_after_events=1, body=custom)
    sdk = sdk_for(app)
    received: list[ChatCompletionChunk] = []
    with pytest.raises(openai.APIError, match="overloaded"):
        await drain(sdk, received)
    assert len(received) == 1
    await sdk.close()


async def test_malformed_stream(app: Starlette) -> None:
    app.state.faults.add(malformed=True)
    sdk = sdk_for(app)
    with pytest.raises(json.JSONDecodeError):
        await drain(sdk)
    await sdk.close()


async def test_stream_delay_spaces_events(make_app: Any) -> None:
    app = make_app(stream_delay=0.02)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
        started = time.perf_counter()
        count = len(frames((await stream_raw(c)).content))
        assert time.perf_counter() - started >= 0.02 * (count - 1) * 0.9


def test_pieces_rebuild_the_text() -> None:
    text = "one two  three four\nfive six seven " + "x" * 70
    parts = pieces(text)
    assert "".join(parts) == text
    assert all(len(p) <= 32 for p in parts)
    assert pieces("") == []


async def test_batch_line_answers_like_the_endpoint(app: Starlette) -> None:
    emulator = app.state.emulator
    status, body = emulator.answer_line(URL, {"model": "gpt-4o", "messages": HELLO})
    assert status == 200
    strict(ChatCompletion, body)
    status, body = emulator.answer_line(URL, {"model": "gpt-4o", "messages": HELLO, "stream": True})
    assert status == 400
    assert body["error"]["param"] == "stream"
    status, body = emulator.answer_line(URL, {"model": "nope", "messages": HELLO})
    assert status == 404
    assert body["error"]["code"] == "model_not_found"
    status, body = emulator.answer_line(
        "/v1/embeddings", {"model": "text-embedding-3-small", "input": "x"}
    )
    assert status == 200
    assert body["object"] == "list"
    status, body = emulator.answer_line("/v1/assistants", {})
    assert status == 404
