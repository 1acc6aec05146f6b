"""The ``components`` of costroute's OpenAPI document: the request schemas (from the
pydantic models in ``proxy.api.wire`` that validate requests, so they cannot drift), the
error envelope, the replies, the shared header and path parameters, and the one error
response every operation points at."""

from __future__ import annotations

from pydantic.json_schema import models_json_schema

from proxy.api.openapi.operation import REF, TICKET_ID, Json, json_body, ref
from proxy.api.wire import ChatRequest, EmbeddingsRequest


def components() -> Json:
    _, defs = models_json_schema(
        [(ChatRequest, "validation"), (EmbeddingsRequest, "validation")], ref_template=REF
    )
    return {
        "schemas": {**defs["$defs"], **_error_schemas(), **_reply_schemas()},
        "parameters": _parameters(),
        "responses": {"Error": json_body(ref("ErrorEnvelope"), "An OpenAI error envelope.")},
        "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
    }


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
            "properties": {"error": ref("Error")},
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
            "id": TICKET_ID,
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
            "error": {"anyOf": [ref("Error"), {"type": "null"}]},
        },
    }
    ids = {"anyOf": [TICKET_ID, {"type": "null"}]}
    return {
        "ChatCompletion": {**loose, "required": ["id", "object", "choices"]},
        "ChatCompletionChunk": {**loose, "required": ["id", "object", "choices"]},
        # One server-sent event of a streamed chat completion (its fields as the SSE
        # format defines them): `data` is a chunk as JSON, an in-band error envelope
        # after a failure mid-stream, or `[DONE]` last.
        "ChatStreamEvent": {
            "type": "object",
            "required": ["data"],
            "properties": {
                "data": {
                    "anyOf": [
                        {"const": "[DONE]"},
                        {
                            "type": "string",
                            "contentMediaType": "application/json",
                            "contentSchema": {
                                "anyOf": [ref("ChatCompletionChunk"), ref("ErrorEnvelope")]
                            },
                        },
                    ]
                },
                "event": {"type": "string"},
                "id": {"type": "string"},
                "retry": {"type": "integer", "minimum": 0},
            },
        },
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
                "data": {"type": "array", "items": ref("Ticket")},
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
        "TicketId": {"name": "ticket_id", "in": "path", "required": True, "schema": TICKET_ID},
    }
