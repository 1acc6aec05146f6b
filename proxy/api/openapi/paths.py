"""The ``paths`` of costroute's OpenAPI document that are described in full: the
OpenAI-compatible endpoints, tickets and ops (``api_paths``) and the admin JSON API
(``admin_paths``). Routes not named here get a generic operation (``openapi_fallback``)."""

from __future__ import annotations

from collections.abc import Sequence

from proxy.api.openapi.operation import TICKET_ID, Json, json_body, operation, param, query, ref
from proxy.costs.reports import GROUPINGS


def api_paths() -> Json:
    deferrable = [param(n) for n in ("LatencyTolerance", "IdempotencyKey", "CallbackURL")]
    accepted = json_body(ref("Ticket"), "Deferred: the ticket, committed before this answer.")
    chat_ok = {
        "description": "The provider's completion (JSON), or an SSE stream with stream: true.",
        "content": {
            "application/json": {"schema": ref("ChatCompletion")},
            # OpenAPI 3.1 has no stream keyword: `schema` of text/event-stream describes one
            # event (OpenAPI 3.2 moves that to `itemSchema`), as schemathesis reads it too.
            "text/event-stream": {"schema": ref("ChatStreamEvent")},
        },
    }
    ticket_list = [
        query("status", {"enum": ["queued", "submitted", "completed", "failed", "cancelled"]}),
        query("limit", {"type": "integer", "minimum": 1, "maximum": 100}),
        query("after", TICKET_ID),
    ]
    ticket = json_body(ref("Ticket"), "The ticket.")
    plain = {"type": "string"}
    return {
        "/v1/chat/completions": {"post": operation(
            "Chat completion, real time or deferred by X-Latency-Tolerance",
            {"200": chat_ok, "202": accepted},
            body=ref("ChatRequest"),
            parameters=[*deferrable, param("ContextCache")],
        )},
        "/v1/embeddings": {"post": operation(
            "Embeddings, real time or deferred",
            {"200": json_body(ref("Embeddings"), "The provider's embeddings."),
             "202": accepted},
            body=ref("EmbeddingsRequest"),
            parameters=deferrable,
        )},
        "/v1/models": {"get": operation(
            "The configured models", {"200": json_body(ref("ModelList"), "Models.")}
        )},
        "/v1/models/{model}": {"get": operation(
            "One configured model",
            {"200": json_body(ref("Model"), "The model.")},
            parameters=[{"name": "model", "in": "path", "required": True, "schema": plain}],
        )},
        "/v1/tickets": {"get": operation(
            "The caller's tickets, newest first",
            {"200": json_body(ref("TicketList"), "A page of tickets.")},
            parameters=ticket_list, tag="tickets",
        )},
        "/v1/tickets/{ticket_id}": {"get": operation(
            "One of the caller's tickets; wait long-polls until it is final",
            {"200": ticket},
            parameters=[param("TicketId"),
                        query("wait", {"type": "integer", "minimum": 0, "maximum": 60})],
            tag="tickets",
        )},
        "/v1/tickets/{ticket_id}/cancel": {"post": operation(
            "Cancel a queued ticket (409 once submitted)",
            {"200": ticket}, parameters=[param("TicketId")], tag="tickets",
        )},
        "/admin/flush": {"post": operation(
            "Flush every batch queue now (admin keys only)",
            {"200": json_body(ref("FlushSummary"), "What was flushed.")}, tag="admin",
        )},
        "/healthz": {"get": operation(
            "Liveness (the database answers)",
            {"200": json_body({"type": "object", "required": ["status"]}, "Healthy.")},
            auth="none", tag="ops",
        )},
        "/metrics": {"get": operation(
            "Prometheus metrics (admin key when [metrics] require_key)",
            {"200": {"description": "Prometheus text format.",
                     "content": {"text/plain": {"schema": plain}}}},
            auth="optional", tag="ops",
        )},
        "/openapi.json": {"get": operation(
            "This document",
            {"200": json_body({"type": "object", "required": ["openapi", "paths"]}, "It.")},
            auth="none", tag="ops",
        )},
    }  # fmt: skip


def admin_paths() -> Json:
    """The admin JSON API (listings share since/after/before/limit plus filters)."""
    text = {"type": "string", "maxLength": 200}
    common = [query(name, text) for name in ("since", "after", "before", "status")]
    common.append(query("limit", {"type": "integer", "minimum": 1, "maximum": 500}))
    ids = {"type": ["string", "integer", "null"]}
    listing = json_body(
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
        params = [*common, *(query(name, text) for name in filters)]
        return {"get": operation(summary, {"200": listing}, parameters=params, tag="admin")}

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
        "/admin/report": {"get": operation(
            "Requests, cost and savings grouped, with alerts and the queue (admin keys only)",
            {"200": json_body({"type": "object", "required": ["object"]}, "The report.")},
            parameters=[query("since", text), query("by", by)], tag="admin",
        )},
    }  # fmt: skip
