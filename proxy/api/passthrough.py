"""The stateless rest of OpenAI's API, forwarded as it is: legacy completions,
moderations, image generation and edits, speech, transcriptions and translations
(``[passthrough] allow``).

A JSON request goes to the provider of the model it names (with the configured upstream
model) or to ``[passthrough] default_provider``; a multipart upload, whose model is inside
the stream, goes to ``default_provider``. The caller is authenticated, the provider's key
is substituted, bodies stream both ways (``[passthrough] max_bytes``, 413 above it), and
each call has a routing-log row in lane ``passthrough`` (with its cost when the provider
reports usage).

Stateful provider resources (assistants, threads, vector stores, fine-tuning, uploads,
conversations, the provider's own files and batches, ...) are never forwarded: under one
shared provider key, one caller could read another's. They get a 404 saying so.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from adapters.base import PassthroughAdapter
from adapters.errors import AdapterError
from adapters.http import UpstreamResponse
from proxy.api.dispatch import services_of
from proxy.api.http_io import parse_json, read_body
from proxy.context import Services
from proxy.errors import BadRequest, NotFound, PayloadTooLarge, UpstreamFailure
from proxy.lanes.planner import Decision, Lane
from proxy.ops import accounting
from proxy.ops.log_context import LogContext

STATEFUL = (
    "/v1/assistants", "/v1/threads", "/v1/vector_stores", "/v1/fine_tuning", "/v1/fine-tunes",
    "/v1/uploads", "/v1/conversations", "/v1/containers", "/v1/evals", "/v1/realtime",
    "/v1/organization", "/v1/chatkit", "/v1/videos", "/v1/vector-stores",
)  # fmt: skip
LANE = "passthrough"
# JSON answers up to this size are also read for their usage (the routing log's cost).
_METER_BYTES = 1 << 20


async def forward(request: Request, ctx: LogContext) -> Response:
    services = services_of(request)
    path = request.url.path
    config = services.settings.passthrough
    if request.method != "POST" or path not in config.allow:
        refused = next((p for p in STATEFUL if path == p or path.startswith(p + "/")), None)
        if refused is not None:
            raise NotFound(
                f"costroute does not proxy {refused}: it is a stateful provider resource, and "
                "under one shared provider key one caller could read another's data."
            )
        raise NotFound(f"Unknown request URL: {request.method} {path}.")
    ctx.endpoint = path
    content_type = request.headers.get("content-type", "")
    limit = config.max_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
    if "multipart/form-data" in content_type:
        provider = _default(services, "a multipart upload")
        body: bytes | AsyncIterator[bytes] = _capped(request, limit)
        upstream_model = ""
    else:
        raw = await read_body(request, limit, float(services.settings.server.client_timeout))
        payload = parse_json(raw)
        if not isinstance(payload, dict):
            raise BadRequest("The request body must be a JSON object.")
        provider, upstream_model = _route(services, payload.get("model"))
        if upstream_model and payload.get("model") != upstream_model:
            payload["model"] = upstream_model
            raw = orjson.dumps(payload)
        body = raw
    ctx.provider = provider
    ctx.lane, ctx.reason = LANE, f"passed through to {provider}"
    adapter = services.chat.get(provider)
    if not isinstance(adapter, PassthroughAdapter):
        raise BadRequest(f"The provider {provider} does not serve {path}.", param="model")
    prefix = path.removeprefix("/v1")
    started = time.perf_counter()
    try:
        upstream: UpstreamResponse = await adapter.forward(
            prefix, body, content_type=content_type, accept=request.headers.get("accept")
        )
    except AdapterError as error:
        raise UpstreamFailure(error) from None
    decision = Decision(Lane.REALTIME, provider, upstream_model or "", ctx.reason)
    headers = {"x-request-id": ctx.request_id, "x-costroute-lane": LANE}
    kind = upstream.headers.get("content-type", "application/octet-stream")
    return StreamingResponse(
        _relay(services, ctx, decision, upstream, started),
        status_code=upstream.status,
        media_type=kind,
        headers=headers,
    )


def _default(services: Services, what: str) -> str:
    provider = services.settings.passthrough.default_provider
    if provider is None:
        raise BadRequest(
            f"costroute routes {what} to [passthrough] default_provider, which is not set."
        )
    return provider


def _route(services: Services, model: Any) -> tuple[str, str]:
    """(provider, upstream model): the configured model's, else the default provider's
    with the model as given."""
    if isinstance(model, str) and model in services.settings.models:
        return services.settings.models[model].provider, services.settings.upstream_model(model)
    if services.settings.passthrough.default_provider is None:
        raise BadRequest(
            f"The model `{model}` is not configured on this proxy.",
            param="model",
            code="model_not_found",
        )
    return _default(services, "this model"), str(model or "")


async def _capped(request: Request, limit: int) -> AsyncIterator[bytes]:
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            # The upstream request is cut short; the provider answers nothing usable.
            raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
        yield chunk


async def _relay(
    services: Services,
    ctx: LogContext,
    decision: Decision,
    upstream: UpstreamResponse,
    started: float,
) -> AsyncIterator[bytes]:
    """The provider's answer, streamed; JSON answers are also read for their usage."""
    kept: list[bytes] | None = [] if "json" in upstream.headers.get("content-type", "") else None
    size = 0
    status, code = upstream.status, None
    try:
        async for chunk in upstream.chunks():
            if kept is not None:
                size += len(chunk)
                kept = kept if size <= _METER_BYTES else None
                if kept is not None:
                    kept.append(chunk)
            yield chunk
    except AdapterError as error:
        status, code = 502, error.code
    except BaseException:
        status, code = 499, "client_closed_request"
        raise
    finally:
        ctx.upstream_ms = (time.perf_counter() - started) * 1000.0
        await upstream.close()
        payload = _parsed(kept)
        if status < 400:
            accounting.record_success(services, ctx, decision, lane=LANE, payload=payload, notes={})
        else:
            accounting.record_failure(services, ctx, status=status, code=code or _code(payload))


def _code(payload: dict[str, Any] | None) -> str | None:
    inner = payload.get("error") if payload else None
    found = inner.get("code") if isinstance(inner, dict) else None
    return found if isinstance(found, str) else None


def _parsed(kept: list[bytes] | None) -> dict[str, Any] | None:
    if not kept:
        return None
    try:
        parsed = orjson.loads(b"".join(kept))
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None
