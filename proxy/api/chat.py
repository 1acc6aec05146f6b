"""``POST /v1/chat/completions``: one straight line: read and validate, plan, then defer,
call the flex tier, relay a stream, or complete now."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from proxy.api.dispatch import (
    adapter_headers,
    complete,
    defer,
    flex,
    open_stream,
    plan_request,
    services_of,
)
from proxy.api.http_io import parse_json, read_body
from proxy.api.streaming import relay_stream
from proxy.api.wire import ChatRequest, validate_body
from proxy.lanes.planner import Lane
from proxy.ops.log_context import LogContext


async def chat_completions(request: Request, ctx: LogContext) -> Response:
    services = services_of(request)
    caller = request.state.caller
    server = services.settings.server
    raw = await read_body(request, server.max_body_bytes, float(server.client_timeout))
    payload = parse_json(raw)
    chat = validate_body(ChatRequest, payload, max_messages=services.settings.server.max_messages)
    ctx.model = chat.model
    ctx.stream = bool(chat.stream)
    decision = plan_request(
        services, ctx, request, caller, chat.model, "/v1/chat/completions", stream=ctx.stream
    )
    if decision.deferred:
        return await defer(services, ctx, request, "/v1/chat/completions", payload, decision)
    body: dict[str, Any] = payload
    body["model"] = decision.upstream_model
    adapter = services.chat[decision.provider]
    passed = adapter_headers(request, ctx)
    if decision.lane is Lane.FLEX and not chat.stream:
        return await flex(
            services, ctx, decision, lambda b: adapter.complete(b, headers=passed), body
        )
    if chat.stream:
        include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
        upstream_started = time.perf_counter()
        stream = await open_stream(services, ctx, lambda: adapter.open_stream(body, headers=passed))
        return relay_stream(services, ctx, stream, include_usage, upstream_started, decision)
    return await complete(services, ctx, decision, lambda: adapter.complete(body, headers=passed))
