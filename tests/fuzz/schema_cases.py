"""What the schemathesis tier (``test_schemathesis.py``, ``tests/fuzz/run.sh``) and its
smoke in the default suite (``test_smoke.py``) share: the hardening stack with its
OpenAPI document steered to configured models, the checks, and one operation's run.

schemathesis is in the ``test`` extra. Outside CI a venv without it skips these tests;
under CI (``CI=true``, as ``.ci/run`` runs) a missing install fails the collection
instead, so a broken install step cannot hide behind a skip.
"""

from __future__ import annotations

import copy
import importlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

from proxy.api.openapi.document import describe
from proxy.app import _routes
from tests.hardening.stack import ADMIN, CLIENT_A, HardStack, hard_stack


def require(name: str) -> ModuleType:
    """``pytest.importorskip`` on a developer's machine; an ImportError under CI."""
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        return importlib.import_module(name)
    return pytest.importorskip(name)


schemathesis = require("schemathesis")

from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

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


@contextmanager
def fuzzed_stack(tmp: Path) -> Iterator[tuple[HardStack, Any]]:
    """The hardening stack and schemathesis' reading of its (steered) document."""
    with hard_stack(tmp) as stack:
        doc = _steer(describe(stack.proxy.app.routes), stack)
        yield stack, schemathesis.openapi.from_dict(doc)


def envelope(response: Any) -> None:
    if response.status_code < 400:
        return
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]


def check(stack: HardStack, case: Any, key: str | None, *, positive: bool) -> None:
    """Send one case with one key: never a 500, every error an OpenAI envelope, and a
    positive case's answer documented (status, content type, schema)."""
    headers = {"authorization": f"Bearer {key}"} if key else {}
    if case.headers:
        case.headers.pop("Authorization", None)
        case.headers.pop("authorization", None)
    response = case.call(base_url=stack.url, headers=headers, timeout=30)
    assert response.status_code != 500, response.text
    envelope(response)
    if positive:
        case.validate_response(response, checks=CHECKS)


def exercise(
    fuzzed: tuple[HardStack, Any],
    path: str,
    method: str,
    mode: str,
    *,
    examples: int,
    derandomize: bool = False,
) -> None:
    """Run ``examples`` generated cases (``mode``: positive or negative) of one operation."""
    stack, schema = fuzzed
    if path == "/openapi.json" and not any(
        getattr(r, "path", None) == "/openapi.json" for r in stack.proxy.app.routes
    ):
        pytest.skip("the app does not route /openapi.json yet")
    operation = schema[path][method.upper()]
    strategy = operation.as_strategy(generation_mode=GenerationMode(mode))

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=derandomize,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy, key=KEYS)
    def run(case: Any, key: str | None) -> None:
        check(stack, case, key, positive=mode == "positive")

    try:
        run()
    except Unsatisfiable:
        if mode == "positive":
            raise
        pytest.skip("nothing in this operation can be made invalid")
