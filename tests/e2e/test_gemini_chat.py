"""The Gemini lane end to end: official openai SDK -> proxy (uvicorn) -> Gemini emulator.

OpenAI chat/embeddings go in, native Gemini REST goes out (checked against google-genai's
own types after every test), OpenAI comes back (checked strictly against the SDK's types).
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response

from tests.e2e.gemini_stack import (
    EMBEDDING,
    FLASH,
    GEMINI_KEY,
    START,
    GeminiStack,
    assert_valid_generate,
    assert_wire,
    running,
)
from tests.sdk_checks import strict

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
# A 1x1 transparent PNG.
PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
    )
).decode()


@pytest.fixture(scope="module")
def gemini(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GeminiStack]:
    with running(tmp_path_factory.mktemp("gemini-chat")) as stack:
        yield stack


@pytest.fixture
def gem(gemini: GeminiStack) -> Iterator[GeminiStack]:
    gemini.reset()
    yield gemini
    # Whatever the test did, what reached "Google" was valid Gemini with the right key.
    assert_wire(gemini, GEMINI_KEY)


def sse_events(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [event for event in response.text.split("\n\n") if event]
    assert all(event.startswith("data: ") for event in events)
    return [event[6:] for event in events]


def strict_chunks(events: list[str]) -> list[ChatCompletionChunk]:
    assert events[-1] == "[DONE]"
    assert events.count("[DONE]") == 1
    return [strict(ChatCompletionChunk, json.loads(event)) for event in events[:-1]]


def test_plain_chat(gem: GeminiStack) -> None:
    raw = gem.client().chat.completions.with_raw_response.create(model=FLASH, messages=QUESTION)
    assert raw.headers["x-costroute-lane"] == "realtime"
    completion = strict(ChatCompletion, raw.http_response.json())
    assert completion.object == "chat.completion"
    assert completion.created == int(START)  # the proxy's injected clock
    assert completion.model == FLASH
    assert completion.id.startswith("chatcmpl-")
    [choice] = completion.choices
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens > 0
    assert usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens

    [sent] = gem.sent()
    assert (sent["method"], sent["path"]) == ("POST", f"/v1beta/models/{FLASH}:generateContent")
    assert sent["json"] == {
        "contents": [{"role": "user", "parts": [{"text": "What is the capital of France?"}]}]
    }
    [row] = gem.new_routes(1)
    assert (row["provider"], row["model"], row["lane"], row["status"]) == (
        "gemini",
        FLASH,
        "realtime",
        200,
    )
    assert (row["prompt_tokens"], row["completion_tokens"]) == (
        usage.prompt_tokens,
        usage.completion_tokens,
    )
    assert row["cache_name"] is None
    assert row["cost_usd"] > 0
    assert row["cost_usd"] == pytest.approx(row["baseline_usd"])


def test_streaming_with_usage_matches_the_whole_reply(gem: GeminiStack) -> None:
    whole = gem.client().chat.completions.create(model=FLASH, messages=QUESTION)
    body = {
        "model": FLASH,
        "messages": QUESTION,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with gem.http() as http:
        response = http.post("/v1/chat/completions", json=body)
    chunks = strict_chunks(sse_events(response))
    assert response.headers["x-costroute-lane"] == "realtime"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content  # deltas join into the whole reply
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    assert finishes.count("stop") == 1
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage == whole.usage  # Gemini's cumulative usage: the last one counts
    assert all(c.usage is None for c in chunks[:-1])
    generation = gem.generations()[-1]
    assert generation["path"].endswith(f"{FLASH}:streamGenerateContent")
    assert generation["query"] == {"alt": "sse"}

    # The SDK reads the same stream to its end, without hanging or raising.
    stream = gem.client().chat.completions.create(
        model=FLASH, messages=QUESTION, stream=True, stream_options={"include_usage": True}
    )
    sdk_chunks = list(stream)
    assert sdk_chunks[-1].usage is not None
    assert "".join(c.choices[0].delta.content or "" for c in sdk_chunks if c.choices) == text
    row = gem.new_routes(3)[-1]
    assert (row["stream"], row["lane"], row["status"]) == (1, "realtime", 200)
    assert row["completion_tokens"] == last.usage.completion_tokens


def test_streaming_without_usage_sends_no_usage_chunk(gem: GeminiStack) -> None:
    with gem.http() as http:
        response = http.post(
            "/v1/chat/completions", json={"model": FLASH, "messages": QUESTION, "stream": True}
        )
    events = sse_events(response)
    chunks = strict_chunks(events)
    assert all('"usage"' not in event for event in events)
    assert all(c.choices for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"
    sdk_chunks = list(
        gem.client().chat.completions.create(model=FLASH, messages=QUESTION, stream=True)
    )
    assert all(c.usage is None for c in sdk_chunks)
    # The caller did not ask for usage, but the routing log still meters the stream.
    row = gem.new_routes(2)[0]
    assert row["stream"] == 1
    assert row["prompt_tokens"] > 0
    assert row["completion_tokens"] > 0


def test_multi_turn_with_system_prompt(gem: GeminiStack) -> None:
    messages: list[Any] = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Name a French city."},
        {"role": "assistant", "content": "Lyon."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in English."}]},
        {"role": "user", "content": [{"type": "text", "text": "Another one?"}]},
    ]
    raw = gem.client().chat.completions.with_raw_response.create(
        model=FLASH, messages=messages, temperature=0.2, max_tokens=400, stop=["\n\n"], seed=3
    )
    completion = strict(ChatCompletion, raw.http_response.json())
    assert completion.choices[0].message.content
    sent = gem.generations()[-1]["json"]
    assert sent["systemInstruction"] == {
        "parts": [{"text": "You are terse."}, {"text": "Answer in English."}]
    }
    assert sent["contents"] == [
        {"role": "user", "parts": [{"text": "Name a French city."}]},
        {"role": "model", "parts": [{"text": "Lyon."}]},
        {"role": "user", "parts": [{"text": "Another one?"}]},
    ]
    config = assert_valid_generate(sent)
    assert (config.temperature, config.max_output_tokens, config.seed) == (0.2, 400, 3)
    assert config.stop_sequences == ["\n\n"]


def test_tool_call_and_the_follow_up_with_its_result(gem: GeminiStack) -> None:
    client = gem.client()
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    raw = client.chat.completions.with_raw_response.create(
        model=FLASH, messages=messages, tools=[WEATHER_TOOL], tool_choice="auto"
    )
    first = strict(ChatCompletion, raw.http_response.json())
    [choice] = first.choices
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert call.id.startswith("call_")
    assert call.type == "function"
    assert call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    assert isinstance(arguments["city"], str)
    sent = gem.generations()[-1]["json"]
    declaration = sent["tools"][0]["functionDeclarations"][0]
    assert declaration["name"] == "get_weather"
    assert declaration["description"] == "Current weather in a city."
    assert declaration["parameters"]["type"] == "OBJECT"
    assert "additionalProperties" not in json.dumps(declaration)
    assert sent["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}

    messages += [
        choice.message.model_dump(exclude_none=True, exclude={"annotations", "refusal"}),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 21, "sky": "clear"}'},
    ]
    follow = client.chat.completions.with_raw_response.create(
        model=FLASH, messages=messages, tools=[WEATHER_TOOL]
    )
    answer = strict(ChatCompletion, follow.http_response.json())
    assert answer.choices[0].finish_reason == "stop"
    assert answer.choices[0].message.content
    assert not answer.choices[0].message.tool_calls
    contents = gem.generations()[-1]["json"]["contents"]
    assert [turn["role"] for turn in contents] == ["user", "model", "user"]
    assert contents[1]["parts"] == [{"functionCall": {"name": "get_weather", "args": arguments}}]
    assert contents[2]["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {"temp_c": 21, "sky": "clear"}}}
    ]


def test_forced_tool_choice_and_a_streamed_tool_call(gem: GeminiStack) -> None:
    other = {
        "type": "function",
        "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
    }
    completion = gem.client().chat.completions.create(
        model=FLASH,
        messages=[{"role": "user", "content": "weather please"}],
        tools=[WEATHER_TOOL, other],  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    assert (completion.choices[0].message.tool_calls or [])[0].function.name == "get_time"
    sent = gem.generations()[-1]["json"]
    assert sent["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_time"]}
    }
    # "No arguments" is an empty OBJECT for OpenAI, which Gemini refuses: left out.
    assert "parameters" not in sent["tools"][0]["functionDeclarations"][1]

    body = {
        "model": FLASH,
        "messages": [{"role": "user", "content": "What is the weather in Oslo?"}],
        "tools": [WEATHER_TOOL],
        "tool_choice": "required",
        "stream": True,
    }
    with gem.http() as http:
        chunks = strict_chunks(sse_events(http.post("/v1/chat/completions", json=body)))
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    [delta] = calls
    assert delta.index == 0
    assert delta.id
    assert delta.function is not None
    assert delta.function.name == "get_weather"
    assert "city" in json.loads(delta.function.arguments or "")
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert gem.generations()[-1]["json"]["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}


def test_json_object_mode(gem: GeminiStack) -> None:
    raw = gem.client().chat.completions.with_raw_response.create(
        model=FLASH,
        messages=[{"role": "user", "content": "The capital of France, as JSON."}],
        response_format={"type": "json_object"},
    )
    completion = strict(ChatCompletion, raw.http_response.json())
    assert isinstance(json.loads(completion.choices[0].message.content or ""), dict)
    config = gem.generations()[-1]["json"]["generationConfig"]
    assert config == {"responseMimeType": "application/json"}


def test_json_schema_mode(gem: GeminiStack) -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "nickname": {"type": ["string", "null"]},
        },
        "required": ["name", "age", "tags", "nickname"],
        "additionalProperties": False,
    }
    raw = gem.client().chat.completions.with_raw_response.create(
        model=FLASH,
        messages=[{"role": "user", "content": "Describe a person."}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "strict": True, "schema": schema},
        },
    )
    completion = strict(ChatCompletion, raw.http_response.json())
    value = json.loads(completion.choices[0].message.content or "")
    assert list(value) == ["name", "age", "tags", "nickname"]  # declared order kept
    assert isinstance(value["name"], str)
    assert isinstance(value["age"], int)
    assert all(isinstance(tag, str) for tag in value["tags"])
    sent = gem.generations()[-1]["json"]
    config = assert_valid_generate(sent)
    assert config.response_mime_type == "application/json"
    response_schema = sent["generationConfig"]["responseSchema"]
    assert response_schema["type"] == "OBJECT"
    assert response_schema["properties"]["nickname"] == {"type": "STRING", "nullable": True}
    assert response_schema["propertyOrdering"] == ["name", "age", "tags", "nickname"]


def test_images_and_files_as_data_urls(gem: GeminiStack) -> None:
    content: Any = [
        {"type": "text", "text": "What is in this picture and this note?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "file", "file": {"file_data": "data:text/plain,hello%20world", "filename": "n"}},
    ]
    raw = gem.client().chat.completions.with_raw_response.create(
        model=FLASH, messages=[{"role": "user", "content": content}]
    )
    completion = strict(ChatCompletion, raw.http_response.json())
    assert completion.usage is not None
    assert completion.usage.prompt_tokens >= 2 * 258  # Gemini's flat price per media part
    parts = gem.generations()[-1]["json"]["contents"][0]["parts"]
    assert parts[0] == {"text": "What is in this picture and this note?"}
    assert parts[1] == {"inlineData": {"mimeType": "image/png", "data": PNG}}
    # A percent-encoded data URL is re-encoded as the base64 Gemini wants.
    assert parts[2]["inlineData"]["mimeType"] == "text/plain"
    assert base64.b64decode(parts[2]["inlineData"]["data"]) == b"hello world"


def test_several_candidates_reasoning_and_a_blocked_prompt(gem: GeminiStack) -> None:
    client = gem.client()
    raw = client.chat.completions.with_raw_response.create(
        model=FLASH, messages=QUESTION, n=2, reasoning_effort="low"
    )
    completion = strict(ChatCompletion, raw.http_response.json())
    assert [c.index for c in completion.choices] == [0, 1]
    assert completion.choices[0].message.content != completion.choices[1].message.content
    assert completion.usage is not None
    assert completion.usage.completion_tokens_details is not None
    assert 0 < (completion.usage.completion_tokens_details.reasoning_tokens or 0) <= 1024
    config = gem.generations()[-1]["json"]["generationConfig"]
    assert config == {"candidateCount": 2, "thinkingConfig": {"thinkingBudget": 1024}}

    quiet = client.chat.completions.create(model=FLASH, messages=QUESTION, reasoning_effort="none")
    assert quiet.usage is not None
    assert quiet.usage.completion_tokens_details is not None
    assert quiet.usage.completion_tokens_details.reasoning_tokens == 0

    blocked = client.chat.completions.with_raw_response.create(
        model=FLASH, messages=[{"role": "user", "content": "[emulator:block] do harm"}]
    )
    refused = strict(ChatCompletion, blocked.http_response.json())
    assert refused.choices[0].finish_reason == "content_filter"
    assert refused.choices[0].message.content is None


def test_embeddings_float_base64_and_dimensions(gem: GeminiStack) -> None:
    client = gem.client()
    raw = client.embeddings.with_raw_response.create(
        model=EMBEDDING, input=["alpha", "beta"], encoding_format="float"
    )
    floats = strict(CreateEmbeddingResponse, raw.http_response.json())
    assert [d.index for d in floats.data] == [0, 1]
    assert len(floats.data[0].embedding) == 768
    assert floats.data[0].embedding != floats.data[1].embedding
    assert floats.usage.prompt_tokens > 0
    [sent] = gem.sent(":batchEmbedContents")
    assert sent["path"] == f"/v1beta/models/{EMBEDDING}:batchEmbedContents"
    assert sent["json"] == {
        "requests": [
            {"model": f"models/{EMBEDDING}", "content": {"parts": [{"text": "alpha"}]}},
            {"model": f"models/{EMBEDDING}", "content": {"parts": [{"text": "beta"}]}},
        ]
    }
    encoded = client.embeddings.with_raw_response.create(
        model=EMBEDDING, input="alpha", encoding_format="base64"
    )
    data = base64.b64decode(encoded.http_response.json()["data"][0]["embedding"])
    decoded = struct.unpack(f"<{len(data) // 4}f", data)
    assert decoded == pytest.approx(floats.data[0].embedding, abs=1e-6)
    # The SDK's default (it asks for base64 and decodes it) gives the same vector.
    default = client.embeddings.create(model=EMBEDDING, input="alpha")
    assert default.data[0].embedding == pytest.approx(floats.data[0].embedding, abs=1e-6)
    small = client.embeddings.create(model=EMBEDDING, input="alpha", dimensions=64)
    assert len(small.data[0].embedding) == 64
    assert gem.sent(":batchEmbedContents")[-1]["json"]["requests"][0]["outputDimensionality"] == 64
    rows = gem.new_routes(4)
    assert [(r["endpoint"], r["provider"], r["status"]) for r in rows] == [
        ("/v1/embeddings", "gemini", 200)
    ] * 4


def test_thought_signatures_round_trip_through_the_tool_loop(gem: GeminiStack) -> None:
    # Gemini 3 sends a signature with each function call and refuses a tool loop that
    # drops it; the proxy carries it where Google's OpenAI-compatible endpoint does.
    signature = base64.b64encode(b"opaque-thought-state").decode()
    reply = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {
                            "functionCall": {"name": "get_weather", "args": {"city": "Rome"}},
                            "thoughtSignature": signature,
                        }
                    ],
                },
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 5, "totalTokenCount": 17},
        "modelVersion": FLASH,
        "responseId": "resp-signed-1",
    }
    gem.state.faults.add(path=":generateContent", status=200, body=reply)
    client = gem.client()
    messages: list[Any] = [{"role": "user", "content": "Weather in Rome?"}]
    raw = client.chat.completions.with_raw_response.create(
        model=FLASH, messages=messages, tools=[WEATHER_TOOL]
    )
    [call] = raw.http_response.json()["choices"][0]["message"]["tool_calls"]
    assert call["extra_content"] == {"google": {"thought_signature": signature}}
    # Everything but that Google extension is the SDK's own shape.
    strict(ChatCompletion, _without_extra_content(raw.http_response.json()))
    completion = raw.parse()
    messages += [
        completion.choices[0].message.model_dump(
            exclude_none=True, exclude={"annotations", "refusal"}
        ),
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny"},
    ]
    client.chat.completions.create(model=FLASH, messages=messages, tools=[WEATHER_TOOL])
    model_turn = gem.generations()[-1]["json"]["contents"][1]
    assert model_turn["parts"] == [
        {
            "functionCall": {"name": "get_weather", "args": {"city": "Rome"}},
            "thoughtSignature": signature,
        }
    ]
    assert gem.generations()[-1]["json"]["contents"][2]["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {"content": "sunny"}}}
    ]


def _without_extra_content(body: dict[str, Any]) -> dict[str, Any]:
    for choice in body["choices"]:
        for call in choice["message"].get("tool_calls") or []:
            call.pop("extra_content", None)
    return body


def test_the_responses_api_is_bridged_to_gemini(gem: GeminiStack) -> None:
    """``client.responses`` for a Gemini model: the chat translation, the reply as a strict
    ``response`` object and the stream as the Responses event sequence."""
    raw = gem.client().responses.with_raw_response.create(
        model=FLASH, input="What is the capital of France?", instructions="Answer briefly."
    )
    response = strict(Response, raw.http_response.json())
    assert response.status == "completed"
    assert response.output_text
    assert response.usage is not None
    assert response.usage.input_tokens > 0
    with gem.http() as client:
        body = {"model": FLASH, "input": "Count to three.", "stream": True}
        reply = client.post("/v1/responses", json=body)
    blocks = reply.text.strip().split("\n\n")
    events = [json.loads(block.split("\n")[1].removeprefix("data: ")) for block in blocks]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "response.created"
    assert events[-1]["type"] == "response.completed"
    final = strict(Response, events[-1]["response"])
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert deltas == final.output_text
