"""``costroute flush --config PATH``: submit every queued batch group now, without a
running server (the same work as ``POST /admin/flush``)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

import httpx

from adapters.base import BatchLane
from adapters.clock import Clock, SystemClock
from adapters.registry import capabilities
from proxy.app import build_batch_adapters as app_batch_adapters
from proxy.context import Services
from proxy.deferral.flusher import FlushSummary
from proxy.deferral.scheduler import flush_now
from proxy.ops.routelog import RouteLog
from proxy.settings import Settings, load_settings, resolve_provider_key
from proxy.store.db import Database


def build_batch_adapters(
    settings: Settings,
    keys: Mapping[str, str | None],
    transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
) -> dict[str, BatchLane]:
    """The app's batch adapters (one per OpenAI provider); ``transports`` for tests."""
    return app_batch_adapters(settings, keys, transports or {})


async def flush_offline(
    settings: Settings,
    keys: Mapping[str, str | None],
    *,
    clock: Clock | None = None,
    transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
    environ: Mapping[str, str] | None = None,
) -> FlushSummary:
    db = await Database.open(settings.store.target(environ), pool_size=settings.store.pool_size)
    routelog = RouteLog(db)
    routelog.start()
    services = Services(settings=settings, db=db, clock=clock or SystemClock(), routelog=routelog)
    services.batch = build_batch_adapters(settings, keys, transports)
    try:
        return await flush_now(services, environ=environ)
    finally:
        for adapter in services.batch.values():
            await adapter.aclose()
        await routelog.stop()
        await db.close()


def add_parser(sub: Any) -> None:
    p = sub.add_parser("flush", help="submit every queued batch now (admin, offline)")
    p.add_argument("--config", required=True, help="path to the TOML config")
    p.set_defaults(func=run)


async def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    keys = {
        name: resolve_provider_key(name, provider)
        for name, provider in settings.providers.items()
        if capabilities(provider.type).batch
    }
    summary = await flush_offline(settings, keys)
    print(f"flushed {summary.tickets} tickets into {len(summary.batches)} batches")
    for batch_id in summary.batches:
        print(f"  submitted {batch_id}")
    for reason in summary.held:
        print(f"  held: {reason}")
    for batch_id in summary.failed:
        print(f"  not submitted (tickets kept): {batch_id}")
    return 1 if summary.failed else 0
