"""Gemini emulator: generateContent, streaming, tools, JSON mode and request validation.

Replies are checked against the official SDK's pydantic types (which forbid unknown
fields), so a shape the real API would not send fails here.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from google.genai import types

from adapters.clock import ManualClock
from adapters.emulators.gemini.config import GeminiEmulatorConfig
from adapters.emulators.gemini.server import create_app

KEY = {"x-goog-api-key": "test-key"}
FLASH = "/v1beta/models/gemini-2.5-flash"
OLD = "/v1beta/models/gemini-2.0-flash"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(GeminiEmulatorConfig(), clock=ManualClock())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gemini", headers=KEY) as c:
        yield c


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "parts": [{"text": text}]}


async def generate(
    client: httpx.AsyncClient, body: dict[str, Any], base: str = FLASH
) -> dict[str, Any]:
    response = await client.post(f"{base}:generateContent", json=body)
    assert response.status_code == 200, response.text
    payload: dict[str, Any] = response.json()
    types.GenerateContentResponse.model_validate(payload)
    return payload


async def refused(client: httpx.AsyncClient, path: str, body: Any, status: int = 400) -> str:
    response = await client.post(path, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == status
    assert error["status"] == {400: "INVALID_ARGUMENT", 404: "NOT_FOUND"}[status]
    return str(error["message"])


def text_of(payload: dict[str, Any], index: int = 0) -> str:
    parts = payload["candidates"][index]["content"].get("parts", [])
    return "".join(p["text"] for p in parts if "text" in p and not p.get("thought"))


# -- plain generation ----------------------------------------------------------------------


async def test_plain_reply_shape_and_usage(client: httpx.AsyncClient) -> None:
    payload = await generate(client, {"contents": [user("Hello there, emulator")]})
    candidate = payload["candidates"][0]
    assert candidate["content"]["role"] == "model"
    assert candidate["finishReason"] == "STOP"
    assert candidate["index"] == 0
    assert text_of(payload)
    usage = payload["usageMetadata"]
    assert "cachedContentTokenCount" not in usage
    assert usage["thoughtsTokenCount"] > 0  # gemini-2.5-flash thinks
    assert usage["totalTokenCount"] == (
        usage["promptTokenCount"] + usage["candidatesTokenCount"] + usage["thoughtsTokenCount"]
    )
    assert usage["promptTokensDetails"] == [
        {"modality": "TEXT", "tokenCount": usage["promptTokenCount"]}
    ]
    assert payload["modelVersion"] == "gemini-2.5-flash"
    assert payload["responseId"]


async def test_replies_are_deterministic_and_depend_on_the_prompt(
    client: httpx.AsyncClient,
) -> None:
    first = await generate(client, {"contents": [user("same prompt")]})
    second = await generate(client, {"contents": [user("same prompt")]})
    other = await generate(client, {"contents": [user("another prompt entirely")]})
    assert text_of(first) == text_of(second)
    assert text_of(first) != text_of(other)
    assert first["responseId"] != second["responseId"]


async def test_non_thinking_model_reports_no_thoughts(client: httpx.AsyncClient) -> None:
    payload = await generate(client, {"contents": [user("hi")]}, base=OLD)
    usage = payload["usageMetadata"]
    assert "thoughtsTokenCount" not in usage
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["candidatesTokenCount"]


async def test_snake_case_input_is_accepted(client: httpx.AsyncClient) -> None:
    body = {
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"text": "describe"},
                    {"inline_data": {"mime_type": "image/png", "data": "iVBORw0KGgo="}},
                ],
            }
        ],
        "system_instruction": {"parts": [{"text": "Be brief."}]},
        "generation_config": {"max_output_tokens": 3, "candidate_count": 1},
    }
    payload = await generate(client, body, base=OLD)
    assert payload["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert payload["usageMetadata"]["candidatesTokenCount"] <= 3
    modalities = {d["modality"] for d in payload["usageMetadata"]["promptTokensDetails"]}
    assert modalities == {"TEXT", "IMAGE"}
    assert "candidates_token_count" not in json.dumps(payload)


async def test_max_tokens_on_a_thinking_model_can_leave_no_text(
    client: httpx.AsyncClient,
) -> None:
    payload = await generate(
        client, {"contents": [user("think")], "generationConfig": {"maxOutputTokens": 5}}
    )
    candidate = payload["candidates"][0]
    assert candidate["finishReason"] == "MAX_TOKENS"
    assert candidate["content"] == {"role": "model"}
    assert payload["usageMetadata"]["thoughtsTokenCount"] == 5


async def test_thinking_budget_zero_and_included_thoughts(client: httpx.AsyncClient) -> None:
    off = await generate(
        client,
        {"contents": [user("q")], "generationConfig": {"thinkingConfig": {"thinkingBudget": 0}}},
    )
    assert "thoughtsTokenCount" not in off["usageMetadata"]
    shown = await generate(
        client,
        {
            "contents": [user("q")],
            "generationConfig": {"thinkingConfig": {"includeThoughts": True, "thinkingBudget": 9}},
        },
    )
    first = shown["candidates"][0]["content"]["parts"][0]
    assert first["thought"] is True
    assert shown["usageMetadata"]["thoughtsTokenCount"] == 9


async def test_stop_sequences_and_candidate_count(client: httpx.AsyncClient) -> None:
    plain = text_of(await generate(client, {"contents": [user("stop me")]}, base=OLD))
    word = plain.split()[2]
    cut = await generate(
        client,
        {"contents": [user("stop me")], "generationConfig": {"stopSequences": [word]}},
        base=OLD,
    )
    assert text_of(cut) == plain[: plain.index(word)]
    assert cut["candidates"][0]["finishReason"] == "STOP"
    many = await generate(
        client, {"contents": [user("two")], "generationConfig": {"candidateCount": 2}}, base=OLD
    )
    assert [c["index"] for c in many["candidates"]] == [0, 1]
    assert text_of(many, 0) != text_of(many, 1)


async def test_blocked_prompt_is_http_200_without_candidates(client: httpx.AsyncClient) -> None:
    payload = await generate(client, {"contents": [user("please [emulator:block] this")]})
    assert "candidates" not in payload
    assert payload["promptFeedback"]["blockReason"] == "SAFETY"
    assert payload["usageMetadata"]["promptTokenCount"] > 0


# -- tools ---------------------------------------------------------------------------------

WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {
        "type": "OBJECT",
        "properties": {
            "city": {"type": "STRING"},
            "unit": {"type": "STRING", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "INTEGER"},
        },
        "required": ["city", "unit"],
    },
}
TIME = {
    "name": "get_time",
    "parametersJsonSchema": {
        "type": "object",
        "properties": {"zone": {"type": "string"}},
        "required": ["zone"],
    },
}


def call_of(payload: dict[str, Any]) -> dict[str, Any]:
    parts = payload["candidates"][0]["content"]["parts"]
    calls = [p["functionCall"] for p in parts if "functionCall" in p]
    assert len(calls) == 1, parts
    return dict(calls[0])


async def test_function_call_satisfies_required_arguments(client: httpx.AsyncClient) -> None:
    payload = await generate(
        client,
        {
            "contents": [user("what is the weather?")],
            "tools": [{"functionDeclarations": [WEATHER]}],
        },
    )
    call = call_of(payload)
    assert call["name"] == "get_weather"
    assert set(call["args"]) == {"city", "unit"}
    assert isinstance(call["args"]["city"], str)
    assert call["args"]["unit"] in ("celsius", "fahrenheit")


async def test_function_named_in_the_prompt_and_json_schema_parameters(
    client: httpx.AsyncClient,
) -> None:
    tools = [{"functionDeclarations": [WEATHER, TIME]}]
    payload = await generate(client, {"contents": [user("call get_time")], "tools": tools})
    call = call_of(payload)
    assert call["name"] == "get_time"
    assert set(call["args"]) == {"zone"}


async def test_calling_modes(client: httpx.AsyncClient) -> None:
    tools = [{"functionDeclarations": [WEATHER, TIME]}]
    anyone = await generate(
        client,
        {
            "contents": [user("hello")],
            "tools": tools,
            "toolConfig": {
                "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_time"]}
            },
        },
    )
    assert call_of(anyone)["name"] == "get_time"
    none = await generate(
        client,
        {
            "contents": [user("hello")],
            "tools": tools,
            "toolConfig": {"functionCallingConfig": {"mode": "NONE"}},
        },
    )
    assert text_of(none)


async def test_text_after_a_function_response(client: httpx.AsyncClient) -> None:
    contents = [
        user("weather in Paris?"),
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {}}}]},
        {
            "role": "user",
            "parts": [{"functionResponse": {"name": "get_weather", "response": {"t": 21}}}],
        },
    ]
    payload = await generate(
        client, {"contents": contents, "tools": [{"functionDeclarations": [WEATHER]}]}
    )
    assert text_of(payload)
    assert "functionCall" not in json.dumps(payload)


# -- JSON mode -----------------------------------------------------------------------------


async def test_json_mode_follows_response_schema(client: httpx.AsyncClient) -> None:
    schema = {
        "type": "OBJECT",
        "properties": {
            "name": {"type": "STRING"},
            "age": {"type": "INTEGER"},
            "tags": {"type": "ARRAY", "items": {"type": "STRING"}, "minItems": 2},
            "kind": {"type": "STRING", "enum": ["a", "b"]},
        },
        "required": ["name"],
        "propertyOrdering": ["name", "age", "tags", "kind"],
    }
    payload = await generate(
        client,
        {
            "contents": [user("a person")],
            "generationConfig": {"responseMimeType": "application/json", "responseSchema": schema},
        },
        base=OLD,
    )
    value = json.loads(text_of(payload))
    assert list(value) == ["name", "age", "tags", "kind"]
    assert isinstance(value["name"], str)
    assert isinstance(value["age"], int)
    assert len(value["tags"]) == 2
    assert value["kind"] == "a"


async def test_json_mode_with_json_schema_and_without_schema(client: httpx.AsyncClient) -> None:
    json_schema = {
        "type": "object",
        "properties": {"items": {"type": "array", "items": {"$ref": "#/$defs/item"}}},
        "$defs": {"item": {"type": "object", "properties": {"ok": {"type": "boolean"}}}},
    }
    payload = await generate(
        client,
        {
            "contents": [user("list")],
            "generationConfig": {
                "responseMimeType": "application/json",
                "responseJsonSchema": json_schema,
            },
        },
        base=OLD,
    )
    assert json.loads(text_of(payload)) == {"items": [{"ok": True}]}
    free = await generate(
        client,
        {"contents": [user("x")], "generationConfig": {"responseMimeType": "application/json"}},
        base=OLD,
    )
    assert isinstance(json.loads(text_of(free)), dict)
    enum = await generate(
        client,
        {
            "contents": [user("pick")],
            "generationConfig": {
                "responseMimeType": "text/x.enum",
                "responseSchema": {"type": "STRING", "enum": ["red", "green"]},
            },
        },
        base=OLD,
    )
    assert text_of(enum) in ("red", "green")


# -- validation ----------------------------------------------------------------------------

GOOD = [user("hi")]
INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("no contents", {}, "contents is not specified"),
    ("empty contents", {"contents": []}, "contents is not specified"),
    ("bad role", {"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}, "valid role"),
    ("no parts", {"contents": [{"role": "user", "parts": []}]}, "parts must not be empty"),
    ("empty part", {"contents": [{"role": "user", "parts": [{}]}]}, "oneof field 'data'"),
    (
        "two data fields",
        {"contents": [{"parts": [{"text": "a", "fileData": {"fileUri": "gs://x"}}]}]},
        "already set",
    ),
    (
        "bad base64",
        {"contents": [{"parts": [{"inlineData": {"mimeType": "image/png", "data": "@@@"}}]}]},
        "Base64 decoding failed",
    ),
    (
        "system with an image",
        {
            "contents": GOOD,
            "systemInstruction": {"parts": [{"inlineData": {"mimeType": "image/png", "data": ""}}]},
        },
        "only text",
    ),
    ("unknown field", {"contents": GOOD, "temperature": 1}, 'Unknown name "temperature"'),
    (
        "unknown config field",
        {"contents": GOOD, "generationConfig": {"max_tokens": 5}},
        "Unknown name \"max_tokens\" at 'generation_config'",
    ),
    (
        "six stop sequences",
        {"contents": GOOD, "generationConfig": {"stopSequences": list("abcdef")}},
        "stop_sequences",
    ),
    (
        "temperature > 2",
        {"contents": GOOD, "generationConfig": {"temperature": 2.5}},
        "temperature",
    ),
    ("topP > 1", {"contents": GOOD, "generationConfig": {"topP": 1.5}}, "top_p"),
    ("nine candidates", {"contents": GOOD, "generationConfig": {"candidateCount": 9}}, "candidate"),
    (
        "schema without mime type",
        {"contents": GOOD, "generationConfig": {"responseSchema": {"type": "STRING"}}},
        "response_mime_type",
    ),
    (
        "both schemas",
        {
            "contents": GOOD,
            "generationConfig": {
                "responseMimeType": "application/json",
                "responseSchema": {"type": "STRING"},
                "responseJsonSchema": {"type": "string"},
            },
        },
        "mutually exclusive",
    ),
    (
        "bad mime type",
        {"contents": GOOD, "generationConfig": {"responseMimeType": "text/html"}},
        "allowed mimetypes",
    ),
    (
        "JSON Schema keyword in an OpenAPI schema",
        {
            "contents": GOOD,
            "tools": [
                {
                    "functionDeclarations": [
                        {"name": "f", "parameters": {"type": "OBJECT", "exclusiveMinimum": 1}}
                    ]
                }
            ],
        },
        'Unknown name "exclusiveMinimum"',
    ),
    (
        "bad function name",
        {"contents": GOOD, "tools": [{"functionDeclarations": [{"name": "no spaces"}]}]},
        "Invalid function name",
    ),
    (
        "bad calling mode",
        {"contents": GOOD, "toolConfig": {"functionCallingConfig": {"mode": "SOMETIMES"}}},
        "function_calling_config.mode",
    ),
]


@pytest.mark.parametrize(("body", "needle"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
async def test_invalid_requests_are_refused(
    client: httpx.AsyncClient, body: dict[str, Any], needle: str
) -> None:
    message = await refused(client, f"{FLASH}:generateContent", body)
    assert needle in message


async def test_thinking_config_only_on_thinking_models(client: httpx.AsyncClient) -> None:
    body = {"contents": GOOD, "generationConfig": {"thinkingConfig": {"thinkingBudget": 100}}}
    await refused(client, f"{OLD}:generateContent", body)
    await generate(client, body)


async def test_unknown_and_non_chat_models_are_not_found(client: httpx.AsyncClient) -> None:
    message = await refused(
        client, "/v1beta/models/gemini-9-ultra:generateContent", {"contents": GOOD}, 404
    )
    assert "models/gemini-9-ultra is not found" in message
    await refused(
        client, "/v1beta/models/text-embedding-004:generateContent", {"contents": GOOD}, 404
    )
    await refused(client, f"{FLASH}:embedContent", {"content": user("x")}, 404)


async def test_body_that_is_not_json(client: httpx.AsyncClient) -> None:
    response = await client.post(f"{FLASH}:generateContent", content=b"{nope")
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("Invalid JSON payload received")


# -- streaming -----------------------------------------------------------------------------


def sse_events(raw: str) -> list[dict[str, Any]]:
    events = [e for e in raw.replace("\r\n", "\n").split("\n\n") if e.strip()]
    assert all(e.startswith("data: ") for e in events), events
    return [json.loads(e[len("data: ") :]) for e in events]


async def test_sse_stream_is_incremental_cumulative_and_has_no_done(
    client: httpx.AsyncClient,
) -> None:
    body = {"contents": [user("stream a reply please")]}
    whole = await generate(client, body)
    response = await client.post(f"{FLASH}:streamGenerateContent?alt=sse", json=body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert "[DONE]" not in response.text
    assert response.text.endswith("\r\n\r\n")
    events = sse_events(response.text)
    for event in events:
        types.GenerateContentResponse.model_validate(event)
    assert len(events) >= 3
    streamed = "".join(
        p["text"] for e in events[:-1] for p in e["candidates"][0]["content"]["parts"]
    )
    assert streamed == text_of(whole)
    counts = [e["usageMetadata"]["candidatesTokenCount"] for e in events]
    assert counts == sorted(counts)
    assert counts[0] < counts[-1]
    assert all(e["usageMetadata"]["promptTokenCount"] > 0 for e in events)
    last = events[-1]
    assert last["candidates"] == [{"finishReason": "STOP", "index": 0}]
    assert last["usageMetadata"] == whole["usageMetadata"]
    assert all("finishReason" not in e["candidates"][0] for e in events[:-1])


async def test_sse_line_ending_is_configurable() -> None:
    app = create_app(GeminiEmulatorConfig(sse_newline="\n"), clock=ManualClock())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://g", headers=KEY) as c:
        response = await c.post(
            f"{FLASH}:streamGenerateContent?alt=sse", json={"contents": [user("lf please")]}
        )
    assert "\r" not in response.text
    assert len(sse_events(response.text)) >= 2


async def test_stream_without_alt_sse_is_a_json_array(client: httpx.AsyncClient) -> None:
    body = {"contents": [user("array please")]}
    response = await client.post(f"{FLASH}:streamGenerateContent", json=body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    chunks = json.loads(response.text)
    assert isinstance(chunks, list)
    assert len(chunks) >= 2
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"


async def test_stream_of_a_function_call_and_of_a_blocked_prompt(
    client: httpx.AsyncClient,
) -> None:
    body = {"contents": [user("weather")], "tools": [{"functionDeclarations": [WEATHER]}]}
    response = await client.post(f"{FLASH}:streamGenerateContent?alt=sse", json=body)
    events = sse_events(response.text)
    assert events[0]["candidates"][0]["content"]["parts"][0]["functionCall"]["name"] == (
        "get_weather"
    )
    blocked = await client.post(
        f"{FLASH}:streamGenerateContent?alt=sse", json={"contents": [user("[emulator:block]")]}
    )
    (only,) = sse_events(blocked.text)
    assert only["promptFeedback"]["blockReason"] == "SAFETY"


# -- other model methods -------------------------------------------------------------------


async def test_count_tokens_matches_generate_usage(client: httpx.AsyncClient) -> None:
    body = {"contents": [user("count these words please")]}
    usage = (await generate(client, body))["usageMetadata"]
    counted = await client.post(f"{FLASH}:countTokens", json=body)
    assert counted.json()["totalTokens"] == usage["promptTokenCount"]
    wrapped = await client.post(
        f"{FLASH}:countTokens",
        json={"generateContentRequest": {"model": "models/gemini-2.5-flash", **body}},
    )
    assert wrapped.json()["totalTokens"] == usage["promptTokenCount"]


async def test_embeddings(client: httpx.AsyncClient) -> None:
    base = "/v1beta/models/text-embedding-004"
    one = await client.post(f"{base}:embedContent", json={"content": {"parts": [{"text": "a"}]}})
    assert len(one.json()["embedding"]["values"]) == 768
    many = await client.post(
        f"{base}:batchEmbedContents",
        json={
            "requests": [
                {"model": "models/text-embedding-004", "content": {"parts": [{"text": "a"}]}},
                {"content": {"parts": [{"text": "b"}]}, "outputDimensionality": 8},
            ]
        },
    )
    first, second = many.json()["embeddings"]
    assert first == one.json()["embedding"]
    assert len(second["values"]) == 8


async def test_models_list_and_get(client: httpx.AsyncClient) -> None:
    listed = await client.get("/v1beta/models", params={"pageSize": 2})
    page = listed.json()
    assert [m["name"] for m in page["models"]] == [
        "models/gemini-2.5-flash",
        "models/gemini-2.5-pro",
    ]
    rest = await client.get("/v1beta/models", params={"pageToken": page["nextPageToken"]})
    assert "nextPageToken" not in rest.json()
    one = await client.get("/v1beta/models/gemini-2.5-pro")
    assert "generateContent" in one.json()["supportedGenerationMethods"]
    assert one.json()["thinking"] is True
    missing = await client.get("/v1beta/models/nope")
    assert missing.status_code == 404
