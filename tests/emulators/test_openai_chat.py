"""Chat completions on the OpenAI flavour: reply shape (strictly against the SDK's types),
validation with OpenAI's messages, service tiers, output caps, reasoning models, the
automatic prompt cache, tools and JSON modes."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion
from starlette.applications import Starlette

from adapters.clock import ManualClock
from adapters.emulators.tokens import count_messages
from tests.emulators.conftest import AUTH, sdk_for
from tests.sdk_checks import strict

URL = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "Say hello"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string"}},
            "required": ["zone"],
        },
    },
}


async def post(client: httpx.AsyncClient, body: Any) -> httpx.Response:
    return await client.post(URL, json=body, headers=AUTH)


async def test_reply_is_exactly_the_sdk_type(client: httpx.AsyncClient, clock: ManualClock) -> None:
    response = await post(client, {"model": "gpt-4o", "messages": HELLO})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    completion = ChatCompletion.model_validate_json(response.content, strict=True)
    strict(ChatCompletion, response.json())
    body = response.json()
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert body["created"] == int(clock.now())
    assert body["model"] == "gpt-4o"
    assert body["system_fingerprint"].startswith("fp_")
    assert body["service_tier"] == "default"
    choice = body["choices"][0]
    assert choice["logprobs"] is None
    assert choice["finish_reason"] == "stop"
    assert choice["message"] == {
        "role": "assistant",
        "content": completion.choices[0].message.content,
        "refusal": None,
        "annotations": [],
    }
    usage = body["usage"]
    assert usage["prompt_tokens"] == count_messages(HELLO)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0, "audio_tokens": 0}
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 0


async def test_replies_are_deterministic_per_prompt(client: httpx.AsyncClient) -> None:
    first = (await post(client, {"model": "gpt-4o", "messages": HELLO})).json()
    again = (await post(client, {"model": "gpt-4o", "messages": HELLO})).json()
    other = [{"role": "user", "content": "Something else entirely"}]
    different = (await post(client, {"model": "gpt-4o", "messages": other})).json()
    text = first["choices"][0]["message"]["content"]
    assert text == again["choices"][0]["message"]["content"]
    assert text != different["choices"][0]["message"]["content"]
    assert first["id"] != again["id"]


async def test_resolved_model_names(make_app: Any) -> None:
    app = make_app(resolved_models={"gpt-4o": "gpt-4o-2024-08-06"})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
        body = (await post(c, {"model": "gpt-4o", "messages": HELLO})).json()
    assert body["model"] == "gpt-4o-2024-08-06"


async def test_n_choices_are_billed_together(client: httpx.AsyncClient) -> None:
    body = (await post(client, {"model": "gpt-4o-mini", "messages": HELLO, "n": 3})).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    texts = {c["message"]["content"] for c in body["choices"]}
    assert len(texts) > 1
    tokens = sum(len(c["message"]["content"]) for c in body["choices"])
    assert body["usage"]["completion_tokens"] >= tokens // 4


BAD_BODIES: list[tuple[Any, str | None, str | None, str]] = [
    ({"messages": HELLO}, None, None, "you must provide a model parameter"),
    ({"model": "gpt-4o"}, "messages", "missing_required_parameter", "Missing required parameter"),
    ({"model": "gpt-4o", "messages": []}, "messages", "empty_array", "empty array"),
    ({"model": "gpt-4o", "messages": "hi"}, "messages", "invalid_type", "expected an array"),
    (
        {"model": "gpt-4o", "messages": [{"role": "robot", "content": "x"}]},
        "messages[0].role",
        "invalid_value",
        "Invalid value: 'robot'",
    ),
    (
        {"model": "gpt-4o", "messages": [{"content": "x"}]},
        "messages[0].role",
        "missing_required_parameter",
        "Missing required parameter",
    ),
    (
        {"model": "gpt-4o", "messages": [{"role": "user"}]},
        "messages[0].content",
        "missing_required_parameter",
        "Missing required parameter",
    ),
    (
        {"model": "gpt-4o", "messages": [{"role": "user", "content": 5}]},
        "messages[0].content",
        "invalid_type",
        "one of a string or array of objects",
    ),
    (
        {"model": "gpt-4o", "messages": [{"role": "system", "content": [{"type": "image_url"}]}]},
        "messages[0].content[0].type",
        "invalid_value",
        "Supported values are: 'text'",
    ),
    (
        {"model": "gpt-4o", "messages": [*HELLO, {"role": "tool", "content": "42"}]},
        "messages[1].tool_call_id",
        "missing_required_parameter",
        "tool_call_id",
    ),
    (
        {
            "model": "gpt-4o",
            "messages": [*HELLO, {"role": "tool", "tool_call_id": "call_1", "content": "42"}],
        },
        "messages.[1].role",
        None,
        "must be a response to a preceeding message with 'tool_calls'",
    ),
    (
        {
            "model": "gpt-4o",
            "messages": [
                *HELLO,
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                },
                {"role": "user", "content": "and?"},
            ],
        },
        "messages.[1].role",
        None,
        "did not have response messages: call_1",
    ),
    ({"model": "gpt-4o", "messages": HELLO, "n": 0}, "n", "integer_below_min_value", ">= 1"),
    ({"model": "gpt-4o", "messages": HELLO, "n": 129}, "n", "integer_above_max_value", "<= 128"),
    ({"model": "gpt-4o", "messages": HELLO, "n": "2"}, "n", "invalid_type", "an integer"),
    (
        {"model": "gpt-4o", "messages": HELLO, "temperature": 2.5},
        "temperature",
        "decimal_above_max_value",
        "<= 2",
    ),
    ({"model": "gpt-4o", "messages": HELLO, "stream": "yes"}, "stream", "invalid_type", "boolean"),
    (
        {"model": "gpt-4o", "messages": HELLO, "stream_options": {"include_usage": True}},
        "stream_options",
        None,
        "only allowed when 'stream' is enabled",
    ),
    (
        {"model": "gpt-5", "messages": HELLO, "max_tokens": 10},
        "max_tokens",
        "unsupported_parameter",
        "Unsupported parameter: 'max_tokens' is not supported with this model. "
        "Use 'max_completion_tokens' instead.",
    ),
    (
        {"model": "o3-mini", "messages": HELLO, "temperature": 0.2},
        "temperature",
        "unsupported_value",
        "Only the default (1) value is supported.",
    ),
    (
        {"model": "gpt-4o", "messages": HELLO, "stop": ["a", "b", "c", "d", "e"]},
        "stop",
        "array_above_max_length",
        "Expected an array with maximum length 4",
    ),
    ({"model": "gpt-4o", "messages": HELLO, "stop": 3}, "stop", "invalid_type", "array of strings"),
    (
        {"model": "o4-mini", "messages": HELLO, "stop": "x"},
        "stop",
        "unsupported_parameter",
        "'stop' is not supported with this model",
    ),
    (
        {"model": "gpt-4o", "messages": HELLO, "service_tier": "cheap"},
        "service_tier",
        "invalid_value",
        "Invalid value: 'cheap'",
    ),
    (
        {"model": "gpt-4o", "messages": HELLO, "tool_choice": "auto"},
        "tool_choice",
        None,
        "only allowed when 'tools' are specified",
    ),
    (
        {
            "model": "gpt-4o",
            "messages": HELLO,
            "tools": [WEATHER_TOOL],
            "tool_choice": {"type": "function", "function": {"name": "nope"}},
        },
        "tool_choice",
        None,
        "function 'nope' not found",
    ),
    ({"model": "gpt-4o", "messages": HELLO, "tools": []}, "tools", "empty_array", "empty array"),
    (
        {
            "model": "gpt-4o",
            "messages": HELLO,
            "tools": [{"type": "function", "function": {"name": "bad name!"}}],
        },
        "tools[0].function.name",
        "invalid_value",
        "does not match pattern",
    ),
    (
        {"model": "gpt-4o", "messages": HELLO, "response_format": {"type": "json_object"}},
        "messages",
        None,
        "must contain the word 'json'",
    ),
    (
        {
            "model": "gpt-4o",
            "messages": HELLO,
            "response_format": {"type": "json_schema", "json_schema": {"schema": {}}},
        },
        "response_format.json_schema.name",
        "missing_required_parameter",
        "Missing required parameter",
    ),
    (
        {"model": "gpt-4o", "messages": HELLO, "response_format": {"type": "yaml"}},
        "response_format.type",
        "invalid_value",
        "Invalid value: 'yaml'",
    ),
]


@pytest.mark.parametrize(("body", "param", "code", "message"), BAD_BODIES)
async def test_invalid_requests_get_openais_400(
    client: httpx.AsyncClient, body: Any, param: str | None, code: str | None, message: str
) -> None:
    response = await post(client, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert (error["param"], error["code"]) == (param, code)
    assert message in error["message"]


async def test_malformed_json_body(client: httpx.AsyncClient, app: Starlette) -> None:
    response = await client.post(
        URL, content=b'{"model": ', headers={**AUTH, "content-type": "application/json"}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert "We could not parse the JSON body of your request" in error["message"]
    assert (error["param"], error["code"]) == (None, None)
    assert app.state.requests[-1]["json"] is None  # still recorded


async def test_unknown_and_non_chat_models_are_404(client: httpx.AsyncClient) -> None:
    response = await post(client, {"model": "gpt-9", "messages": HELLO})
    assert response.status_code == 404
    assert response.json()["error"] == {
        "message": "The model `gpt-9` does not exist or you do not have access to it.",
        "type": "invalid_request_error",
        "param": None,
        "code": "model_not_found",
    }
    response = await post(client, {"model": "text-embedding-3-small", "messages": HELLO})
    assert response.status_code == 404
    assert "not a chat model" in response.json()["error"]["message"]


async def test_context_window_is_enforced(make_app: Any) -> None:
    app = make_app(context_window=100)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
        long = [{"role": "user", "content": "x" * 400}]
        error = (await post(c, {"model": "gpt-4o", "messages": long})).json()["error"]
        assert error["code"] == "context_length_exceeded"
        assert error["param"] == "messages"
        assert "maximum context length is 100 tokens" in error["message"]
        asked = {"model": "gpt-4o", "messages": HELLO, "max_tokens": 95}
        error = (await post(c, asked)).json()["error"]
        assert "in the completion" in error["message"]


@pytest.mark.parametrize(
    ("asked", "echoed"),
    [
        (None, "default"),
        ("auto", "default"),
        ("default", "default"),
        ("flex", "flex"),
        ("priority", "priority"),
        ("fast", "priority"),
    ],
)
async def test_service_tier_echo(client: httpx.AsyncClient, asked: str | None, echoed: str) -> None:
    body: dict[str, Any] = {"model": "gpt-4o-mini", "messages": HELLO}
    if asked is not None:
        body["service_tier"] = asked
    assert (await post(client, body)).json()["service_tier"] == echoed


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
async def test_output_cap_cuts_with_length(client: httpx.AsyncClient, field: str) -> None:
    body = await post(client, {"model": "gpt-4o", "messages": HELLO, field: 3})
    completion = strict(ChatCompletion, body.json())
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None
    assert completion.usage.completion_tokens <= 3
    assert completion.choices[0].message.content


async def test_reasoning_model_counts_reasoning_tokens(client: httpx.AsyncClient) -> None:
    body = {"model": "gpt-5-mini", "messages": HELLO, "max_completion_tokens": 4000}
    completion = strict(ChatCompletion, (await post(client, body)).json())
    usage = completion.usage
    assert usage is not None
    assert usage.completion_tokens_details is not None
    reasoning = usage.completion_tokens_details.reasoning_tokens
    assert reasoning is not None
    assert reasoning > 0
    assert usage.completion_tokens > reasoning  # reasoning is inside completion_tokens
    # A cap smaller than the reasoning leaves nothing visible, as on the real API.
    tiny = {"model": "gpt-5-mini", "messages": HELLO, "max_completion_tokens": 5}
    cut = strict(ChatCompletion, (await post(client, tiny)).json())
    assert cut.choices[0].finish_reason == "length"
    assert cut.choices[0].message.content == ""
    assert cut.usage is not None
    assert cut.usage.completion_tokens == 5


def long_prompt(tail: str) -> list[dict[str, str]]:
    system = "You are a careful assistant. " * 200  # ~1,450 tokens
    return [{"role": "system", "content": system}, {"role": "user", "content": tail}]


async def test_automatic_prefix_cache(client: httpx.AsyncClient, clock: ManualClock) -> None:
    async def cached(messages: list[dict[str, str]], model: str = "gpt-4o") -> tuple[int, int]:
        usage = (await post(client, {"model": model, "messages": messages})).json()["usage"]
        return usage["prompt_tokens_details"]["cached_tokens"], usage["prompt_tokens"]

    first, prompt = await cached(long_prompt("question one"))
    assert first == 0
    assert prompt >= 1024
    hit, prompt = await cached(long_prompt("question two, with another tail"))
    assert hit >= 1024
    assert hit % 128 == 0
    assert hit <= prompt
    assert (await cached(long_prompt("question two"), model="gpt-4o-mini"))[0] == 0  # per model
    short = [{"role": "user", "content": "short prompt"}]
    assert await cached(short) == (0, count_messages(short))
    assert (await cached(short))[0] == 0  # under 1024 tokens never hits
    clock.advance(601)  # idle past the cache lifetime
    assert (await cached(long_prompt("question three")))[0] == 0
    assert (await cached(long_prompt("question four")))[0] >= 1024


async def test_tool_call_round_trip_through_the_sdk(app: Starlette) -> None:
    sdk = sdk_for(app)
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    first = await sdk.chat.completions.create(
        model="gpt-4o", messages=messages, tools=[WEATHER_TOOL, TIME_TOOL]
    )
    strict(ChatCompletion, first.model_dump(mode="json", exclude_unset=True))
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert call.id.startswith("call_")
    assert call.function.name == "get_weather"  # the first tool under "auto"
    arguments = json.loads(call.function.arguments)
    assert {"city", "unit"} <= set(arguments)
    assert arguments["unit"] in ("celsius", "fahrenheit")
    assert 1 <= arguments["days"] <= 7
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'},
    ]
    second = await sdk.chat.completions.create(
        model="gpt-4o", messages=messages, tools=[WEATHER_TOOL, TIME_TOOL]
    )
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content
    assert second.choices[0].message.tool_calls is None
    await sdk.close()


async def test_named_and_none_tool_choice(client: httpx.AsyncClient) -> None:
    named = {"type": "function", "function": {"name": "get_time"}}
    body = {"model": "gpt-4o", "messages": HELLO, "tools": [WEATHER_TOOL, TIME_TOOL]}
    reply = (await post(client, {**body, "tool_choice": named})).json()
    call = reply["choices"][0]["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_time"
    assert "zone" in json.loads(call["function"]["arguments"])
    reply = (await post(client, {**body, "tool_choice": "none"})).json()
    assert "tool_calls" not in reply["choices"][0]["message"]
    assert reply["choices"][0]["finish_reason"] == "stop"


async def test_json_object_mode(sdk: openai.AsyncOpenAI) -> None:
    completion = await sdk.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "Reply in JSON please"}],
        response_format={"type": "json_object"},
    )
    content = completion.choices[0].message.content
    assert content is not None
    assert isinstance(json.loads(content), dict)


async def test_json_schema_mode(sdk: openai.AsyncOpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 3},
            "age": {"type": "integer", "minimum": 18, "maximum": 99},
            "score": {"type": "number"},
            "member": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            "plan": {"enum": ["free", "pro"]},
            "nickname": {"type": ["string", "null"]},
            "address": {"$ref": "#/$defs/address"},
        },
        "required": ["name", "age", "score", "member", "tags", "plan", "nickname", "address"],
        "additionalProperties": False,
        "$defs": {
            "address": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            }
        },
    }
    completion = await sdk.chat.completions.create(
        model="gpt-4o",
        messages=HELLO,  # type: ignore[arg-type]
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": schema, "strict": True},
        },
    )
    value = json.loads(completion.choices[0].message.content or "")
    assert set(value) == set(schema["required"])  # type: ignore[arg-type]
    assert isinstance(value["name"], str)
    assert len(value["name"]) >= 3
    assert isinstance(value["age"], int)
    assert 18 <= value["age"] <= 99
    assert isinstance(value["score"], float)
    assert isinstance(value["member"], bool)
    assert len(value["tags"]) >= 2
    assert all(isinstance(t, str) for t in value["tags"])
    assert value["plan"] in ("free", "pro")
    assert isinstance(value["nickname"], str)
    assert isinstance(value["address"]["city"], str)


async def test_sdk_reply_validates_strictly(sdk: openai.AsyncOpenAI) -> None:
    raw = await sdk.chat.completions.with_raw_response.create(
        model="gpt-4.1-nano",
        messages=[{"role": "developer", "content": [{"type": "text", "text": "be brief"}]}, *HELLO],  # type: ignore[list-item]
    )
    completion = ChatCompletion.model_validate_json(raw.http_response.content, strict=True)
    strict(ChatCompletion, json.loads(raw.http_response.content))
    assert completion.choices[0].message.role == "assistant"
    assert raw.headers["x-request-id"].startswith("req_")
    assert raw.headers["openai-version"] == "2020-10-01"


async def test_stop_sequences_end_the_reply(client: httpx.AsyncClient) -> None:
    full = (await post(client, {"model": "gpt-4o", "messages": HELLO})).json()
    text = full["choices"][0]["message"]["content"]
    words = text.split(" ")
    assert len(words) > 3
    stop = " " + words[2]
    cut = (await post(client, {"model": "gpt-4o", "messages": HELLO, "stop": [stop, "zzz"]})).json()
    choice = cut["choices"][0]
    assert choice["message"]["content"] == text[: text.find(stop)]
    assert choice["finish_reason"] == "stop"
    assert cut["usage"]["completion_tokens"] < full["usage"]["completion_tokens"]
