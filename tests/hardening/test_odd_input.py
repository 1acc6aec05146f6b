"""Odd but well-formed caller input, for every provider: optional fields holding any JSON
value, in chat (plain and streamed) and embeddings. The proxy may refuse (an OpenAI
envelope, 4xx) or pass the request on, but never answers 500. The full schemathesis
and hypothesis runs are in tests/fuzz; this is their fast, always-on slice."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.hardening.stack import CLIENT_A, MESSAGES, HardStack

MODELS = ("gpt-4o-mini", "deepseek-flash", "gemini-2.5-flash")
FIELDS = ("temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "n", "seed",
          "tools", "tool_choice", "response_format", "logprobs", "user", "metadata",
          "stream_options", "presence_penalty", "modalities", "prediction")  # fmt: skip
VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**31), 2**31),
        st.floats(-1e6, 1e6, allow_nan=False),
        st.text(max_size=8),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def _check(response: httpx.Response) -> None:
    assert response.status_code != 500, response.text
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"}
        assert set(body["error"]) == {"message", "type", "param", "code"}


@settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    model=st.sampled_from(MODELS),
    extra=st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=3),
    stream=st.booleans(),
)
def test_optional_fields_of_any_value_never_make_a_500(
    fresh: HardStack, model: str, extra: dict[str, Any], stream: bool
) -> None:
    body = {"model": model, "messages": MESSAGES, **extra, "stream": stream}
    with fresh.http(CLIENT_A) as client:
        _check(client.post("/v1/chat/completions", json=body))


EFFORTS = [
    pytest.param(m, v, id=f"{m}-{v!r}")
    for m in MODELS
    for v in ([], {}, ["low"], 3, "extreme", "low")
]


@pytest.mark.parametrize(("model", "value"), EFFORTS)
def test_reasoning_effort_of_any_value(fresh: HardStack, model: str, value: Any) -> None:
    body = {"model": model, "messages": MESSAGES, "reasoning_effort": value}
    with fresh.http(CLIENT_A) as client:
        _check(client.post("/v1/chat/completions", json=body))


@pytest.mark.parametrize(
    "body",
    [
        {"model": "text-embedding-3-small", "input": [[1, 2], [3]]},
        {"model": "text-embedding-3-small", "input": ["a"], "dimensions": 10**9},
        {"model": "text-embedding-3-small", "input": "a", "encoding_format": "base64"},
        {"model": "gpt-4o-mini", "input": "a"},
        {"model": "gemini-2.5-flash", "input": "a"},
        {"model": "deepseek-flash", "input": "a"},
    ],
)
def test_embeddings_of_odd_shapes_never_make_a_500(fresh: HardStack, body: dict[str, Any]) -> None:
    with fresh.http(CLIENT_A) as client:
        _check(client.post("/v1/embeddings", json=body))
