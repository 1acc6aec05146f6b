"""OpenAI chat request -> Gemini generateContent body (adapters.gemini.translate)."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from google.genai import types

from adapters.errors import Unsupported
from adapters.gemini.schema import convert_schema
from adapters.gemini.translate import build_request

PNG = base64.b64encode(b"\x89PNG fake image bytes").decode()

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": ["string", "null"], "enum": ["c", "f", None]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}


def validate_gemini(payload: dict[str, Any]) -> None:
    """The body must parse as google-genai's own (extra='forbid') request types."""
    for turn in payload["contents"]:
        types.Content.model_validate(turn)
    if "systemInstruction" in payload:
        types.Content.model_validate(payload["systemInstruction"])
    for tool in payload.get("tools", []):
        types.Tool.model_validate(tool)
    if "toolConfig" in payload:
        types.ToolConfig.model_validate(payload["toolConfig"])
    if "generationConfig" in payload:
        types.GenerationConfig.model_validate(payload["generationConfig"])


def build(**body: Any) -> dict[str, Any]:
    body.setdefault("model", "gemini-2.5-flash")
    call = build_request(body)
    validate_gemini(call.payload)
    return call.payload


def test_model_prefix_is_stripped() -> None:
    call = build_request(
        {"model": "models/gemini-2.5-pro", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert call.model == "gemini-2.5-pro"


def test_system_and_developer_go_to_system_instruction_in_order() -> None:
    payload = build(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
            {"role": "user", "content": "Hello"},
        ]
    )
    assert payload["systemInstruction"] == {
        "parts": [{"text": "Be brief."}, {"text": "Use French."}]
    }
    assert payload["contents"] == [{"role": "user", "parts": [{"text": "Hello"}]}]


def test_consecutive_turns_merge_and_roles_map() -> None:
    payload = build(
        messages=[
            {"role": "user", "content": "one"},
            {"role": "user", "content": [{"type": "text", "text": "two"}]},
            {"role": "assistant", "content": "three"},
            {"role": "assistant", "content": "four"},
            {"role": "user", "content": "five"},
        ]
    )
    assert payload["contents"] == [
        {"role": "user", "parts": [{"text": "one"}, {"text": "two"}]},
        {"role": "model", "parts": [{"text": "three"}, {"text": "four"}]},
        {"role": "user", "parts": [{"text": "five"}]},
    ]


def test_empty_texts_are_dropped_and_empty_turns_vanish() -> None:
    payload = build(
        messages=[
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": ""},
            {"role": "user", "content": "b"},
        ]
    )
    assert payload["contents"] == [{"role": "user", "parts": [{"text": "a"}, {"text": "b"}]}]


def test_system_only_is_rejected() -> None:
    with pytest.raises(Unsupported, match="at least one user or assistant"):
        build_request({"model": "m", "messages": [{"role": "system", "content": "x"}]})


def test_image_data_url_becomes_inline_data() -> None:
    payload = build(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "low"},
                    },
                ],
            }
        ]
    )
    assert payload["contents"][0]["parts"] == [
        {"text": "What is this?"},
        {"inlineData": {"mimeType": "image/png", "data": PNG}},
    ]


def test_non_base64_data_url_is_encoded() -> None:
    payload = build(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "file", "file": {"file_data": "data:text/plain,hello%20there"}}
                ],
            }
        ]
    )
    blob = payload["contents"][0]["parts"][0]["inlineData"]
    assert blob["mimeType"] == "text/plain"
    assert base64.b64decode(blob["data"]) == b"hello there"


def test_audio_becomes_inline_data() -> None:
    payload = build(
        messages=[
            {
                "role": "user",
                "content": [{"type": "input_audio", "input_audio": {"data": PNG, "format": "mp3"}}],
            }
        ]
    )
    assert payload["contents"][0]["parts"] == [
        {"inlineData": {"mimeType": "audio/mp3", "data": PNG}}
    ]


@pytest.mark.parametrize(
    ("part", "param"),
    [
        (
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            "messages[0].content[0].image_url.url",
        ),
        ({"type": "file", "file": {"file_id": "file-abc"}}, "messages[0].content[0]"),
        (
            {"type": "input_audio", "input_audio": {"data": "x", "format": "flac"}},
            "messages[0].content[0]",
        ),
    ],
)
def test_unreachable_media_is_a_400_naming_the_part(part: dict[str, Any], param: str) -> None:
    with pytest.raises(Unsupported) as caught:
        build_request({"model": "m", "messages": [{"role": "user", "content": [part]}]})
    assert caught.value.status == 400
    assert caught.value.param == param


def test_image_in_system_message_is_rejected() -> None:
    with pytest.raises(Unsupported, match="system instruction"):
        build_request(
            {
                "model": "m",
                "messages": [
                    {
                        "role": "system",
                        "content": [
                            {
                                "type": "image_url",
                                "image_url": {"url": "data:image/png;base64,AA=="},
                            }
                        ],
                    },
                    {"role": "user", "content": "x"},
                ],
            }
        )


def test_tools_and_tool_loop_translate() -> None:
    payload = build(
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {
                            "name": "get_weather",
                            "arguments": '{"city":"Paris","unit":"c"}',
                        },
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": ""},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
            {"role": "tool", "tool_call_id": "call_2", "content": "noon"},
        ],
        tools=[
            WEATHER_TOOL,
            {
                "type": "function",
                "function": {
                    "name": "get_time",
                    "parameters": {"type": "object", "properties": {}},
                },
            },
        ],
        tool_choice="auto",
    )
    assert payload["contents"][1] == {
        "role": "model",
        "parts": [
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris", "unit": "c"}}},
            {"functionCall": {"name": "get_time", "args": {}}},
        ],
    }
    assert payload["contents"][2] == {
        "role": "user",
        "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
            {"functionResponse": {"name": "get_time", "response": {"content": "noon"}}},
        ],
    }
    declarations = payload["tools"][0]["functionDeclarations"]
    assert declarations[0]["name"] == "get_weather"
    assert declarations[0]["description"] == "Weather for a city"
    assert declarations[0]["parameters"] == {
        "type": "OBJECT",
        "properties": {
            "city": {"type": "STRING"},
            "unit": {"type": "STRING", "nullable": True, "enum": ["c", "f"]},
        },
        "propertyOrdering": ["city", "unit"],
        "required": ["city", "unit"],
    }
    # A function without arguments has no parameters (Gemini rejects empty OBJECTs).
    assert declarations[1] == {"name": "get_time"}
    assert payload["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        ("none", {"mode": "NONE"}),
        ("auto", {"mode": "AUTO"}),
        ("required", {"mode": "ANY"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"mode": "ANY", "allowedFunctionNames": ["get_weather"]},
        ),
        (
            {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "required",
                    "tools": [{"type": "function", "function": {"name": "get_weather"}}],
                },
            },
            {"mode": "ANY", "allowedFunctionNames": ["get_weather"]},
        ),
    ],
)
def test_tool_choice(choice: Any, config: dict[str, Any]) -> None:
    payload = build(
        messages=[{"role": "user", "content": "x"}], tools=[WEATHER_TOOL], tool_choice=choice
    )
    assert payload["toolConfig"] == {"functionCallingConfig": config}


def test_tool_message_without_a_matching_call_is_a_400() -> None:
    with pytest.raises(Unsupported) as caught:
        build_request(
            {
                "model": "m",
                "messages": [
                    {"role": "user", "content": "x"},
                    {"role": "tool", "tool_call_id": "nope", "content": "1"},
                ],
            }
        )
    assert caught.value.param == "messages[1].tool_call_id"


def test_bad_tool_arguments_are_a_400() -> None:
    with pytest.raises(Unsupported) as caught:
        build_request(
            {
                "model": "m",
                "messages": [
                    {"role": "user", "content": "x"},
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "id": "c",
                                "type": "function",
                                "function": {"name": "f", "arguments": "{oops"},
                            }
                        ],
                    },
                ],
            }
        )
    assert caught.value.param == "messages[1].tool_calls[0].function.arguments"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0].type"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"logit_bias": {"1": 2}}, "logit_bias"),
        ({"logprobs": True}, "logprobs"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
        ({"response_format": {"type": "yaml"}}, "response_format"),
        ({"web_search_options": {"search_context_size": "low"}}, "web_search_options"),
    ],
)
def test_inexpressible_fields_are_400s_naming_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(Unsupported) as caught:
        build_request({"model": "m", "messages": [{"role": "user", "content": "x"}], **body})
    assert caught.value.status == 400
    assert caught.value.param == param
    assert caught.value.error_object()["type"] == "invalid_request_error"


def test_generation_config_mapping() -> None:
    payload = build(
        messages=[{"role": "user", "content": "x"}],
        temperature=0.3,
        top_p=0.9,
        max_tokens=50,
        max_completion_tokens=70,
        stop="END",
        n=2,
        seed=7,
        presence_penalty=0.1,
        frequency_penalty=0.2,
        reasoning_effort="low",
        stream=True,
        stream_options={"include_usage": True},
        user="someone",
        parallel_tool_calls=False,
    )
    assert payload["generationConfig"] == {
        "temperature": 0.3,
        "topP": 0.9,
        "seed": 7,
        "presencePenalty": 0.1,
        "frequencyPenalty": 0.2,
        "maxOutputTokens": 70,  # max_completion_tokens wins over the deprecated max_tokens
        "stopSequences": ["END"],
        "candidateCount": 2,
        "thinkingConfig": {"thinkingBudget": 1024},
    }


def test_max_tokens_alone_and_stop_list() -> None:
    payload = build(messages=[{"role": "user", "content": "x"}], max_tokens=12, stop=["a", "b"])
    assert payload["generationConfig"] == {"maxOutputTokens": 12, "stopSequences": ["a", "b"]}


def test_response_format_json_object() -> None:
    payload = build(
        messages=[{"role": "user", "content": "x"}], response_format={"type": "json_object"}
    )
    assert payload["generationConfig"] == {"responseMimeType": "application/json"}


def test_response_format_json_schema_with_refs_and_nullable() -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "who"},
            "tags": {"type": "array", "items": {"$ref": "#/$defs/Tag"}},
            "kind": {"const": "person"},
            "age": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
        },
        "required": ["name", "tags", "kind", "age"],
        "additionalProperties": False,
        "$defs": {
            "Tag": {
                "type": "object",
                "properties": {"label": {"type": "string"}},
                "required": ["label"],
            }
        },
        "$schema": "https://json-schema.org/draft/2020-12/schema",
    }
    payload = build(
        messages=[{"role": "user", "content": "x"}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "strict": True, "schema": schema},
        },
    )
    config = payload["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    converted = config["responseSchema"]
    types.Schema.model_validate(converted)
    assert converted == {
        "type": "OBJECT",
        "properties": {
            "name": {"type": "STRING", "description": "who"},
            "tags": {
                "type": "ARRAY",
                "items": {
                    "type": "OBJECT",
                    "properties": {"label": {"type": "STRING"}},
                    "propertyOrdering": ["label"],
                    "required": ["label"],
                },
            },
            "kind": {"type": "STRING", "enum": ["person"]},
            "age": {"type": "INTEGER", "nullable": True},
        },
        "propertyOrdering": ["name", "tags", "kind", "age"],
        "required": ["name", "tags", "kind", "age"],
    }


def test_recursive_schema_is_a_400() -> None:
    schema = {
        "type": "object",
        "properties": {"child": {"$ref": "#/$defs/Node"}},
        "$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}},
    }
    with pytest.raises(Unsupported, match="recursive"):
        convert_schema(schema, param="response_format.json_schema.schema")


def test_multi_type_node_is_a_400() -> None:
    with pytest.raises(Unsupported, match="one type"):
        convert_schema({"type": ["string", "integer"]}, param="p")


def test_non_string_enum_moves_to_the_description() -> None:
    converted = convert_schema(
        {"type": "integer", "enum": [1, 2], "description": "Level."}, param="p"
    )
    assert converted == {"type": "INTEGER", "description": "Level. Allowed values: 1, 2."}
    types.Schema.model_validate(converted)


def test_any_of_keeps_alternatives() -> None:
    converted = convert_schema(
        {"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]}, param="p"
    )
    assert converted == {"nullable": True, "anyOf": [{"type": "STRING"}, {"type": "INTEGER"}]}
    types.Schema.model_validate(converted)
