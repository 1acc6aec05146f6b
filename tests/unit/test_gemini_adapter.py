"""GeminiAdapter I/O against the Gemini emulator: auth, streams, errors, embeddings."""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from starlette.applications import Starlette

from adapters.clock import ManualClock
from adapters.emulators.gemini.server import GeminiEmulatorConfig, create_app
from adapters.errors import (
    RateLimited,
    Unsupported,
    UpstreamProtocolError,
    UpstreamStatus,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from adapters.gemini.chat import GeminiAdapter, GeminiStream

FLASH = "gemini-2.5-flash"


@pytest.fixture
def app() -> Starlette:
    return create_app(GeminiEmulatorConfig(api_keys=frozenset({"key-a"})), clock=ManualClock())


@pytest.fixture
async def adapter(app: Starlette) -> AsyncIterator[GeminiAdapter]:
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gemini.test/v1beta"
    )
    yield GeminiAdapter(client, api_key="key-a", clock=ManualClock(1_800_000_000))
    await client.aclose()


def chat(text: str = "Hello there", **extra: Any) -> dict[str, Any]:
    return {"model": FLASH, "messages": [{"role": "user", "content": text}], **extra}


async def collect(adapter: GeminiAdapter, body: dict[str, Any]) -> list[bytes]:
    stream = await adapter.open_stream(body, headers={})
    try:
        return [event async for event in stream.events()]
    finally:
        await stream.aclose()


async def drain(stream: GeminiStream, seen: list[bytes]) -> None:
    async for event in stream.events():
        seen.append(event)


async def test_complete_sends_the_key_header_and_returns_openai_json(
    adapter: GeminiAdapter, app: Starlette
) -> None:
    reply = await adapter.complete(chat(), headers={})
    parsed = orjson.loads(reply.body)
    assert parsed == reply.parsed
    completion = ChatCompletion.model_validate(parsed)
    assert completion.created == 1_800_000_000
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.total_tokens > 0
    recorded = app.state.requests[-1]
    assert recorded["path"] == f"/v1beta/models/{FLASH}:generateContent"
    assert recorded["headers"]["x-goog-api-key"] == "key-a"
    assert "key" not in recorded["query"]  # the key never travels in the URL


async def test_json_schema_reply_is_valid_json(adapter: GeminiAdapter) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
        "additionalProperties": False,
    }
    body = chat(
        "Biggest city?",
        response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}},
    )
    reply = await adapter.complete(body, headers={})
    assert reply.parsed is not None
    content = orjson.loads(reply.parsed["choices"][0]["message"]["content"])
    assert list(content) == ["city", "population"]
    assert isinstance(content["population"], int)


async def test_stream_translates_and_ends_with_usage_then_done(
    adapter: GeminiAdapter, app: Starlette
) -> None:
    events = await collect(adapter, chat("Tell me a story", stream=True))
    assert app.state.requests[-1]["query"] == {"alt": "sse"}
    assert events[-1] == b"data: [DONE]\n\n"
    chunks = [orjson.loads(e.removeprefix(b"data: ")) for e in events[:-1]]
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] > 0
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    whole = await adapter.complete(chat("Tell me a story"), headers={})
    assert whole.parsed is not None
    assert text == whole.parsed["choices"][0]["message"]["content"]


async def test_stream_tool_calls(adapter: GeminiAdapter) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "lookup",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        },
    }
    events = await collect(adapter, chat("find it", tools=[tool], tool_choice="required"))
    chunks = [orjson.loads(e.removeprefix(b"data: ")) for e in events[:-1]]
    calls = [
        call
        for c in chunks
        if c["choices"]
        for call in c["choices"][0]["delta"].get("tool_calls") or []
    ]
    assert calls[0]["function"]["name"] == "lookup"
    assert calls[0]["id"].startswith("call_")
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"


async def test_blocked_prompt_is_a_content_filter_answer(adapter: GeminiAdapter) -> None:
    reply = await adapter.complete(chat("please [emulator:block] this"), headers={})
    assert reply.parsed is not None
    assert reply.parsed["choices"][0]["finish_reason"] == "content_filter"


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [(400, UpstreamStatus, False), (403, UpstreamStatus, False), (404, UpstreamStatus, False),
     (429, RateLimited, True), (500, UpstreamStatus, True), (503, UpstreamStatus, True)],
)  # fmt: skip
async def test_status_errors_map_to_openai_envelopes(
    adapter: GeminiAdapter, app: Starlette, status: int, kind: type[Exception], retryable: bool
) -> None:
    app.state.faults.add(status=status, retry_after=7 if status == 429 else None)
    with pytest.raises(kind) as caught:
        await adapter.complete(chat(), headers={})
    error = caught.value
    assert isinstance(error, UpstreamStatus)
    assert error.status == status
    assert error.retryable is retryable
    assert set(error.error_object()) == {"message", "type", "param", "code"}
    if status == 429:
        assert error.retry_after == 7
        assert error.code == "resource_exhausted"


async def test_wrong_key_and_unknown_model(app: Starlette) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://g/v1beta") as client:
        wrong = GeminiAdapter(client, api_key="nope")
        with pytest.raises(UpstreamStatus) as caught:
            await wrong.complete(chat(), headers={})
        assert (caught.value.status, caught.value.code) == (400, "invalid_argument")
        right = GeminiAdapter(client, api_key="key-a")
        with pytest.raises(UpstreamStatus) as missing:
            await right.complete({**chat(), "model": "gemini-0-nope"}, headers={})
        assert missing.value.status == 404


async def test_errors_before_the_first_event_raise_from_open_stream(
    adapter: GeminiAdapter, app: Starlette
) -> None:
    app.state.faults.add(path="streamGenerateContent", status=503)
    with pytest.raises(UpstreamStatus) as caught:
        await adapter.open_stream(chat(), headers={})
    assert caught.value.status == 503


async def test_in_band_stream_error_raises_from_iteration(
    adapter: GeminiAdapter, app: Starlette
) -> None:
    app.state.faults.add(path="streamGenerateContent", error_after_events=1, status=429)
    stream = await adapter.open_stream(chat("a long story please"), headers={})
    seen: list[bytes] = []
    with pytest.raises(RateLimited):
        await drain(stream, seen)
    await stream.aclose()
    assert seen  # the first event got through before the error
    assert b"[DONE]" not in b"".join(seen)


class _Chunks(httpx.AsyncByteStream):
    """A real incremental body: some bytes, then (optionally) a cut connection."""

    def __init__(self, parts: list[bytes], *, cut: bool) -> None:
        self._parts = parts
        self._cut = cut

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in self._parts:
            yield part
        if self._cut:
            raise httpx.RemoteProtocolError("peer closed connection")


def sse_client(parts: list[bytes], *, cut: bool = False) -> httpx.AsyncClient:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=_Chunks(parts, cut=cut))

    return httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://g/v1beta")


def gemini_event(text: str, *, finish: bool = False, crlf: bool = True) -> bytes:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}}
    if finish:
        candidate["finishReason"] = "STOP"
    body = {"candidates": [candidate], "usageMetadata": {"promptTokenCount": 3}}
    end = b"\r\n\r\n" if crlf else b"\n\n"
    return b"data: " + orjson.dumps(body) + end


async def test_cut_stream_raises_unreachable_after_the_events_received() -> None:
    async with sse_client([gemini_event("Hel"), gemini_event("lo")], cut=True) as client:
        stream = await GeminiAdapter(client, api_key="k").open_stream(chat(), headers={})
        seen: list[bytes] = []
        with pytest.raises(UpstreamUnreachable):
            await drain(stream, seen)
        await stream.aclose()
    assert b'"Hel"' in b"".join(seen)
    assert b"[DONE]" not in b"".join(seen)


async def test_stream_that_ends_without_a_finish_reason_is_incomplete() -> None:
    async with sse_client([gemini_event("partial", crlf=False)]) as client:
        stream = await GeminiAdapter(client, api_key="k").open_stream(chat(), headers={})
        with pytest.raises(UpstreamUnreachable, match="before it was complete"):
            await drain(stream, [])


async def test_stream_events_split_across_reads_and_crlf() -> None:
    whole = gemini_event("Hello ") + gemini_event("world", finish=True)
    parts = [whole[i : i + 7] for i in range(0, len(whole), 7)]
    async with sse_client(parts) as client:
        events = await collect(GeminiAdapter(client, api_key="k"), chat())
    chunks = [orjson.loads(e.removeprefix(b"data: ")) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Hello world"
    assert events[-1] == b"data: [DONE]\n\n"


async def test_dropped_connection_and_malformed_body(
    adapter: GeminiAdapter, app: Starlette
) -> None:
    app.state.faults.add(drop=True)
    with pytest.raises(UpstreamUnreachable):
        await adapter.complete(chat(), headers={})
    app.state.faults.add(malformed=True)
    with pytest.raises(UpstreamProtocolError):
        await adapter.complete(chat(), headers={})


async def test_timeouts_and_refused_connections() -> None:
    def raiser(exc: Exception) -> httpx.MockTransport:
        def handler(request: httpx.Request) -> httpx.Response:
            raise exc

        return httpx.MockTransport(handler)

    for exc, kind in (
        (httpx.ReadTimeout("slow"), UpstreamTimeout),
        (httpx.ConnectError("refused"), UpstreamUnreachable),
    ):
        async with httpx.AsyncClient(transport=raiser(exc), base_url="http://g/v1beta") as client:
            with pytest.raises(kind):
                await GeminiAdapter(client, api_key="k").complete(chat(), headers={})


async def test_oversized_reply_is_refused(app: Starlette) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://g/v1beta") as client:
        tiny = GeminiAdapter(client, api_key="key-a", max_response_bytes=50)
        with pytest.raises(UpstreamProtocolError, match="larger than 50 bytes"):
            await tiny.complete(chat(), headers={})


async def test_inexpressible_request_fails_before_any_call(
    adapter: GeminiAdapter, app: Starlette
) -> None:
    with pytest.raises(Unsupported) as caught:
        await adapter.complete(chat(logit_bias={"5": 1}), headers={})
    assert caught.value.status == 400
    assert app.state.requests == []


async def test_malformed_cache_header_is_a_400_even_without_a_cache(
    adapter: GeminiAdapter,
) -> None:
    with pytest.raises(Unsupported, match="X-Context-Cache"):
        await adapter.complete(chat(), headers={"x-context-cache": "sometimes"})


async def test_embeddings_float_and_base64(adapter: GeminiAdapter, app: Starlette) -> None:
    body = {"model": "text-embedding-004", "input": ["alpha", "beta"], "dimensions": 8}
    reply = await adapter.embed(body, headers={})
    parsed = CreateEmbeddingResponse.model_validate(reply.parsed)
    assert [item.index for item in parsed.data] == [0, 1]
    assert len(parsed.data[0].embedding) == 8
    assert app.state.requests[-1]["path"] == "/v1beta/models/text-embedding-004:batchEmbedContents"
    encoded = await adapter.embed({**body, "encoding_format": "base64"}, headers={})
    assert encoded.parsed is not None
    raw = base64.b64decode(encoded.parsed["data"][0]["embedding"])
    floats = struct.unpack("<8f", raw)
    assert floats == pytest.approx(parsed.data[0].embedding, abs=1e-6)


async def test_embedding_token_arrays_are_a_400(adapter: GeminiAdapter) -> None:
    with pytest.raises(Unsupported, match="token arrays"):
        await adapter.embed({"model": "text-embedding-004", "input": [[1, 2, 3]]}, headers={})
