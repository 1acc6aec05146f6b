"""The real-time lane end to end: official openai SDK -> proxy (uvicorn) -> emulators."""

from __future__ import annotations

import base64
import struct

import httpx
import openai
import pytest
from openai.types import CreateEmbeddingResponse, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tests.e2e.conftest import CLIENT_KEY, DEEPSEEK_KEY, OPENAI_KEY, Stack
from tests.sdk_checks import strict

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


def test_plain_chat_through_the_sdk(fresh: Stack) -> None:
    raw = fresh.client().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES
    )
    assert raw.headers["x-costroute-lane"] == "realtime"
    assert raw.headers["x-request-id"].startswith("req_")
    completion = strict(ChatCompletion, raw.http_response.json())
    assert completion.choices[0].message.content
    assert completion.usage is not None
    assert completion.usage.prompt_tokens > 0
    sent = fresh.openai_state.requests[-1]
    # The provider's key goes upstream, never the caller's.
    assert sent["headers"]["authorization"] == f"Bearer {OPENAI_KEY}"
    assert CLIENT_KEY not in str(sent)


def test_unknown_fields_pass_through_unchanged_and_alias_is_renamed(fresh: Stack) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    completion = fresh.client().chat.completions.create(
        model="mini-alias",
        messages=MESSAGES,
        tools=tools,  # type: ignore[arg-type]
        tool_choice="required",
        seed=7,
        response_format={"type": "text"},
        extra_body={"metadata": {"team": "a"}},
    )
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.choices[0].message.tool_calls
    sent = fresh.openai_state.requests[-1]["json"]
    assert sent["model"] == "gpt-4o-mini"
    assert sent["tools"] == tools
    assert (sent["seed"], sent["tool_choice"], sent["metadata"]) == (7, "required", {"team": "a"})


def test_json_mode_passes_through(fresh: Stack) -> None:
    completion = fresh.client().chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Answer in JSON: the capital of France?"}],
        response_format={"type": "json_object"},
    )
    import json

    assert isinstance(json.loads(completion.choices[0].message.content or ""), dict)


def test_streaming_with_usage(fresh: Stack) -> None:
    chunks = list(
        fresh.client().chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    for chunk in chunks:
        strict(ChatCompletionChunk, chunk.model_dump(exclude_unset=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0


def test_streaming_without_usage_hides_the_forced_usage_chunk(fresh: Stack) -> None:
    with fresh.http() as http:
        response = http.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True},
        )
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-costroute-lane"] == "realtime"
    events = [line for line in response.text.split("\n\n") if line]
    assert events[-1] == "data: [DONE]"
    assert all('"usage"' not in event for event in events)
    # ...but upstream was asked for usage, so the routing log still meters the stream.
    sent = fresh.openai_state.requests[-1]["json"]
    assert sent["stream_options"]["include_usage"] is True
    row = fresh.new_routes(1)[-1]
    assert row["stream"] == 1
    assert row["completion_tokens"]
    assert row["prompt_tokens"]


def test_embeddings_float_and_base64(fresh: Stack) -> None:
    client = fresh.client()
    floats = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    strict(CreateEmbeddingResponse, floats.model_dump())
    assert [d.index for d in floats.data] == [0, 1]
    raw = client.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input="a", encoding_format="base64"
    )
    encoded = raw.http_response.json()["data"][0]["embedding"]
    decoded = struct.unpack(f"<{len(base64.b64decode(encoded)) // 4}f", base64.b64decode(encoded))
    assert decoded == pytest.approx(floats.data[0].embedding, abs=1e-6)


def test_models_lists_the_configured_models(fresh: Stack) -> None:
    client = fresh.client()
    models = list(client.models.list())
    for model in models:
        strict(Model, model.model_dump())
    assert {m.id for m in models} == set(fresh.settings.models)
    assert client.models.retrieve("deepseek-flash").owned_by == "deepseek"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_deepseek_direct_with_cache_usage(fresh: Stack) -> None:
    long_system = {"role": "system", "content": "You are terse. " * 100}
    client = fresh.client()
    client.chat.completions.create(model="deepseek-flash", messages=[long_system, *MESSAGES])
    raw = client.chat.completions.with_raw_response.create(
        model="deepseek-flash", messages=[long_system, *MESSAGES]
    )
    body = raw.http_response.json()
    assert body["usage"]["prompt_cache_hit_tokens"] > 0
    assert fresh.deepseek_state.requests[-1]["headers"]["authorization"] == f"Bearer {DEEPSEEK_KEY}"
    row = fresh.new_routes(2)[-1]
    assert (row["provider"], row["lane"]) == ("deepseek", "realtime")
    assert row["cached_tokens"] == body["usage"]["prompt_cache_hit_tokens"]


def test_healthz(fresh: Stack) -> None:
    with fresh.http(None) as http:
        assert http.get("/healthz").json() == {"status": "ok"}


def test_routing_log_rows_carry_identity_and_usage(fresh: Stack) -> None:
    completion = fresh.client().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    row = fresh.new_routes(1)[-1]
    assert row["key_name"] == "team-a"
    assert (row["model"], row["provider"], row["lane"], row["status"]) == (
        "gpt-4o-mini",
        "openai",
        "realtime",
        200,
    )
    assert row["reason"] == "no latency tolerance"
    assert completion.usage is not None
    assert row["prompt_tokens"] == completion.usage.prompt_tokens
    assert row["completion_tokens"] == completion.usage.completion_tokens
    assert row["latency_ms"] > 0
    assert row["upstream_ms"] > 0


def test_python_sdk_async_client_works_too(fresh: Stack) -> None:
    import asyncio

    async def go() -> str:
        async with openai.AsyncOpenAI(base_url=fresh.url + "/v1", api_key=CLIENT_KEY) as client:
            result = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            return result.choices[0].message.content or ""

    assert asyncio.run(go())


def test_httpx_keepalive_many_requests(fresh: Stack) -> None:
    with fresh.http() as http:
        for _ in range(20):
            response = http.post(
                "/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": MESSAGES}
            )
            assert response.status_code == 200
    assert isinstance(http, httpx.Client)
