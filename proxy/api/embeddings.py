"""``POST /v1/embeddings``: planned like chat (embeddings can be deferred to a batch)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from proxy.api.dispatch import complete, defer, plan_request, services_of
from proxy.api.http_io import parse_json, read_body
from proxy.api.wire import EmbeddingsRequest, validate_body
from proxy.ops.log_context import LogContext


async def embeddings(request: Request, ctx: LogContext) -> Response:
    services = services_of(request)
    caller = request.state.caller
    server = services.settings.server
    raw = await read_body(request, server.max_body_bytes, float(server.client_timeout))
    payload = parse_json(raw)
    parsed = validate_body(EmbeddingsRequest, payload)
    ctx.model = parsed.model
    decision = plan_request(services, ctx, request, caller, parsed.model, "/v1/embeddings")
    if decision.deferred:
        return await defer(services, ctx, request, "/v1/embeddings", payload, decision)
    body: dict[str, Any] = payload
    body["model"] = decision.upstream_model
    adapter = services.chat[decision.provider]
    return await complete(services, ctx, decision, lambda: adapter.embed(body, headers={}))
