"""costroute's own API as an OpenAPI 3.1 document, served at ``GET /openapi.json``.

The request schemas come from the pydantic models in ``proxy.wire`` (the ones that
validate requests), so the description cannot drift from what the proxy accepts. Every
route of the running app is described: the ones below in full, and any route added
later (an admin page, say) with a generic operation that still promises the OpenAI
error envelope, so fuzzing and the isolation tests reach it without an edit here.

Failures are always ``{"error": {"message", "type", "param", "code"}}``; the document
says so for every operation (explicit statuses plus ``default``), which is what the
schemathesis tier checks.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from proxy.reports import GROUPINGS
from proxy.wire import ChatRequest, EmbeddingsRequest

__all__ = ["describe", "openapi_json"]

Json = dict[str, Any]

_REF = "#/components/schemas/{model}"
_ERRORS = ("400", "401", "403", "404", "405", "409", "413", "429", "500", "502", "503", "504")
_TICKET_ID = {"type": "string", "pattern": "^tkt_[A-Za-z0-9_-]{32}$"}
# A Starlette path parameter with its converter, e.g. ``{model:path}``.
_CONVERTER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(:[A-Za-z_]+)?\}")


def _ref(name: str) -> Json:
    return {"$ref": _REF.format(model=name)}


def _json_body(schema: Json, description: str) -> Json:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error_schemas() -> Json:
    nullable = {"type": ["string", "null"]}
    return {
        "Error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "additionalProperties": False,
            "properties": {
                "message": {"type": "string", "minLength": 1},
                "type": {"type": "string"},
                "param": nullable,
                "code": nullable,
            },
        },
        "ErrorEnvelope": {
            "type": "object",
            "required": ["error"],
            "additionalProperties": False,
            "properties": {"error": _ref("Error")},
        },
    }


def _reply_schemas() -> Json:
    loose = {"type": "object", "additionalProperties": True}
    model = {
        "type": "object",
        "required": ["id", "object", "created", "owned_by"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "model"},
            "created": {"type": "integer"},
            "owned_by": {"type": "string"},
        },
    }
    ticket = {
        "type": "object",
        "required": ["id", "object", "status", "model", "lane", "created_at", "deadline"],
        "properties": {
            "id": _TICKET_ID,
            "object": {"const": "ticket"},
            "status": {"enum": ["queued", "submitted", "completed", "failed", "cancelled"]},
            "model": {"type": "string"},
            "lane": {"type": "string"},
            "created_at": {"type": "integer"},
            "deadline": {"type": "integer"},
            "not_before": {"type": "integer"},
            "finished_at": {"type": "integer"},
            "attempts": {"type": "integer", "minimum": 0},
            "result": {**loose, "description": "The provider's reply, as it answered."},
            "error": {"anyOf": [_ref("Error"), {"type": "null"}]},
        },
    }
    ids = {"anyOf": [_TICKET_ID, {"type": "null"}]}
    return {
        "ChatCompletion": {**loose, "required": ["id", "object", "choices"]},
        "Embeddings": {**loose, "required": ["object", "data"]},
        "Model": model,
        "ModelList": {
            "type": "object",
            "required": ["object", "data"],
            "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": model}},
        },
        "Ticket": ticket,
        "TicketList": {
            "type": "object",
            "required": ["object", "data", "first_id", "last_id", "has_more"],
            "properties": {
                "object": {"const": "list"},
                "data": {"type": "array", "items": _ref("Ticket")},
                "first_id": ids,
                "last_id": ids,
                "has_more": {"type": "boolean"},
            },
        },
        "FlushSummary": {
            "type": "object",
            "required": ["object", "batches", "tickets", "held", "failed"],
            "properties": {
                "object": {"const": "flush"},
                "batches": {"type": "array", "items": {"type": "string"}},
                "tickets": {"type": "integer", "minimum": 0},
                "held": {"type": "array", "items": {"type": "string"}},
                "failed": {"type": "array", "items": {"type": "string"}},
            },
        },
    }


def _header(name: str, schema: Json, description: str) -> Json:
    return {"name": name, "in": "header", "required": False, "schema": schema,
            "description": description}  # fmt: skip


def _parameters() -> Json:
    return {
        "LatencyTolerance": _header(
            "X-Latency-Tolerance",
            {"type": "string", "pattern": "^(0|[0-9]{1,9}[smhd])$"},
            "How long the caller can wait (90s, 15m, 4h, 1d; at most 30d). Deferred "
            "requests are answered 202 with a ticket.",
        ),
        "IdempotencyKey": _header(
            "Idempotency-Key",
            {"type": "string", "pattern": "^[!-~]{1,255}$"},
            "Deferred requests only: a repeated key returns the first ticket.",
        ),
        "CallbackURL": _header(
            "X-Callback-URL",
            {"type": "string", "format": "uri", "maxLength": 2048},
            "Deferred requests only: POST the final ticket here (signed). The host must "
            "be on webhooks.allowed_hosts.",
        ),
        "ContextCache": _header(
            "X-Context-Cache",
            {"enum": ["auto", "force", "off"]},
            "Gemini context caching for this request.",
        ),
        "TicketId": {"name": "ticket_id", "in": "path", "required": True, "schema": _TICKET_ID},
    }


def _param(name: str) -> Json:
    return {"$ref": f"#/components/parameters/{name}"}


def _query(name: str, schema: Json) -> Json:
    return {"name": name, "in": "query", "required": False, "schema": schema}


def _operation(
    summary: str,
    ok: dict[str, Json],
    *,
    body: Json | None = None,
    parameters: Sequence[Json] = (),
    auth: str = "required",
    tag: str = "openai",
) -> Json:
    """``auth``: "required", "none", or "optional" (``/metrics`` with require_key)."""
    responses: Json = dict(ok)
    for status in _ERRORS:
        responses.setdefault(status, {"$ref": "#/components/responses/Error"})
    responses["default"] = {"$ref": "#/components/responses/Error"}
    operation: Json = {"summary": summary, "tags": [tag], "responses": responses}
    if parameters:
        operation["parameters"] = list(parameters)
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
    if auth == "none":
        operation["security"] = []
    elif auth == "optional":
        operation["security"] = [{}, {"bearerAuth": []}]
    return operation


def _paths() -> Json:
    deferrable = [_param(n) for n in ("LatencyTolerance", "IdempotencyKey", "CallbackURL")]
    accepted = _json_body(_ref("Ticket"), "Deferred: the ticket, committed before this answer.")
    chat_ok = {
        "description": "The provider's completion (JSON), or an SSE stream with stream: true.",
        "content": {
            "application/json": {"schema": _ref("ChatCompletion")},
            "text/event-stream": {"schema": {"type": "string"}},
        },
    }
    ticket_list = [
        _query("status", {"enum": ["queued", "submitted", "completed", "failed", "cancelled"]}),
        _query("limit", {"type": "integer", "minimum": 1, "maximum": 100}),
        _query("after", _TICKET_ID),
    ]
    ticket = _json_body(_ref("Ticket"), "The ticket.")
    plain = {"type": "string"}
    return {
        "/v1/chat/completions": {"post": _operation(
            "Chat completion, real time or deferred by X-Latency-Tolerance",
            {"200": chat_ok, "202": accepted},
            body=_ref("ChatRequest"),
            parameters=[*deferrable, _param("ContextCache")],
        )},
        "/v1/embeddings": {"post": _operation(
            "Embeddings, real time or deferred",
            {"200": _json_body(_ref("Embeddings"), "The provider's embeddings."),
             "202": accepted},
            body=_ref("EmbeddingsRequest"),
            parameters=deferrable,
        )},
        "/v1/models": {"get": _operation(
            "The configured models", {"200": _json_body(_ref("ModelList"), "Models.")}
        )},
        "/v1/models/{model}": {"get": _operation(
            "One configured model",
            {"200": _json_body(_ref("Model"), "The model.")},
            parameters=[{"name": "model", "in": "path", "required": True, "schema": plain}],
        )},
        "/v1/tickets": {"get": _operation(
            "The caller's tickets, newest first",
            {"200": _json_body(_ref("TicketList"), "A page of tickets.")},
            parameters=ticket_list, tag="tickets",
        )},
        "/v1/tickets/{ticket_id}": {"get": _operation(
            "One of the caller's tickets; wait long-polls until it is final",
            {"200": ticket},
            parameters=[_param("TicketId"),
                        _query("wait", {"type": "integer", "minimum": 0, "maximum": 60})],
            tag="tickets",
        )},
        "/v1/tickets/{ticket_id}/cancel": {"post": _operation(
            "Cancel a queued ticket (409 once submitted)",
            {"200": ticket}, parameters=[_param("TicketId")], tag="tickets",
        )},
        "/admin/flush": {"post": _operation(
            "Flush every batch queue now (admin keys only)",
            {"200": _json_body(_ref("FlushSummary"), "What was flushed.")}, tag="admin",
        )},
        "/healthz": {"get": _operation(
            "Liveness (the database answers)",
            {"200": _json_body({"type": "object", "required": ["status"]}, "Healthy.")},
            auth="none", tag="ops",
        )},
        "/metrics": {"get": _operation(
            "Prometheus metrics (admin key when [metrics] require_key)",
            {"200": {"description": "Prometheus text format.",
                     "content": {"text/plain": {"schema": plain}}}},
            auth="optional", tag="ops",
        )},
        "/openapi.json": {"get": _operation(
            "This document",
            {"200": _json_body({"type": "object", "required": ["openapi", "paths"]}, "It.")},
            auth="none", tag="ops",
        )},
    }  # fmt: skip


def _admin_paths() -> Json:
    """The admin JSON API (listings share since/after/before/limit plus filters)."""
    text = {"type": "string", "maxLength": 200}
    common = [_query(name, text) for name in ("since", "after", "before", "status")]
    common.append(_query("limit", {"type": "integer", "minimum": 1, "maximum": 500}))
    ids = {"type": ["string", "integer", "null"]}
    listing = _json_body(
        {
            "type": "object",
            "required": ["object", "data", "first_id", "last_id", "has_more"],
            "properties": {
                "object": {"const": "list"},
                "data": {"type": "array", "items": {"type": "object"}},
                "first_id": ids,
                "last_id": ids,
                "has_more": {"type": "boolean"},
                "next": {"type": ["string", "null"]},
            },
        },
        "A page, newest first.",
    )

    def listing_of(summary: str, filters: Sequence[str]) -> Json:
        params = [*common, *(_query(name, text) for name in filters)]
        return {"get": _operation(summary, {"200": listing}, parameters=params, tag="admin")}

    by = {"enum": list(GROUPINGS)}
    return {
        "/admin/routes": listing_of(
            "The routing log (admin keys only)",
            ("lane", "model", "key", "provider", "endpoint", "ticket"),
        ),
        "/admin/tickets": listing_of(
            "Every key's tickets (admin keys only)", ("lane", "model", "key", "provider", "batch")
        ),
        "/admin/batches": listing_of("Local batches (admin keys only)", ("provider", "model")),
        "/admin/report": {"get": _operation(
            "Requests, cost and savings grouped, with alerts and the queue (admin keys only)",
            {"200": _json_body({"type": "object", "required": ["object"]}, "The report.")},
            parameters=[_query("since", text), _query("by", by)], tag="admin",
        )},
    }  # fmt: skip


def _openapi_path(path: str) -> tuple[str, list[str]]:
    names = [match.group(1) for match in _CONVERTER.finditer(path)]
    return _CONVERTER.sub(lambda m: "{" + m.group(1) + "}", path), names


def _generic(route: Route, method: str, names: list[str]) -> Json:
    doc = (route.endpoint.__doc__ or "").strip().splitlines()
    tag = "admin" if route.path.startswith("/admin") else "other"
    ok = {"200": {"description": "Success.", "content": {"*/*": {"schema": {}}}}}
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in names
    ]
    summary = doc[0] if doc else f"{method} {route.path}"
    return _operation(summary, ok, parameters=params, tag=tag)


def describe(routes: Iterable[BaseRoute] = ()) -> Json:
    """The OpenAPI document; ``routes`` (the app's) adds any route not described above."""
    _, defs = models_json_schema(
        [(ChatRequest, "validation"), (EmbeddingsRequest, "validation")], ref_template=_REF
    )
    paths = {**_paths(), **_admin_paths()}
    for route in routes:
        if not isinstance(route, Route) or route.methods is None:
            continue
        path, names = _openapi_path(route.path)
        item = paths.setdefault(path, {})
        for method in sorted(route.methods - {"HEAD"}):
            item.setdefault(method.lower(), _generic(route, method, names))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "costroute",
            "version": "1",
            "description": "OpenAI-compatible cost-routing proxy. Errors are OpenAI envelopes.",
        },
        "paths": paths,
        "components": {
            "schemas": {**defs["$defs"], **_error_schemas(), **_reply_schemas()},
            "parameters": _parameters(),
            "responses": {"Error": _json_body(_ref("ErrorEnvelope"), "An OpenAI error envelope.")},
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearerAuth": []}],
    }


async def openapi_json(request: Request) -> Response:
    """``GET /openapi.json``: no key needed; it names no models, keys or hosts."""
    cached = getattr(request.app.state, "openapi_document", None)
    if not isinstance(cached, bytes):
        cached = orjson.dumps(describe(request.app.routes))
        request.app.state.openapi_document = cached
    return Response(cached, media_type="application/json")
