"""schemathesis against costroute's own OpenAPI description, on the hardening stack
(the proxy in front of the OpenAI, DeepSeek and Gemini emulators): for every operation,
positive and negative cases, with a valid, an admin, a wrong or no key. Every answer
must be documented (status, content type, schema), no answer may be a 500, and every
error is exactly the OpenAI envelope.

Run by ``tests/fuzz/run.sh``; ``FUZZ_EXAMPLES`` sets the examples per operation and
mode (default 100). A few examples of each run in the default suite (``test_smoke.py``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from proxy.api.openapi.document import describe
from tests.fuzz.schema_cases import OPERATIONS, exercise, fuzzed_stack, require
from tests.hardening.stack import HardStack

pytestmark = pytest.mark.fuzz

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "100"))


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HardStack, Any]]:
    with fuzzed_stack(tmp_path_factory.mktemp("fuzz")) as pair:
        yield pair


@pytest.mark.parametrize("mode", ["positive", "negative"])
@pytest.mark.parametrize(("path", "method"), OPERATIONS)
def test_operation(fuzzed: tuple[HardStack, Any], path: str, method: str, mode: str) -> None:
    exercise(fuzzed, path, method, mode, examples=EXAMPLES)


def test_the_description_is_valid_openapi_3_1(fuzzed: tuple[HardStack, Any]) -> None:
    validator = require("openapi_spec_validator")
    stack, _ = fuzzed
    validator.validate(describe(stack.proxy.app.routes))
