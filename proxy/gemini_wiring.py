"""Building Gemini adapters from the settings: the adapter, its cache manager (with the
SQLite registry and prices from the pricer), and the periodic cache maintenance."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import httpx

from adapters.clock import Clock
from adapters.gemini import GeminiAdapter
from adapters.gemini_cache import CacheMode, CacheModel, CachePolicy, CachePrices
from adapters.gemini_cache_manager import CacheManager
from proxy.pricing import Pricer
from proxy.settings import Settings
from proxy.store.db import Database
from proxy.store.gemini_caches import SqliteCacheRegistry

log = logging.getLogger(__name__)

# How often idle caches are deleted and used ones have their TTL extended.
MAINTENANCE_INTERVAL = 60.0


def build_gemini_adapter(
    settings: Settings,
    provider: str,
    client: httpx.AsyncClient,
    api_key: str | None,
    *,
    db: Database,
    clock: Clock,
    pricer: Pricer,
) -> tuple[GeminiAdapter, CacheManager]:
    if api_key is None:
        raise ValueError(f"providers.{provider}: Gemini needs api_key_env")
    cache = settings.cache
    policy = CachePolicy(
        mode=CacheMode(cache.mode),
        min_repeats=cache.min_repeats,
        window_s=cache.window,
        ttl_s=cache.ttl,
        idle_delete_s=cache.idle_delete,
    )
    models: dict[str, CacheModel] = {}
    for name, model in settings.models.items():
        if model.provider != provider:
            continue
        upstream = model.upstream_model or name
        price = pricer.model_price("gemini", upstream)
        prices = None
        if price is not None:
            prices = CachePrices(
                input=price.input,
                cached_input=price.input if price.cached_input is None else price.cached_input,
                storage_per_hour=price.cache_storage_per_hour,
            )
        models[upstream] = CacheModel(min_tokens=model.cache_min_tokens, prices=prices)
    manager = CacheManager(
        client,
        api_key=api_key,
        registry=SqliteCacheRegistry(db),
        policy=policy,
        models=models,
        clock=clock,
    )
    adapter = GeminiAdapter(
        client,
        api_key=api_key,
        cache=manager,
        clock=clock,
        max_response_bytes=settings.server.max_upstream_response_bytes,
    )
    return adapter, manager


class CacheMaintenance:
    """Runs ``CacheManager.maintain`` for every Gemini adapter every minute."""

    def __init__(self, managers: list[CacheManager]) -> None:
        self._managers = managers
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._managers and self._task is None:
            self._task = asyncio.create_task(self._run(), name="gemini-cache-maintenance")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def reconcile(self) -> None:
        """At start-up: adopt caches a crash left out of the registry."""
        for manager in self._managers:
            try:
                await manager.reconcile()
            except Exception:
                log.exception("Gemini cache reconciliation failed; continuing without it")

    async def run_once(self) -> None:
        for manager in self._managers:
            try:
                await manager.maintain()
            except Exception:
                log.exception("Gemini cache maintenance failed; will retry")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(MAINTENANCE_INTERVAL)
            await self.run_once()
