"""Turning a finished request into its routing-log row: usage, lane and cost.

A success is only queued on the request's path (``RouteLog.record_later``): usage,
pricing and metrics are worked out when the log writer takes its next batch, so they
never delay the caller, nor the next request on the same event loop. Failures are rare
and cheap, and recorded at once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson

from adapters.wire import Usage, extract_usage
from proxy.context import Services
from proxy.lanes.planner import Decision
from proxy.ops.log_context import LogContext

log = logging.getLogger(__name__)


def lane_of(decision: Decision, notes: Mapping[str, Any]) -> str:
    suffix = notes.get("lane_suffix")
    return f"{decision.lane.value}+{suffix}" if suffix else decision.lane.value


def usage_of(payload: Mapping[str, Any] | None, body: bytes | None = None) -> Usage | None:
    if payload is None and body:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        payload = parsed if isinstance(parsed, dict) else None
    return extract_usage(payload)


def record_success(
    services: Services,
    ctx: LogContext,
    decision: Decision,
    *,
    lane: str,
    payload: Mapping[str, Any] | None,
    notes: Mapping[str, Any],
    status: int = 200,
    error_code: str | None = None,
) -> None:
    # Taken now: the row is built up to a log-writer linger later.
    latency_ms, at = ctx.elapsed_ms(), services.clock.now()

    def build() -> dict[str, Any]:
        usage = usage_of(payload)
        cost = _cost(services, decision, lane, usage, notes, at)
        metrics = services.extras.get("metrics")
        if metrics is not None:
            _observe(metrics, ctx, lane, status, latency_ms)
            if cost is not None:
                metrics.add_cost(lane, ctx.provider or "", ctx.model or "", cost[0], cost[2])
        return _fields(
            services,
            ctx,
            lane=lane,
            status=status,
            error_code=error_code,
            latency_ms=latency_ms,
            at=at,
            usage=usage,
            cost=cost,
            cache_name=notes.get("cache_name"),
        )

    services.routelog.record_later(build)


def record_failure(services: Services, ctx: LogContext, *, status: int, code: str | None) -> None:
    latency_ms = ctx.elapsed_ms()
    fields = _fields(
        services,
        ctx,
        lane=ctx.lane,
        status=status,
        error_code=code,
        latency_ms=latency_ms,
        at=services.clock.now(),
        usage=None,
        cost=None,
    )
    services.routelog.record(**fields)
    metrics = services.extras.get("metrics")
    if metrics is not None:
        _observe(metrics, ctx, ctx.lane, status, latency_ms)


def _observe(metrics: Any, ctx: LogContext, lane: str, status: int, latency_ms: float) -> None:
    metrics.observe_request(
        lane,
        ctx.provider or "",
        ctx.model or "",
        status,
        latency_ms / 1000.0,
        (ctx.upstream_ms or 0.0) / 1000.0,
    )


def _cost(
    services: Services,
    decision: Decision,
    lane: str,
    usage: Usage | None,
    notes: Mapping[str, Any],
    at: float,
) -> tuple[float, float, float] | None:
    pricer = services.extras.get("pricer")
    if pricer is None or usage is None:
        return None
    provider = services.settings.providers[decision.provider]
    result = pricer.cost(
        provider_type=provider.type,
        provider=decision.provider,
        model=decision.upstream_model,
        usage=usage,
        lane=lane,
        at=at,
        cache_storage_usd=float(notes.get("cache_storage_usd") or 0.0),
    )
    if result is None:
        return None
    return (result.actual, result.baseline, result.saved)


def _fields(
    services: Services,
    ctx: LogContext,
    *,
    lane: str,
    status: int,
    error_code: str | None,
    latency_ms: float,
    at: float,
    usage: Usage | None,
    cost: tuple[float, float, float] | None,
    cache_name: str | None = None,
) -> dict[str, Any]:
    return {
        "ts_ms": int(at * 1000),
        "request_id": ctx.request_id,
        "key_name": ctx.key_name,
        "endpoint": ctx.endpoint,
        "model": ctx.model,
        "provider": ctx.provider,
        "lane": lane,
        "reason": ctx.reason,
        "status": status,
        "error_code": error_code,
        "stream": int(ctx.stream),
        "latency_ms": round(latency_ms, 3),
        "upstream_ms": None if ctx.upstream_ms is None else round(ctx.upstream_ms, 3),
        "attempts": ctx.attempts,
        "prompt_tokens": usage.prompt_tokens if usage else None,
        "completion_tokens": usage.completion_tokens if usage else None,
        "cached_tokens": usage.cached_tokens if usage else None,
        "reasoning_tokens": usage.reasoning_tokens if usage else None,
        "cost_usd": cost[0] if cost else None,
        "baseline_usd": cost[1] if cost else None,
        "saved_usd": cost[2] if cost else None,
        "cache_name": cache_name,
        "tolerance_s": ctx.tolerance,
    }
