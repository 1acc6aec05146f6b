"""Gemini failures end to end: Google's error envelope becomes the OpenAI one with the
status that makes the official SDK raise the matching class; retries follow the proxy's
policy; what Gemini cannot express is a 400 that says what, and never leaves the proxy."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.gemini_stack import FLASH, GEMINI_KEY, GeminiStack, assert_wire, running

MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def gemini(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GeminiStack]:
    with running(tmp_path_factory.mktemp("gemini-errors")) as stack:
        yield stack


@pytest.fixture
def gem(gemini: GeminiStack) -> Iterator[GeminiStack]:
    gemini.reset()
    yield gemini
    assert_wire(gemini, GEMINI_KEY)
    gemini.state.faults.clear()


def _envelope(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    return error


def test_resource_exhausted_is_a_rate_limit_error_with_retry_after(gem: GeminiStack) -> None:
    # Google's RetryInfo says 30 s, beyond the proxy's max_retry_after (2 s): no retry,
    # the caller is told when to come back.
    gem.state.faults.add(status=429, times=-1)
    with pytest.raises(openai.RateLimitError) as info:
        gem.client().chat.completions.create(model=FLASH, messages=MESSAGES)
    assert info.value.response.headers["retry-after"] == "30"
    assert info.value.response.headers["retry-after-ms"] == "30000"
    assert info.value.code == "resource_exhausted"
    assert len(gem.generations()) == 1
    [row] = gem.new_routes(1)
    assert (row["provider"], row["status"], row["error_code"], row["attempts"]) == (
        "gemini",
        429,
        "resource_exhausted",
        1,
    )


def test_short_resource_exhausted_is_retried_after_its_delay(gem: GeminiStack) -> None:
    gem.state.faults.add(status=429, retry_after=0.05)
    completion = gem.client().chat.completions.create(model=FLASH, messages=MESSAGES)
    assert completion.choices[0].message.content
    assert len(gem.generations()) == 2
    assert gem.new_routes(1)[-1]["attempts"] == 2


@pytest.mark.parametrize(
    ("status", "raised", "code"),
    [
        (400, openai.BadRequestError, "invalid_argument"),
        (403, openai.PermissionDeniedError, "permission_denied"),
        (404, openai.NotFoundError, "not_found"),
    ],
)
def test_client_errors_map_to_the_sdk_class_and_are_not_retried(
    gem: GeminiStack, status: int, raised: type[openai.APIStatusError], code: str
) -> None:
    gem.state.faults.add(status=status)
    with pytest.raises(raised) as info:
        gem.client().chat.completions.create(model=FLASH, messages=MESSAGES)
    assert info.value.status_code == status
    assert info.value.code == code
    assert info.value.message  # Google's own message is passed on
    assert len(gem.generations()) == 1
    assert gem.new_routes(1)[-1]["status"] == status


def test_unavailable_after_the_retries_is_an_internal_server_error(gem: GeminiStack) -> None:
    gem.state.faults.add(status=503, times=-1)
    with pytest.raises(openai.InternalServerError) as info:
        gem.client().chat.completions.create(model=FLASH, messages=MESSAGES)
    assert info.value.status_code == 503
    assert info.value.code == "unavailable"
    assert len(gem.generations()) == 3  # first try + max_retries
    assert gem.new_routes(1)[-1]["attempts"] == 3


def test_transient_failures_are_retried_to_success(gem: GeminiStack) -> None:
    gem.state.faults.add(status=500)
    gem.state.faults.add(drop=True)
    completion = gem.client().chat.completions.create(model=FLASH, messages=MESSAGES)
    assert completion.choices[0].message.content
    assert len(gem.generations()) == 3
    assert gem.new_routes(1)[-1]["attempts"] == 3


def test_stream_errors_before_and_after_the_first_byte(gem: GeminiStack) -> None:
    gem.state.faults.add(status=429, times=-1)
    with pytest.raises(openai.RateLimitError):
        list(gem.client().chat.completions.create(model=FLASH, messages=MESSAGES, stream=True))
    gem.state.faults.clear()

    # Google reports a failure mid-stream as an in-band error event; the caller gets an
    # error event too (the SDK raises) instead of a stream that just stops.
    gem.state.faults.add(status=503, error_after_events=1)
    with pytest.raises(openai.APIError) as info:
        list(gem.client().chat.completions.create(model=FLASH, messages=MESSAGES, stream=True))
    assert "overloaded" in info.value.message
    gem.state.faults.add(drop_after_events=1)
    with pytest.raises(openai.APIError):
        list(gem.client().chat.completions.create(model=FLASH, messages=MESSAGES, stream=True))
    rows = gem.new_routes(3)
    assert [(r["stream"], r["status"]) for r in rows] == [(1, 429), (1, 503), (1, 502)]


UNSUPPORTED: list[tuple[dict[str, Any], str, str]] = [
    ({"logit_bias": {"50256": -100}}, "logit_bias", "logit_bias"),
    (
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
                    ],
                }
            ]
        },
        "messages[0].content[0].image_url.url",
        "data: URL",
    ),
    (
        {"tools": [{"type": "custom", "custom": {"name": "grep"}}]},
        "tools[0].type",
        "function tools only",
    ),
    (
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "tool", "tool_call_id": "call_unknown", "content": "42"},
            ]
        },
        "messages[1].tool_call_id",
        "function name",
    ),
    ({"reasoning_effort": "maximal"}, "reasoning_effort", "thinking budget"),
    ({"modalities": ["text", "audio"]}, "modalities", "text output only"),
    (
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "tree",
                    "schema": {
                        "$defs": {
                            "node": {
                                "type": "object",
                                "properties": {
                                    "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}
                                },
                            }
                        },
                        "$ref": "#/$defs/node",
                    },
                },
            }
        },
        "response_format.json_schema.schema",
        "recursive",
    ),
]


@pytest.mark.parametrize(("extra", "param", "says"), UNSUPPORTED)
def test_what_gemini_cannot_express_is_a_400_saying_what(
    gem: GeminiStack, extra: dict[str, Any], param: str, says: str
) -> None:
    body = {"model": FLASH, "messages": MESSAGES, **extra}
    with gem.http() as http:
        response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    error = _envelope(response)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert says.lower() in error["message"].lower()
    assert gem.sent() == []  # refused before anything went upstream
    with pytest.raises(openai.BadRequestError) as info:
        gem.client().chat.completions.create(**body)
    assert info.value.param == param
    assert gem.new_routes(2)[-1]["status"] == 400


def test_a_malformed_cache_header_is_a_400(gem: GeminiStack) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        gem.client().chat.completions.create(
            model=FLASH, messages=MESSAGES, extra_headers={"X-Context-Cache": "always"}
        )
    assert info.value.param == "X-Context-Cache"
    assert gem.sent() == []


def test_embedding_token_arrays_cannot_be_expressed(gem: GeminiStack) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        gem.client().embeddings.create(model="text-embedding-004", input=[[1, 2, 3]])
    assert info.value.param == "input"
    assert "token arrays" in info.value.message
    assert gem.sent() == []
