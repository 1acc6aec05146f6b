"""How one process takes part in the background work of several (one database, many
replicas): its identity, and the renewal that keeps a lease alive while it works.

A lease lives in the database (``proxy.store.leases``, ``proxy.store.batches``); this
module keeps one renewed from a background task and tells its holder how long it may
still trust it. The trust window runs on the local monotonic clock from the moment the
last successful renewal was *sent*: ``trusted_until = sent + ttl - margin``. The
database extended the lease at some point after that, so the holder stops trusting it
before the database lets anyone else take it (River's "trust window"; replicas.md §1.1).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from adapters.clock import Clock
from proxy.store import leases
from proxy.store.db import Database

log = logging.getLogger(__name__)


def new_replica_id() -> str:
    """``host:pid:random``: readable in the leases table, unique across restarts."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Renewer:
    """Renews a lease every third of its ``ttl_s`` until stopped, and answers whether it
    may still be trusted for a while. ``renew()`` returns False once the lease is lost
    (another process took it); errors (the database unreachable) are retried, the trust
    window shrinking meanwhile."""

    def __init__(self, renew: Callable[[], Awaitable[bool]], ttl_s: float, *, name: str) -> None:
        self._renew = renew
        self._ttl = ttl_s
        self._name = name
        self.lost = False
        self._trusted_until = time.monotonic() + ttl_s - self.margin
        self._task: asyncio.Task[None] | None = None

    @property
    def margin(self) -> float:
        return self._ttl / 3

    def trusted(self, for_s: float = 0.0) -> bool:
        """Whether the lease still holds now and for ``for_s`` more seconds."""
        return not self.lost and time.monotonic() + for_s < self._trusted_until

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"renew-{self._name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while not self.lost:
            await asyncio.sleep(self._ttl / 3)
            sent = time.monotonic()
            try:
                ok = await self._renew()
            except Exception as exc:
                log.warning("lease %s: renewal failed (%s); retrying", self._name, exc)
                continue
            if ok:
                self._trusted_until = sent + self._ttl - self.margin
            else:
                log.warning("lease %s: lost to another process", self._name)
                self.lost = True

    async def __aenter__(self) -> Renewer:
        self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()


@contextlib.asynccontextmanager
async def hold(
    db: Database,
    name: str,
    owner: str,
    clock: Clock,
    *,
    ttl_s: float,
    wait_s: float = 0.0,
) -> AsyncIterator[tuple[leases.Held, Renewer] | None]:
    """The named lease for the duration of the block, renewed meanwhile and given up at
    the end; ``None`` if another process holds it (after trying for ``wait_s``)."""
    ttl_ms = int(ttl_s * 1000)

    def now_ms() -> int:
        return int(clock.now() * 1000)

    deadline = time.monotonic() + wait_s
    held = await leases.acquire(db, name, owner, now_ms=now_ms(), ttl_ms=ttl_ms)
    while held is None and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        held = await leases.acquire(db, name, owner, now_ms=now_ms(), ttl_ms=ttl_ms)
    if held is None:
        yield None
        return
    current = held

    async def renew() -> bool:
        return await leases.renew(db, current, now_ms=now_ms(), ttl_ms=ttl_ms)

    renewer = Renewer(renew, ttl_s, name=name)
    try:
        async with renewer:
            yield held, renewer
    finally:
        if not renewer.lost:
            with contextlib.suppress(Exception):
                await leases.give_up(db, held)
