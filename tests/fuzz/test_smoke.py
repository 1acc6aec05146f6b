"""The fuzz tier's smoke, in the default suite so the tier cannot rot unseen: every
operation of costroute's own OpenAPI document, positive and negative, with a few
examples each (fixed seeds: the same cases every run, so CI is not flaky; the random
exploration is ``tests/fuzz/run.sh``'s), the document's validity as OpenAPI 3.1, and a
streamed chat completion checked against the document event by event.

Under CI a missing schemathesis or openapi-spec-validator fails here rather than skips
(``tests/fuzz/schema_cases.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from proxy.api.openapi.document import describe
from tests.fuzz.schema_cases import CHECKS, OPERATIONS, envelope, exercise, fuzzed_stack, require
from tests.hardening.stack import CLIENT_A, MESSAGES, HardStack

EXAMPLES = 3


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HardStack, Any]]:
    with fuzzed_stack(tmp_path_factory.mktemp("fuzz-smoke")) as pair:
        yield pair


@pytest.mark.parametrize("mode", ["positive", "negative"])
@pytest.mark.parametrize(("path", "method"), OPERATIONS)
def test_operation(fuzzed: tuple[HardStack, Any], path: str, method: str, mode: str) -> None:
    exercise(fuzzed, path, method, mode, examples=EXAMPLES, derandomize=True)


def test_the_description_is_valid_openapi_3_1(fuzzed: tuple[HardStack, Any]) -> None:
    validator = require("openapi_spec_validator")
    stack, _ = fuzzed
    validator.validate(describe(stack.proxy.app.routes))


@pytest.mark.parametrize("model", ["gpt-4o-mini", "deepseek-flash", "gemini-2.5-flash"])
def test_a_streamed_chat_completion_matches_the_document(
    fuzzed: tuple[HardStack, Any], model: str
) -> None:
    # The tier's intermittent failure: the document said each event of the
    # text/event-stream answer was a string; it is an SSE event (an object with `data`).
    stack, schema = fuzzed
    assert model in stack.settings.models
    case = schema["/v1/chat/completions"]["POST"].Case(
        body={"model": model, "messages": MESSAGES, "stream": True},
        media_type="application/json",
    )
    response = case.call(
        base_url=stack.url, headers={"authorization": f"Bearer {CLIENT_A}"}, timeout=30
    )
    envelope(response)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"][0].startswith("text/event-stream")
    assert response.text.rstrip().endswith("data: [DONE]")
    case.validate_response(response, checks=CHECKS)
