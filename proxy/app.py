"""Building the Starlette application and the services behind it.

``create_app(settings, ...)`` returns an app whose lifespan opens the database, builds one
pooled adapter per configured provider, and starts the background writers and loops.
Every handler is wrapped by ``_endpoint``: authenticate, run, and on failure render the
OpenAI error envelope and write the routing-log row.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from adapters.base import BatchAdapter, ChatAdapter
from adapters.clock import Clock, SystemClock
from adapters.deepseek import DeepSeekAdapter
from adapters.gemini_cache_manager import CacheManager
from adapters.http import PoolOptions, make_client, make_upstream
from adapters.openai import OpenAIAdapter
from adapters.openai_batch import OpenAIBatchAdapter
from proxy import accounting, endpoints, openapi
from proxy.admin import admin_routes
from proxy.auth import Authenticator
from proxy.context import Services
from proxy.errors import NotFound, ProxyError, render
from proxy.gc_tuning import tune_for_serving
from proxy.gemini_wiring import CacheMaintenance, build_gemini_adapter
from proxy.http_io import LogContext
from proxy.metrics import Metrics
from proxy.pricing import Pricer
from proxy.routelog import RouteLog
from proxy.scheduler import Scheduler
from proxy.server_protocol import HeaderLimit
from proxy.settings import Settings, resolve_client_keys, resolve_provider_key
from proxy.store.db import Database
from proxy.tickets import admin_flush_route, ticket_routes

log = logging.getLogger(__name__)

Handler = Callable[[Request, LogContext], Awaitable[Response]]


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    environ: Mapping[str, str] | None = None,
    transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
    tune_gc: bool = False,
) -> Starlette:
    """``transports`` replaces a provider's aiohttp pool (by provider name) in tests.
    ``tune_gc`` (``costroute serve``): the collector settings of ``proxy.gc_tuning``,
    applied once start-up is done; process-wide, so not for apps made inside tests."""
    authenticator = Authenticator(resolve_client_keys(settings, environ))
    provider_keys = {
        name: resolve_provider_key(name, provider, environ)
        for name, provider in settings.providers.items()
    }

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        db = await Database.open(settings.store.path)
        routelog = RouteLog(db)
        services = Services(
            settings=settings, db=db, clock=clock or SystemClock(), routelog=routelog
        )
        pricer = Pricer.from_settings(settings)
        services.extras["auth"] = authenticator
        services.extras["pricer"] = pricer
        services.extras["metrics"] = Metrics.from_settings(settings)
        services.chat, cache_managers = build_chat_adapters(
            settings, provider_keys, transports or {}, db=db, clock=services.clock, pricer=pricer
        )
        services.batch = build_batch_adapters(settings, provider_keys, transports or {})
        maintenance = CacheMaintenance(cache_managers)
        services.extras["cache_maintenance"] = maintenance
        scheduler = Scheduler(services, environ=environ)
        app.state.services = services
        routelog.start()
        await maintenance.reconcile()
        maintenance.start()
        await scheduler.start()
        if tune_gc:
            tune_for_serving()
        try:
            yield
        finally:
            await scheduler.stop()
            await maintenance.stop()
            await routelog.stop()
            for adapter in services.chat.values():
                await adapter.aclose()
            for batch_adapter in services.batch.values():
                await batch_adapter.aclose()
            await db.close()

    app = Starlette(
        routes=_routes(),
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_exception, Exception: _unexpected},
        middleware=[Middleware(HeaderLimit, max_bytes=settings.server.max_header_bytes)],
    )
    return app


def build_chat_adapters(
    settings: Settings,
    keys: Mapping[str, str | None],
    transports: Mapping[str, httpx.AsyncBaseTransport],
    *,
    db: Database,
    clock: Clock,
    pricer: Pricer,
) -> tuple[dict[str, ChatAdapter], list[CacheManager]]:
    adapters: dict[str, ChatAdapter] = {}
    managers: list[CacheManager] = []
    server = settings.server
    for name, provider in settings.providers.items():
        pool: PoolOptions = {
            "max_connections": provider.max_connections,
            "timeout": float(server.upstream_timeout),
            "connect_timeout": float(server.connect_timeout),
            "transport": transports.get(name),
        }
        if provider.type == "openai":
            adapters[name] = OpenAIAdapter(
                make_upstream(provider.base_url, **pool),
                api_key=keys[name],
                max_response_bytes=server.max_upstream_response_bytes,
                flex_timeout=float(server.flex_timeout),
            )
        elif provider.type == "deepseek":
            adapters[name] = DeepSeekAdapter(
                make_upstream(provider.base_url, **pool),
                api_key=keys[name],
                max_response_bytes=server.max_upstream_response_bytes,
            )
        else:
            client = make_client(provider.base_url, **pool)
            adapters[name], manager = build_gemini_adapter(
                settings, name, client, keys[name], db=db, clock=clock, pricer=pricer
            )
            managers.append(manager)
    return adapters, managers


def build_batch_adapters(
    settings: Settings,
    keys: Mapping[str, str | None],
    transports: Mapping[str, httpx.AsyncBaseTransport],
) -> dict[str, BatchAdapter]:
    """A Files + Batch API client per OpenAI provider (DeepSeek has no batch lane; Gemini
    requests are served in real time). Its own pool: uploads are long, and must never
    hold connections the real-time lane needs."""
    adapters: dict[str, BatchAdapter] = {}
    for name, provider in settings.providers.items():
        if provider.type != "openai":
            continue
        client = make_client(
            provider.base_url,
            max_connections=16,
            timeout=float(settings.server.upstream_timeout),
            connect_timeout=float(settings.server.connect_timeout),
            transport=transports.get(name),
        )
        adapters[name] = OpenAIBatchAdapter(client, api_key=keys[name])
    return adapters


def _endpoint(
    name: str, handler: Handler, *, log_route: bool = True
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        ctx = LogContext(endpoint=name)
        services: Services = request.app.state.services
        try:
            caller = services.extras["auth"].authenticate(request.headers.get("authorization"))
            request.state.caller = caller
            ctx.key_name = caller.name
            return await handler(request, ctx)
        except ProxyError as exc:
            if log_route:
                accounting.record_failure(services, ctx, status=exc.status, code=exc.code)
            return render(exc, extra_headers={"x-request-id": ctx.request_id})
        except Exception:
            log.exception("unexpected error in %s (request %s)", name, ctx.request_id)
            failure = ProxyError("The proxy hit an unexpected error; it has been logged.")
            if log_route:
                accounting.record_failure(services, ctx, status=500, code=failure.code)
            return render(failure, extra_headers={"x-request-id": ctx.request_id})

    return endpoint


def _plain_endpoint(
    name: str, handler: Callable[[Request], Awaitable[Response]]
) -> Callable[[Request], Awaitable[Response]]:
    """Authentication and error rendering for handlers that take only the request."""

    async def with_context(request: Request, ctx: LogContext) -> Response:
        return await handler(request)

    endpoint = _endpoint(name, with_context, log_route=False)
    endpoint.__doc__ = handler.__doc__
    return endpoint


def _routes() -> list[BaseRoute]:
    # Starlette tries routes in order: the request path's own come first.
    return [
        Route(
            "/v1/chat/completions",
            _endpoint("/v1/chat/completions", endpoints.chat_completions),
            methods=["POST"],
        ),
        Route(
            "/v1/embeddings", _endpoint("/v1/embeddings", endpoints.embeddings), methods=["POST"]
        ),
        *ticket_routes(_plain_endpoint),
        admin_flush_route(_plain_endpoint),
        *admin_routes(_plain_endpoint),
        Route("/healthz", endpoints.healthz, methods=["GET"]),
        Route("/metrics", endpoints.metrics, methods=["GET"]),
        Route("/openapi.json", openapi.openapi_json, methods=["GET"]),
        Route(
            "/v1/models",
            _endpoint("/v1/models", endpoints.list_models, log_route=False),
            methods=["GET"],
        ),
        Route(
            "/v1/models/{model:path}",
            _endpoint("/v1/models", endpoints.retrieve_model, log_route=False),
            methods=["GET"],
        ),
    ]


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        error: ProxyError = NotFound(f"Unknown request URL: {request.method} {request.url.path}.")
    else:
        error = ProxyError(exc.detail or "Request failed.")
        error.status = exc.status_code
        error.error_type = "invalid_request_error"
        error.code = "method_not_allowed" if exc.status_code == 405 else None
    return render(error, extra_headers=dict(exc.headers or {}))


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s", request.url.path, exc_info=exc)
    return render(ProxyError("The proxy hit an unexpected error; it has been logged."))
