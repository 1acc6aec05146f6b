"""Gemini responses, usage, streams and errors -> OpenAI (gemini_translate_reply/_errors)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from google.genai import types
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from adapters.errors import RateLimited, UpstreamStatus, UpstreamUnreachable
from adapters.gemini.errors import is_cache_gone, is_too_small, status_error
from adapters.gemini.reply import StreamTranslator, parse_response, usage_of
from adapters.gemini.translate import build_request

USAGE = {
    "promptTokenCount": 1200,
    "cachedContentTokenCount": 1000,
    "candidatesTokenCount": 30,
    "thoughtsTokenCount": 12,
    "totalTokenCount": 1242,
}


def gemini(
    parts: list[dict[str, Any]], reason: str | None = "STOP", **extra: Any
) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if reason:
        candidate["finishReason"] = reason
    data = {
        "candidates": [candidate],
        "usageMetadata": USAGE,
        "modelVersion": "gemini-2.5-flash",
        "responseId": "resp1",
        **extra,
    }
    types.GenerateContentResponse.model_validate(data)  # the fixture is a real Gemini shape
    return data


def completion(data: dict[str, Any]) -> dict[str, Any]:
    reply = parse_response(data, model="gemini-2.5-flash", created=1_767_225_600)
    ChatCompletion.model_validate(reply)
    return reply


def test_text_reply_and_usage() -> None:
    reply = completion(
        gemini(
            [
                {"text": "Hello "},
                {"text": "there", "thought": False},
                {"text": "hmm", "thought": True},
            ]
        )
    )
    assert reply["id"] == "chatcmpl-resp1"
    assert reply["object"] == "chat.completion"
    assert reply["model"] == "gemini-2.5-flash"
    assert reply["choices"] == [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Hello there",
                "refusal": None,
                "annotations": [],
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert reply["usage"] == {
        "prompt_tokens": 1200,
        "completion_tokens": 42,  # thinking tokens are billed as output
        "total_tokens": 1242,
        "prompt_tokens_details": {"cached_tokens": 1000, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 12,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def test_usage_without_optional_counts() -> None:
    assert (
        usage_of({"promptTokenCount": 5, "candidatesTokenCount": 2})["prompt_tokens_details"][
            "cached_tokens"
        ]
        == 0
    )
    assert usage_of(None) is None


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("IMAGE_SAFETY", "content_filter"),
        ("LANGUAGE", "stop"),
        ("OTHER", "stop"),
        ("MALFORMED_FUNCTION_CALL", "stop"),
        ("FINISH_REASON_UNSPECIFIED", "stop"),
        ("UNEXPECTED_TOOL_CALL", "stop"),
        ("TOO_MANY_TOOL_CALLS", "stop"),
    ],
)
def test_every_finish_reason_maps_to_an_openai_value(reason: str, expected: str) -> None:
    reply = completion(gemini([{"text": "x"}], reason))
    assert reply["choices"][0]["finish_reason"] == expected


def test_function_calls_become_tool_calls_with_stable_ids() -> None:
    data = gemini(
        [
            {"text": "Let me check."},
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
            {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
            {"functionCall": {"id": "gem-7", "name": "get_time", "args": {}}},
        ]
    )
    first = completion(data)
    again = completion(data)
    message = first["choices"][0]["message"]
    assert first["choices"][0]["finish_reason"] == "tool_calls"
    assert message["content"] == "Let me check."
    calls = message["tool_calls"]
    assert [c["function"] for c in calls] == [
        {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        {"name": "get_weather", "arguments": '{"city":"Rome"}'},
        {"name": "get_time", "arguments": "{}"},
    ]
    ids = [c["id"] for c in calls]
    assert ids == [c["id"] for c in again["choices"][0]["message"]["tool_calls"]]
    assert len(set(ids)) == 3
    assert ids[0].startswith("call_")
    assert ids[2] == "gem-7"  # Gemini's own id wins


def test_tool_calls_round_trip_through_the_request_translation() -> None:
    reply = completion(gemini([{"functionCall": {"name": "lookup", "args": {"q": "x", "n": 2}}}]))
    message = reply["choices"][0]["message"]
    assert message["content"] is None
    call_id = message["tool_calls"][0]["id"]
    follow_up = build_request(
        {
            "model": "gemini-2.5-flash",
            "messages": [
                {"role": "user", "content": "find x"},
                message,
                {"role": "tool", "tool_call_id": call_id, "content": '{"hits": 3}'},
            ],
        }
    )
    assert follow_up.payload["contents"][1:] == [
        {
            "role": "model",
            "parts": [{"functionCall": {"name": "lookup", "args": {"q": "x", "n": 2}}}],
        },
        {
            "role": "user",
            "parts": [{"functionResponse": {"name": "lookup", "response": {"hits": 3}}}],
        },
    ]


def test_thought_signatures_round_trip_through_extra_content() -> None:
    reply = completion(
        gemini([{"functionCall": {"name": "lookup", "args": {}}, "thoughtSignature": "c2lnMQ=="}])
    )
    message = reply["choices"][0]["message"]
    call = message["tool_calls"][0]
    assert call["extra_content"] == {"google": {"thought_signature": "c2lnMQ=="}}
    follow_up = build_request(
        {
            "model": "gemini-3-flash",
            "messages": [
                {"role": "user", "content": "find"},
                message,
                {"role": "tool", "tool_call_id": call["id"], "content": "none"},
            ],
        }
    )
    assert follow_up.payload["contents"][1]["parts"] == [
        {"functionCall": {"name": "lookup", "args": {}}, "thoughtSignature": "c2lnMQ=="}
    ]


def test_several_candidates_become_choices() -> None:
    data = gemini([{"text": "a"}])
    data["candidates"].append(
        {
            "content": {"role": "model", "parts": [{"text": "b"}]},
            "finishReason": "MAX_TOKENS",
            "index": 1,
        }
    )
    reply = completion(data)
    assert [
        (c["index"], c["message"]["content"], c["finish_reason"]) for c in reply["choices"]
    ] == [
        (0, "a", "stop"),
        (1, "b", "length"),
    ]


def test_blocked_prompt_is_one_content_filter_choice() -> None:
    data = {
        "promptFeedback": {"blockReason": "SAFETY"},
        "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9},
    }
    reply = completion(data)
    assert reply["choices"][0]["finish_reason"] == "content_filter"
    assert reply["choices"][0]["message"]["content"] is None
    assert reply["usage"]["prompt_tokens"] == 9


# --- streaming -----------------------------------------------------------------------


def run_stream(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    translator = StreamTranslator(model="gemini-2.5-flash", created=1)
    out: list[dict[str, Any]] = []
    for chunk in chunks:
        types.GenerateContentResponse.model_validate(chunk)
        out.extend(translator.feed(chunk))
    out.extend(translator.finish())
    for chunk in out:
        ChatCompletionChunk.model_validate(chunk)
    return out


def test_stream_text_ends_with_finish_then_last_usage() -> None:
    chunks = [
        {
            "candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}, "index": 0}],
            "usageMetadata": {"promptTokenCount": 10, "totalTokenCount": 10},
            "responseId": "r9",
        },
        {"candidates": [{"content": {"role": "model", "parts": [{"text": "lo"}]}, "index": 0}]},
        {
            "candidates": [{"finishReason": "STOP", "index": 0}],
            "usageMetadata": {
                "promptTokenCount": 10,
                "candidatesTokenCount": 2,
                "thoughtsTokenCount": 3,
                "totalTokenCount": 15,
            },
        },
    ]
    out = run_stream(chunks)
    assert {c["id"] for c in out} == {"chatcmpl-r9"}
    assert [c["choices"][0]["delta"] if c["choices"] else None for c in out] == [
        {"role": "assistant", "content": ""},
        {"content": "Hel"},
        {"content": "lo"},
        {},
        None,
    ]
    assert out[3]["choices"][0]["finish_reason"] == "stop"
    assert out[-1]["choices"] == []
    assert out[-1]["usage"]["completion_tokens"] == 5
    assert out[-1]["usage"]["prompt_tokens"] == 10


def test_stream_tool_calls_are_indexed_deltas() -> None:
    chunks = [
        {
            "candidates": [
                {
                    "content": {
                        "role": "model",
                        "parts": [{"functionCall": {"name": "a", "args": {"x": 1}}}],
                    },
                    "index": 0,
                }
            ]
        },
        {
            "candidates": [
                {
                    "content": {
                        "role": "model",
                        "parts": [{"functionCall": {"name": "b", "args": {}}}],
                    },
                    "finishReason": "STOP",
                    "index": 0,
                }
            ],
            "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 4},
        },
    ]
    out = run_stream(chunks)
    deltas = [
        c["choices"][0]["delta"]
        for c in out
        if c["choices"] and "tool_calls" in c["choices"][0]["delta"]
    ]
    assert [d["tool_calls"][0]["index"] for d in deltas] == [0, 1]
    assert deltas[0]["tool_calls"][0]["function"] == {"name": "a", "arguments": '{"x":1}'}
    finish = [c for c in out if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finish[0]["choices"][0]["finish_reason"] == "tool_calls"


def test_stream_blocked_prompt() -> None:
    out = run_stream(
        [{"promptFeedback": {"blockReason": "OTHER"}, "usageMetadata": {"promptTokenCount": 4}}]
    )
    assert out[1]["choices"][0]["finish_reason"] == "content_filter"
    assert out[-1]["usage"]["prompt_tokens"] == 4


def test_stream_cut_before_finish_raises() -> None:
    translator = StreamTranslator(model="m", created=1)
    translator.feed({"candidates": [{"content": {"parts": [{"text": "partial"}]}, "index": 0}]})
    with pytest.raises(UpstreamUnreachable):
        translator.finish()
    with pytest.raises(UpstreamUnreachable):
        StreamTranslator(model="m", created=1).finish()


# --- errors --------------------------------------------------------------------------


def envelope(
    code: int, status: str, message: str = "boom", details: list[Any] | None = None
) -> bytes:
    return orjson.dumps(
        {"error": {"code": code, "message": message, "status": status, "details": details or []}}
    )


@pytest.mark.parametrize(
    ("code", "status", "error_type"),
    [
        (400, "INVALID_ARGUMENT", "invalid_request_error"),
        (400, "FAILED_PRECONDITION", "invalid_request_error"),
        (403, "PERMISSION_DENIED", "permission_error"),
        (404, "NOT_FOUND", "invalid_request_error"),
        (429, "RESOURCE_EXHAUSTED", "rate_limit_exceeded"),
        (500, "INTERNAL", "server_error"),
        (503, "UNAVAILABLE", "server_error"),
        (504, "DEADLINE_EXCEEDED", "server_error"),
    ],
)
def test_error_envelopes_keep_their_status(code: int, status: str, error_type: str) -> None:
    error = status_error(code, envelope(code, status, "It broke."), {})
    assert error.status == code
    assert error.error_object() == {
        "message": "It broke.",
        "type": error_type,
        "param": None,
        "code": status.lower(),
    }
    assert isinstance(error, RateLimited) == (code == 429)
    assert error.retryable == (code == 429 or code >= 500)


def test_retry_info_becomes_retry_after() -> None:
    details = [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37.5s"},
    ]
    error = status_error(429, envelope(429, "RESOURCE_EXHAUSTED", details=details), {})
    assert error.retry_after == 37.5


def test_retry_after_header_is_the_fallback() -> None:
    assert status_error(503, envelope(503, "UNAVAILABLE"), {"Retry-After": "4"}).retry_after == 4.0


def test_unparseable_error_body() -> None:
    error = status_error(502, b"<html>bad gateway</html>", {})
    assert error.status == 502
    assert "502" in error.message


def test_in_stream_error_takes_status_from_the_envelope() -> None:
    error = status_error(
        None, {"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}, {}
    )
    assert error.status == 503
    only_rpc = status_error(
        None, {"error": {"message": "slow down", "status": "RESOURCE_EXHAUSTED"}}, {}
    )
    assert isinstance(only_rpc, RateLimited)


@pytest.mark.parametrize(
    ("status", "message", "gone"),
    [
        (404, "CachedContent not found: cachedContents/x", True),
        (403, "CachedContent not found (or permission denied)", True),
        (400, "Cache content cachedContents/x is expired.", True),
        (
            400,
            "CachedContent can not be used with GenerateContent request setting system_instruction",
            False,
        ),
        (429, "quota", False),
        (503, "overloaded", False),
    ],
)
def test_cache_gone_classification(status: int, message: str, gone: bool) -> None:
    assert is_cache_gone(UpstreamStatus(status, {"message": message})) is gone


def test_too_small_classification() -> None:
    message = "Cached content is too small. total_token_count=896, min_total_token_count=1024"
    small = UpstreamStatus(400, {"message": message})
    assert is_too_small(small)
    assert not is_too_small(UpstreamStatus(400, {"message": "other"}))
