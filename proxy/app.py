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
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from adapters import registry
from adapters.base import BatchLane
from adapters.clock import Clock, SystemClock
from adapters.http import PoolOptions
from adapters.parts import CacheSettings, ModelFacts, ModelPrices, ProviderConfig, ProviderParts
from adapters.upkeep import Upkeep
from proxy.api import batches, chat, embeddings, files, health, models, passthrough, responses
from proxy.api.admin import admin_routes
from proxy.api.gc_tuning import tune_for_serving
from proxy.api.openapi import document as openapi
from proxy.api.server_protocol import HeaderLimit
from proxy.api.tickets import admin_flush_route, ticket_routes
from proxy.auth import Authenticator
from proxy.context import Services
from proxy.costs.pricing import Pricer
from proxy.deferral.coordination import new_replica_id
from proxy.deferral.scheduler import Scheduler
from proxy.errors import NotFound, ProxyError, render
from proxy.ops import accounting
from proxy.ops.fleet import Fleet
from proxy.ops.log_context import LogContext
from proxy.ops.metrics import Metrics
from proxy.ops.routelog import RouteLog
from proxy.settings import Settings, resolve_client_keys, resolve_provider_key
from proxy.store.db import Database, is_postgres_url
from proxy.store.gemini_caches import StoreCacheRegistry
from proxy.store.sqlite import SqliteDatabase

log = logging.getLogger(__name__)

Handler = Callable[[Request, LogContext], Awaitable[Response]]


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    environ: Mapping[str, str] | None = None,
    transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
    tune_gc: bool = False,
    loops: bool = True,
    inline_store: bool = False,
) -> Starlette:
    """``transports`` replaces a provider's aiohttp pool (by provider name) in tests.
    ``tune_gc`` (``costroute serve``): the collector settings of ``proxy.api.gc_tuning``,
    applied once start-up is done; process-wide, so not for apps made inside tests.
    ``loops=False``: the scheduler's and the providers' background steps are built but not
    run on timers; whoever made the app steps them (``costroute simulate``, on a virtual
    clock, through ``Scheduler.steps()`` and ``Upkeep.run_once()``).
    ``inline_store``: a SQLite store runs its statements on the loop's thread
    (``proxy.store.sqlite``); for a simulation, never for ``serve``."""
    authenticator = Authenticator(resolve_client_keys(settings, environ))
    provider_keys = {
        name: resolve_provider_key(name, provider, environ)
        for name, provider in settings.providers.items()
    }

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        target = settings.store.target(environ)
        db: Database
        if inline_store and not is_postgres_url(str(target)):
            db = await SqliteDatabase.open(target, inline=True)
        else:
            db = await Database.open(target, pool_size=settings.store.pool_size)
        routelog = RouteLog(db)
        services = Services(
            settings=settings, db=db, clock=clock or SystemClock(), routelog=routelog
        )
        pricer = Pricer.from_settings(settings)
        replica = new_replica_id()
        services.extras["replica"] = replica
        fleet = Fleet(services, replica)
        services.extras["fleet"] = fleet
        services.extras["auth"] = authenticator
        services.extras["pricer"] = pricer
        services.extras["metrics"] = Metrics.from_settings(settings)
        parts = build_providers(
            settings, provider_keys, transports or {}, clock=services.clock, pricer=pricer, db=db
        )
        services.chat = {name: part.chat for name, part in parts.items()}
        services.batch = {
            name: part.batch for name, part in parts.items() if part.batch is not None
        }
        maintenance = Upkeep([part.service for part in parts.values() if part.service])
        services.extras["cache_maintenance"] = maintenance
        scheduler = Scheduler(services, environ=environ)
        app.state.services = services
        routelog.start()
        await fleet.start()
        await maintenance.reconcile()
        if loops:
            maintenance.start()
        await scheduler.start(loops=loops)
        if tune_gc:
            tune_for_serving()
        try:
            yield
        finally:
            await scheduler.stop()
            await maintenance.stop()
            await fleet.stop()
            await routelog.stop()
            for adapter in services.chat.values():
                await adapter.aclose()
            for batch_adapter in services.batch.values():
                await batch_adapter.aclose()
            await db.close()

    app = Starlette(
        routes=[*_routes(), *_passthrough_routes(settings)],
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_exception, Exception: _unexpected},
        middleware=[Middleware(HeaderLimit, max_bytes=settings.server.max_header_bytes)],
    )
    return app


def build_providers(
    settings: Settings,
    keys: Mapping[str, str | None],
    transports: Mapping[str, httpx.AsyncBaseTransport],
    *,
    clock: Clock,
    pricer: Pricer | None = None,
    db: Database | None = None,
    only: Callable[[str], bool] | None = None,
) -> dict[str, ProviderParts]:
    """Every configured provider's parts, built through ``adapters.registry``.
    ``only`` filters by provider name; ``transports`` replaces pools in tests."""
    registries = {} if db is None else {"cache": StoreCacheRegistry(db)}
    parts: dict[str, ProviderParts] = {}
    for name in settings.providers:
        if only is not None and not only(name):
            continue
        parts[name] = registry.build(
            provider_config(
                settings,
                name,
                keys.get(name),
                transports.get(name),
                clock=clock,
                pricer=pricer,
                registries=registries,
            )
        )
    return parts


def provider_config(
    settings: Settings,
    name: str,
    api_key: str | None,
    transport: httpx.AsyncBaseTransport | None,
    *,
    clock: Clock,
    pricer: Pricer | None,
    registries: Mapping[str, Any],
) -> ProviderConfig:
    provider = settings.providers[name]
    server = settings.server
    pool: PoolOptions = {
        "max_connections": provider.max_connections,
        "timeout": float(server.upstream_timeout),
        "connect_timeout": float(server.connect_timeout),
        "transport": transport,
    }
    batch_pool: PoolOptions = {**pool, "max_connections": 16}
    models = tuple(
        ModelFacts(
            name=model_name,
            upstream=model.upstream_model or model_name,
            cache_min_tokens=model.cache_min_tokens,
            max_tokens_default=model.max_tokens_default,
        )
        for model_name, model in settings.models.items()
        if model.provider == name
    )

    def prices(upstream: str) -> ModelPrices | None:
        price = None if pricer is None else pricer.model_price(provider.type, upstream)
        if price is None:
            return None
        return ModelPrices(
            price.input, price.cached_input, price.cache_storage_per_hour,
            cache_write=price.cache_write, cache_write_1h=price.cache_write_1h,
            batch_discount=price.batch_discount,
        )  # fmt: skip

    cache = settings.cache
    return ProviderConfig(
        name=name,
        type=provider.type,
        base_url=provider.base_url,
        api_key=api_key,
        clock=clock,
        pool=pool,
        batch_pool=batch_pool,
        max_response_bytes=server.max_upstream_response_bytes,
        flex_timeout=float(server.flex_timeout),
        models=models,
        cache=CacheSettings(
            mode=cache.mode,
            min_repeats=cache.min_repeats,
            window_s=cache.window,
            ttl_s=cache.ttl,
            idle_delete_s=cache.idle_delete,
        ),
        prices=prices,
        registries=registries,
    )


def build_batch_adapters(
    settings: Settings,
    keys: Mapping[str, str | None],
    transports: Mapping[str, httpx.AsyncBaseTransport],
    *,
    clock: Clock | None = None,
) -> dict[str, BatchLane]:
    """The batch adapter of every provider that has a batch lane, and nothing else: for
    work without a running server (``costroute flush``)."""
    batch: dict[str, BatchLane] = {}
    for name in settings.providers:
        config = provider_config(
            settings,
            name,
            keys.get(name),
            transports.get(name),
            clock=clock or SystemClock(),
            pricer=None,
            registries={},
        )
        adapter = registry.build_batch(config)
        if adapter is not None:
            batch[name] = adapter
    return batch


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
            _endpoint("/v1/chat/completions", chat.chat_completions),
            methods=["POST"],
        ),
        Route(
            "/v1/embeddings", _endpoint("/v1/embeddings", embeddings.embeddings), methods=["POST"]
        ),
        Route(
            "/v1/responses",
            _endpoint("/v1/responses", responses.create_response),
            methods=["POST"],
        ),
        *_response_routes(),
        *_file_and_batch_routes(),
        *ticket_routes(_plain_endpoint),
        admin_flush_route(_plain_endpoint),
        *admin_routes(_plain_endpoint),
        Route("/healthz", health.healthz, methods=["GET"]),
        Route("/metrics", health.metrics, methods=["GET"]),
        Route("/openapi.json", openapi.openapi_json, methods=["GET"]),
        Route(
            "/v1/models",
            _endpoint("/v1/models", models.list_models, log_route=False),
            methods=["GET"],
        ),
        Route(
            "/v1/models/{model:path}",
            _endpoint("/v1/models", models.retrieve_model, log_route=False),
            methods=["GET"],
        ),
    ]


def _response_routes() -> list[BaseRoute]:
    """A response id's own routes: reads and housekeeping, not LLM calls, so no row."""
    base = "/v1/responses/{response_id}"
    return [
        Route(base, _endpoint(base, responses.retrieve_response, log_route=False), methods=["GET"]),
        Route(
            base, _endpoint(base, responses.delete_response, log_route=False), methods=["DELETE"]
        ),
        Route(
            base + "/cancel",
            _endpoint(base + "/cancel", responses.cancel_response, log_route=False),
            methods=["POST"],
        ),
        Route(
            base + "/input_items",
            _endpoint(base + "/input_items", responses.list_input_items, log_route=False),
            methods=["GET"],
        ),
    ]


def _passthrough_routes(settings: Settings) -> list[BaseRoute]:
    """The allowed stateless endpoints, forwarded as they are; the stateful ones refused
    with a 404 that says why (any method, any sub-path)."""
    routes: list[BaseRoute] = [
        Route(path, _endpoint(path, passthrough.forward), methods=["POST"])
        for path in settings.passthrough.allow
    ]
    methods = ["GET", "POST", "DELETE", "PUT", "PATCH"]
    for prefix in passthrough.STATEFUL:
        refuse = _endpoint(prefix, passthrough.forward, log_route=False)
        routes += [
            Route(prefix, refuse, methods=methods),
            Route(prefix + "/{rest:path}", refuse, methods=methods),
        ]
    return routes


def _file_and_batch_routes() -> list[BaseRoute]:
    """costroute's own Files and Batch API: housekeeping, not LLM calls (each batch line
    writes its own routing-log rows as a ticket)."""

    def route(path: str, handler: Handler, method: str) -> Route:
        return Route(path, _endpoint(path, handler, log_route=False), methods=[method])

    return [
        route("/v1/files", files.upload, "POST"),
        route("/v1/files", files.list_files, "GET"),
        route("/v1/files/{file_id}", files.retrieve, "GET"),
        route("/v1/files/{file_id}", files.delete, "DELETE"),
        route("/v1/files/{file_id}/content", files.content, "GET"),
        route("/v1/batches", batches.create, "POST"),
        route("/v1/batches", batches.list_batches, "GET"),
        route("/v1/batches/{batch_id}", batches.retrieve, "GET"),
        route("/v1/batches/{batch_id}/cancel", batches.cancel, "POST"),
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
