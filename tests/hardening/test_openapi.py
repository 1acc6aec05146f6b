"""costroute's own OpenAPI 3.1 description: it covers every route of the app (new ones
automatically), every operation promises the OpenAI error envelope, its references
resolve, and ``GET /openapi.json`` serves it. The fuzzing against it is in tests/fuzz."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.routing import Route

from proxy.api.openapi.document import describe, openapi_json
from proxy.api.wire import ChatRequest
from proxy.app import _routes
from tests.hardening.stack import HardStack

METHODS = {"get", "post", "put", "patch", "delete"}


def _app_operations(routes: list[Any]) -> set[tuple[str, str]]:
    found = set()
    for route in routes:
        if isinstance(route, Route) and route.methods:
            path = re.sub(r"\{([^}:]+)(:[^}]+)?\}", r"{\1}", route.path)
            found |= {(m.lower(), path) for m in route.methods - {"HEAD"}}
    return found


def _doc_operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m, p) for p, item in doc["paths"].items() for m in item if m in METHODS}


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def test_every_route_of_the_app_is_described(stack: HardStack) -> None:
    routes = list(stack.proxy.app.routes)
    doc = describe(routes)
    assert doc["openapi"].startswith("3.1")
    app_ops = _app_operations(routes)
    assert app_ops <= _doc_operations(doc)
    # Nothing described that the app does not serve (besides /openapi.json itself).
    assert _doc_operations(doc) - app_ops <= {("get", "/openapi.json")}
    # The core surface is described in full, not generically.
    for path in ("/v1/chat/completions", "/v1/embeddings", "/v1/tickets/{ticket_id}"):
        operation = next(iter(doc["paths"][path].values()))
        assert operation["tags"] != ["other"], path
        assert "200" in operation["responses"]


def test_a_new_route_is_described_without_editing_the_description() -> None:
    async def page(request: Any) -> Any:
        """The ops page."""

    routes = [*_routes(), Route("/admin/things/{thing_id}", page, methods=["GET", "DELETE"])]
    doc = describe(routes)
    item = doc["paths"]["/admin/things/{thing_id}"]
    assert set(item) == {"get", "delete"}
    assert item["get"]["summary"] == "The ops page."
    assert item["get"]["tags"] == ["admin"]
    assert item["get"]["parameters"][0]["name"] == "thing_id"


def test_every_operation_promises_the_error_envelope_and_refs_resolve() -> None:
    doc = describe(_routes())
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            for status in ("400", "401", "404", "500", "default"):
                assert _resolve(doc, responses[status]["$ref"])["content"]["application/json"][
                    "schema"
                ] == {"$ref": "#/components/schemas/ErrorEnvelope"}, (method, path, status)
    for ref in set(_refs(doc)):
        _resolve(doc, ref)
    error = doc["components"]["schemas"]["Error"]
    assert set(error["required"]) == {"message", "type", "param", "code"}
    assert error["additionalProperties"] is False


def test_request_schemas_are_the_validators_own() -> None:
    doc = describe(_routes())
    schema = doc["components"]["schemas"]["ChatRequest"]
    mine = ChatRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    mine.pop("$defs", None)
    assert schema == mine


def test_public_routes_and_security() -> None:
    doc = describe(_routes())
    assert doc["security"] == [{"bearerAuth": []}]
    assert doc["paths"]["/healthz"]["get"]["security"] == []
    assert doc["paths"]["/openapi.json"]["get"]["security"] == []
    # Nothing configuration-specific (model names, hosts, keys) is published.
    text = str(doc)
    for private in ("gpt-4o-mini", "127.0.0.1", "sk-"):
        assert private not in text


async def test_the_handler_serves_the_document_for_the_app_it_runs_in() -> None:
    app = Starlette(routes=[*_routes(), Route("/openapi.json", openapi_json, methods=["GET"])])
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://proxy.test") as client:
        first = await client.get("/openapi.json")
        second = await client.get("/openapi.json")
    assert first.status_code == 200
    assert first.headers["content-type"] == "application/json"
    assert first.json() == describe(app.routes)
    assert second.content == first.content


def test_the_running_proxy_serves_openapi_json_without_a_key(fresh: HardStack) -> None:
    with fresh.http(None) as anonymous:
        response = anonymous.get("/openapi.json")
    assert response.status_code == 200
    assert response.json()["openapi"].startswith("3.1")
