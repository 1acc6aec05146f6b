"""How a planned request is sent, shared by the chat and embeddings surfaces: plan it,
then commit it to the deferral queue or call the provider now (with flex's fallback to
the standard tier), and queue its routing-log row. Failures are ``ProxyError``s;
``proxy.app`` renders them and writes their routing-log row.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from adapters.base import Reply
from adapters.errors import AdapterError
from proxy.context import Caller, Services
from proxy.deferral.queue import deferral_of
from proxy.errors import BadRequest, InvalidHeader, UpstreamFailure
from proxy.lanes.planner import Decision, Lane, plan
from proxy.lanes.realtime import call_with_retries, within
from proxy.lanes.tolerance import HEADER as TOLERANCE_HEADER
from proxy.lanes.tolerance import read_tolerance
from proxy.ops import accounting
from proxy.ops.log_context import LogContext

T = TypeVar("T")
CACHE_HEADER = "x-context-cache"
REQUEST_ID_HEADER = "x-costroute-request-id"
# OpenAI's answer when the flex tier has no capacity (HTTP 429, not billed).
FLEX_UNAVAILABLE = "resource_unavailable"
_CACHE_MODES = ("auto", "force", "off")


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def flex(
    services: Services,
    ctx: LogContext,
    decision: Decision,
    send: Callable[[dict[str, Any]], Awaitable[Reply]],
    body: dict[str, Any],
) -> Response:
    """OpenAI's flex tier (chat or Responses: ``send`` posts a body); when it has no
    capacity (429 ``resource_unavailable``, not billed) the request still meets its
    deadline at the standard tier."""
    flex_body = {**body, "service_tier": "flex"}
    try:
        return await complete(services, ctx, decision, lambda: send(flex_body))
    except UpstreamFailure as failure:
        if failure.code != FLEX_UNAVAILABLE:
            raise
    fallback = replace(
        decision,
        lane=Lane.REALTIME,
        reason=decision.reason + "; flex capacity unavailable: sent at the standard tier",
    )
    ctx.lane, ctx.reason = fallback.lane.value, fallback.reason
    return await complete(services, ctx, fallback, lambda: send(body))


async def defer(
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


def plan_request(
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
    ctx.tolerance = tolerance
    decision = plan(
        model=model,
        endpoint=endpoint,
        tolerance=tolerance,
        settings=services.settings,
        now=services.clock.now(),
        turnaround=services.turnaround,
    )
    ctx.provider = decision.provider
    ctx.lane = decision.lane.value
    ctx.reason = decision.reason
    return decision


async def complete(
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
            lambda: within(budget, call), services.settings.retry, sleep=services.sleep
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


async def open_stream(services: Services, ctx: LogContext, opener: Callable[[], Awaitable[T]]) -> T:
    """Open an upstream stream with the real-time retry policy (a stream is retried only
    until its first byte); a failure is the caller's ``UpstreamFailure``."""
    try:
        stream, ctx.attempts = await call_with_retries(
            opener, services.settings.retry, sleep=services.sleep
        )
    except AdapterError as error:
        raise UpstreamFailure(error) from None
    return stream


def adapter_headers(request: Request, ctx: LogContext) -> dict[str, str]:
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
