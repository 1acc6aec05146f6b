"""The OpenAI-compatible handlers: chat completions, embeddings, models, health.

Every handler follows one straight line: authenticate, read and validate, plan, then
either hand the request to the deferral queue or call the provider now. Failures are
``ProxyError``s; ``proxy.app`` renders them and writes their routing-log row.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from adapters.base import ChatAdapter, Reply
from adapters.errors import AdapterError
from proxy.api.http_io import parse_json, read_body
from proxy.api.streaming import relay_stream
from proxy.api.wire import ChatRequest, EmbeddingsRequest, validate_body
from proxy.auth import require_admin
from proxy.context import Caller, Services
from proxy.deferral.queue import deferral_of
from proxy.errors import (
    BadRequest,
    InvalidHeader,
    NotFound,
    ProxyError,
    UpstreamFailure,
    render,
)
from proxy.lanes.planner import Decision, Lane, plan
from proxy.lanes.realtime import call_with_retries, within
from proxy.lanes.tolerance import HEADER as TOLERANCE_HEADER
from proxy.lanes.tolerance import read_tolerance
from proxy.ops import accounting
from proxy.ops.log_context import LogContext
from proxy.ops.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE

CACHE_HEADER = "x-context-cache"
REQUEST_ID_HEADER = "x-costroute-request-id"
# OpenAI's answer when the flex tier has no capacity (HTTP 429, not billed).
FLEX_UNAVAILABLE = "resource_unavailable"
_CACHE_MODES = ("auto", "force", "off")


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def chat_completions(request: Request, ctx: LogContext) -> Response:
    services = services_of(request)
    caller = request.state.caller
    server = services.settings.server
    raw = await read_body(request, server.max_body_bytes, float(server.client_timeout))
    payload = parse_json(raw)
    chat = validate_body(ChatRequest, payload, max_messages=services.settings.server.max_messages)
    ctx.model = chat.model
    ctx.stream = bool(chat.stream)
    decision = _plan(
        services, ctx, request, caller, chat.model, "/v1/chat/completions", stream=ctx.stream
    )
    if decision.deferred:
        return await _defer(services, ctx, request, "/v1/chat/completions", payload, decision)
    body: dict[str, Any] = payload
    body["model"] = decision.upstream_model
    adapter = services.chat[decision.provider]
    passed = _adapter_headers(request, ctx)
    if decision.lane is Lane.FLEX and not chat.stream:
        return await _flex(services, ctx, decision, adapter, body, passed)
    if chat.stream:
        include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
        upstream_started = time.perf_counter()
        try:
            stream, ctx.attempts = await call_with_retries(
                lambda: adapter.open_stream(body, headers=passed), services.settings.retry
            )
        except AdapterError as error:
            raise UpstreamFailure(error) from None
        return relay_stream(services, ctx, stream, include_usage, upstream_started, decision)
    return await _complete(services, ctx, decision, lambda: adapter.complete(body, headers=passed))


async def embeddings(request: Request, ctx: LogContext) -> Response:
    services = services_of(request)
    caller = request.state.caller
    server = services.settings.server
    raw = await read_body(request, server.max_body_bytes, float(server.client_timeout))
    payload = parse_json(raw)
    parsed = validate_body(EmbeddingsRequest, payload)
    ctx.model = parsed.model
    decision = _plan(services, ctx, request, caller, parsed.model, "/v1/embeddings")
    if decision.deferred:
        return await _defer(services, ctx, request, "/v1/embeddings", payload, decision)
    body: dict[str, Any] = payload
    body["model"] = decision.upstream_model
    adapter = services.chat[decision.provider]
    return await _complete(services, ctx, decision, lambda: adapter.embed(body, headers={}))


async def _flex(
    services: Services,
    ctx: LogContext,
    decision: Decision,
    adapter: ChatAdapter,
    body: dict[str, Any],
    passed: dict[str, str],
) -> Response:
    """OpenAI's flex tier; when it has no capacity (429 ``resource_unavailable``, not
    billed) the request still meets its deadline at the standard tier."""
    flex_body = {**body, "service_tier": "flex"}
    try:
        return await _complete(
            services, ctx, decision, lambda: adapter.complete(flex_body, headers=passed)
        )
    except UpstreamFailure as failure:
        if failure.code != FLEX_UNAVAILABLE:
            raise
    fallback = replace(
        decision,
        lane=Lane.REALTIME,
        reason=decision.reason + "; flex capacity unavailable: sent at the standard tier",
    )
    ctx.lane, ctx.reason = fallback.lane.value, fallback.reason
    return await _complete(services, ctx, fallback, lambda: adapter.complete(body, headers=passed))


async def _defer(
    services: Services,
    ctx: LogContext,
    request: Request,
    endpoint: str,
    payload: dict[str, Any],
    decision: Decision,
) -> Response:
    """Commit the request as a ticket; the 202 is sent only after the commit."""
    return await deferral_of(services).enqueue(
        services,
        request.state.caller,
        endpoint=endpoint,
        model=str(payload["model"]),
        body=payload,
        decision=decision,
        headers=request.headers,
        request_id=ctx.request_id,
    )


def _plan(
    services: Services,
    ctx: LogContext,
    request: Request,
    caller: Caller,
    model: str,
    endpoint: str,
    *,
    stream: bool = False,
) -> Decision:
    if model not in services.settings.models:
        raise BadRequest(
            f"The model `{model}` does not exist or is not configured on this proxy.",
            param="model",
            code="model_not_found",
        )
    tolerance = read_tolerance(request.headers, caller)
    if stream and tolerance:
        if TOLERANCE_HEADER.lower() in request.headers:
            raise InvalidHeader(
                TOLERANCE_HEADER, "stream: true cannot be combined with a latency tolerance"
            )
        # A key's default tolerance does not apply to a caller that streams: it wants now.
        tolerance = None
    decision = plan(
        model=model,
        endpoint=endpoint,
        tolerance=tolerance,
        settings=services.settings,
        now=services.clock.now(),
    )
    ctx.provider = decision.provider
    ctx.lane = decision.lane.value
    ctx.reason = decision.reason
    return decision


async def _complete(
    services: Services,
    ctx: LogContext,
    decision: Decision,
    call: Callable[[], Awaitable[Reply]],
) -> Response:
    started = time.perf_counter()
    server = services.settings.server
    # server.upstream_timeout bounds each whole attempt, not just each read: an upstream
    # that drips a byte at a time is cut off too. Flex calls are slower by design.
    budget = float(server.flex_timeout if decision.lane is Lane.FLEX else server.upstream_timeout)
    try:
        reply, ctx.attempts = await call_with_retries(
            lambda: within(budget, call), services.settings.retry
        )
    except AdapterError as error:
        ctx.upstream_ms = (time.perf_counter() - started) * 1000.0
        ctx.attempts = error.attempts
        raise UpstreamFailure(error) from None
    ctx.upstream_ms = (time.perf_counter() - started) * 1000.0
    lane = accounting.lane_of(decision, reply.notes)
    # Only queued here: the row (usage, cost, metrics) is built in the log writer's batch.
    accounting.record_success(
        services, ctx, decision, lane=lane, payload=reply.parsed, notes=reply.notes
    )
    headers = {**reply.headers, "x-costroute-lane": lane, "x-request-id": ctx.request_id}
    return Response(reply.body, media_type="application/json", headers=headers)


def _adapter_headers(request: Request, ctx: LogContext) -> dict[str, str]:
    """What adapters may know of the caller's request: the cache mode and the request id
    (which stays the same across retried attempts). Never the caller's credentials."""
    passed = {REQUEST_ID_HEADER: ctx.request_id}
    mode = request.headers.get(CACHE_HEADER)
    if mode is None:
        return passed
    mode = mode.strip().lower()
    if mode not in _CACHE_MODES:
        raise InvalidHeader("X-Context-Cache", f"{mode!r} is not one of auto, force, off")
    passed[CACHE_HEADER] = mode
    return passed


async def list_models(request: Request, ctx: LogContext) -> Response:
    services = services_of(request)
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": model.provider}
        for name, model in services.settings.models.items()
    ]
    return JSONResponse({"object": "list", "data": data}, headers={"x-request-id": ctx.request_id})


async def retrieve_model(request: Request, ctx: LogContext) -> Response:
    services = services_of(request)
    name = request.path_params["model"]
    model = services.settings.models.get(name)
    if model is None:
        raise NotFound(f"The model `{name}` does not exist.", param="model", code="model_not_found")
    return JSONResponse(
        {"id": name, "object": "model", "created": 0, "owned_by": model.provider},
        headers={"x-request-id": ctx.request_id},
    )


async def healthz(request: Request) -> Response:
    services = services_of(request)
    await services.db.fetchone("SELECT 1")
    return JSONResponse({"status": "ok"})


async def metrics(request: Request) -> Response:
    """Prometheus text format; behind an admin key when ``[metrics] require_key``."""
    services = services_of(request)
    if services.settings.metrics.require_key:
        try:
            caller = services.extras["auth"].authenticate(request.headers.get("authorization"))
            require_admin(caller)
        except ProxyError as exc:
            return render(exc)
    body = await services.extras["metrics"].render(services.db, int(services.clock.now() * 1000))
    return Response(body, media_type=METRICS_CONTENT_TYPE)
