"""Runs every provider's background service: ``reconcile`` once at start-up, then
``maintain`` every ``interval`` seconds, each failure logged and retried next time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from adapters.parts import ProviderService

log = logging.getLogger(__name__)

# How often idle caches are deleted and used ones have their TTL extended.
MAINTENANCE_INTERVAL = 60.0


class Upkeep:
    def __init__(
        self, services: Sequence[ProviderService], *, interval: float = MAINTENANCE_INTERVAL
    ) -> None:
        self._services = list(services)
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._services and self._task is None:
            self._task = asyncio.create_task(self._run(), name="provider-upkeep")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def reconcile(self) -> None:
        """At start-up: adopt what a crash left out of the store."""
        for service in self._services:
            try:
                await service.reconcile()
            except Exception:
                log.exception("provider reconciliation failed; continuing without it")

    async def run_once(self) -> None:
        for service in self._services:
            try:
                await service.maintain()
            except Exception:
                log.exception("provider maintenance failed; will retry")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.run_once()
