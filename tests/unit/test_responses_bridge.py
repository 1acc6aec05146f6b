"""The Responses <-> chat bridge, row by row: requests to chat bodies, completions to
response objects (strictly against the SDK's types), chat chunks to the event sequence."""

from __future__ import annotations

from typing import Any

import pytest
from openai.types.responses import Response

from adapters import responses_bridge as bridge
from adapters.errors import Unsupported
from tests.sdk_checks import strict

TOOL = {"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": True}


def test_instructions_input_and_knobs_become_a_chat_body() -> None:
    chat = bridge.to_chat(
        {
            "model": "m",
            "instructions": "Be brief.",
            "input": "hi",
            "max_output_tokens": 64,
            "temperature": 0.2,
            "top_p": 0.9,
            "reasoning": {"effort": "low"},
            "store": True,
            "metadata": {"a": "b"},
        },
        provider="gemini",
    )
    assert chat == {
        "model": "m",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        "max_tokens": 64,
        "reasoning_effort": "low",
        "temperature": 0.2,
        "top_p": 0.9,
    }


def test_items_images_history_and_function_calls() -> None:
    chat = bridge.to_chat(
        {
            "model": "m",
            "input": [
                {"role": "user", "content": [
                    {"type": "input_text", "text": "What is this?"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AA",
                     "detail": "low"},
                ]},
                {"type": "message", "role": "assistant",
                 "content": [{"type": "output_text", "text": "A cat."}]},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call", "call_id": "c2", "name": "f", "arguments": "{\"x\":1}"},
                {"type": "function_call_output", "call_id": "c1", "output": "one"},
                {"type": "reasoning", "id": "rs_1", "summary": []},
            ],
            "tools": [TOOL],
            "tool_choice": {"type": "function", "name": "f"},
            "text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"},
                                "strict": True}},
        },
        provider="gemini",
    )  # fmt: skip
    messages = chat["messages"]
    assert messages[0]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,AA", "detail": "low"},
    }
    assert messages[1] == {"role": "assistant", "content": "A cat."}
    assert [c["id"] for c in messages[2]["tool_calls"]] == ["c1", "c2"]  # merged into one turn
    assert messages[3] == {"role": "tool", "tool_call_id": "c1", "content": "one"}
    assert len(messages) == 4  # the reasoning item says nothing to a chat provider
    assert chat["tools"] == [
        {"type": "function",
         "function": {"name": "f", "parameters": {"type": "object"}, "strict": True}}
    ]  # fmt: skip
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": True},
    }


@pytest.mark.parametrize(
    ("request_fields", "param"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"background": True}, "background"),
        ({"prompt": {"id": "p"}}, "prompt"),
        ({"tools": [{"type": "web_search"}]}, "tools[0]"),
        ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
         "input[0].content[0]"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
        ({"frobnicate": 1}, "frobnicate"),
    ],
)  # fmt: skip
def test_what_cannot_be_bridged_names_its_field(request_fields: dict[str, Any], param: str) -> None:
    with pytest.raises(Unsupported) as refused:
        bridge.to_chat({"model": "m", "input": "hi", **request_fields}, provider="deepseek")
    assert refused.value.param == param


COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "m-001",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Hello",
                "tool_calls": [{"id": "call_1", "type": "function",
                                "function": {"name": "f", "arguments": "{}"}}],
            },
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
              "prompt_tokens_details": {"cached_tokens": 4}},
}  # fmt: skip


def test_a_completion_becomes_a_strict_response() -> None:
    response = strict(
        Response,
        bridge.to_response(COMPLETION, {"model": "m", "tools": [TOOL]}, response_id="resp_x"),
    )
    assert response.id == "resp_x"
    assert [item.type for item in response.output] == ["function_call", "message"]
    assert response.output_text == "Hello"
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (10, 5)
    assert response.usage.input_tokens_details.cached_tokens == 4
    cut = {**COMPLETION, "choices": [{**COMPLETION["choices"][0], "finish_reason": "length"}]}
    incomplete = strict(Response, bridge.to_response(cut, {"model": "m"}, response_id="r"))
    assert incomplete.status == "incomplete"
    assert incomplete.incomplete_details is not None


def test_chunks_become_the_event_sequence() -> None:
    stream = bridge.StreamBridge({"model": "m"}, response_id="resp_s", created=1)
    chunks = [
        {"model": "m-1",
         "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}]},
        {"choices": [{"index": 0, "delta": {"content": "lo"}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "call_1", "function": {"name": "f", "arguments": "{\"a\""}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": ":1}"}}]}, "finish_reason": "tool_calls"}]},
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}},
    ]  # fmt: skip
    events = list(stream.start())
    for chunk in chunks:
        events += list(stream.feed(chunk))
    events += list(stream.finish())
    types = [e["type"] for e in events]
    assert types == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    final = strict(Response, events[-1]["response"])
    assert final.output_text == "Hello"
    call = final.output[1]
    assert call.type == "function_call"
    assert call.arguments == '{"a":1}'
    assert final.usage is not None
    assert final.usage.total_tokens == 5
    assert final.model == "m-1"
