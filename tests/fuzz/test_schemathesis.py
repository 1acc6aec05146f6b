"""schemathesis against costroute's own OpenAPI description, on the hardening stack
(the proxy in front of the OpenAI, DeepSeek and Gemini emulators): for every operation,
positive and negative cases, with a valid, an admin, a wrong or no key. Every answer
must be documented (status, content type, schema), no answer may be a 500, and every
error is exactly the OpenAI envelope.

Run by ``tests/fuzz/run.sh`` (schemathesis lives in its own virtualenv there);
``FUZZ_EXAMPLES`` sets the examples per operation and mode (default 100).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

from proxy.api.openapi.document import describe
from proxy.app import _routes
from tests.hardening.stack import ADMIN, CLIENT_A, HardStack, hard_stack

schemathesis = pytest.importorskip("schemathesis")

from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.fuzz

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "100"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
KEYS = st.sampled_from([CLIENT_A, CLIENT_A, CLIENT_A, ADMIN, "sk-wrong", None])
OPERATIONS = sorted((p, m) for p, item in describe(_routes())["paths"].items() for m in item)


def _steer(doc: dict[str, Any], stack: HardStack) -> dict[str, Any]:
    """Name configured models in the schemas (a random model name only ever meets the
    400 for unknown models), so positive cases reach the planner, the queue and the
    emulators."""
    doc = copy.deepcopy(doc)
    schemas = doc["components"]["schemas"]
    chat = [n for n, m in stack.settings.models.items() if m.kind == "chat"]
    embed = [n for n, m in stack.settings.models.items() if m.kind == "embedding"]
    schemas["ChatRequest"]["properties"]["model"] = {"enum": chat}
    schemas["EmbeddingsRequest"]["properties"]["model"] = {"enum": embed}
    # A tool message must answer an earlier tool call, which a schema cannot say; the
    # negative mode and the hypothesis properties cover those roles.
    schemas["Message"]["properties"]["role"] = {
        "enum": ["system", "developer", "user", "assistant"]
    }
    return doc


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HardStack, Any]]:
    with hard_stack(tmp_path_factory.mktemp("fuzz")) as stack:
        doc = _steer(describe(stack.proxy.app.routes), stack)
        yield stack, schemathesis.openapi.from_dict(doc)


def _envelope(response: Any) -> None:
    if response.status_code < 400:
        return
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]


@pytest.mark.parametrize("mode", ["positive", "negative"])
@pytest.mark.parametrize(("path", "method"), OPERATIONS)
def test_operation(fuzzed: tuple[HardStack, Any], path: str, method: str, mode: str) -> None:
    stack, schema = fuzzed
    if path == "/openapi.json" and not any(
        getattr(r, "path", None) == "/openapi.json" for r in stack.proxy.app.routes
    ):
        pytest.skip("the app does not route /openapi.json yet")
    operation = schema[path][method.upper()]
    strategy = operation.as_strategy(generation_mode=GenerationMode(mode))

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy, key=KEYS)
    def run(case: Any, key: str | None) -> None:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        if case.headers:
            case.headers.pop("Authorization", None)
            case.headers.pop("authorization", None)
        response = case.call(base_url=stack.url, headers=headers, timeout=30)
        assert response.status_code != 500, response.text
        _envelope(response)
        if mode == "positive":
            case.validate_response(response, checks=CHECKS)

    try:
        run()
    except Unsatisfiable:
        if mode == "positive":
            raise
        pytest.skip("nothing in this operation can be made invalid")


def test_the_description_is_valid_openapi_3_1(fuzzed: tuple[HardStack, Any]) -> None:
    validator = pytest.importorskip("openapi_spec_validator")
    stack, _ = fuzzed
    validator.validate(describe(stack.proxy.app.routes))
