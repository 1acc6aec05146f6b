"""The replicas sharing one database, and read-your-writes for the ops views.

A request's routing-log row is written off the request path (``proxy.ops.routelog``
buffers rows and commits them in groups), so right after a call its row may still sit in
the buffer of the process that served it. An admin listing, report or ops page asks for
every request that finished before it was asked, so before reading it drains the
buffers: its own directly, and, on a shared database, every other live replica's through
a barrier over LISTEN/NOTIFY:

1. the asking replica sends ``costroute_routelog_flush`` with a fresh token;
2. every replica that hears it commits its buffered rows, then answers
   ``costroute_routelog_flushed`` with the token and its id;
3. the asker reads once every replica seen alive (the ``replicas`` table, a heartbeat
   every ``HEARTBEAT_S``) has answered, or after ``BARRIER_S`` (a replica that cannot
   answer within that is dying; what it had buffered dies with it, as it would
   without the barrier).

The real-time path pays nothing for this: the cost is one round of notifications per ops
read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time

from proxy.context import Services
from proxy.store import leases
from proxy.store.db import Database

log = logging.getLogger(__name__)

ASK_CHANNEL = "costroute_routelog_flush"
DONE_CHANNEL = "costroute_routelog_flushed"
HEARTBEAT_S = 2.0
# A replica is counted as live while its last heartbeat is younger than this.
ALIVE_MS = 3 * int(HEARTBEAT_S * 1000)
BARRIER_S = 2.0


class Fleet:
    """This replica's presence in the ``replicas`` table, and the flush barrier."""

    def __init__(self, services: Services, replica: str) -> None:
        self.services = services
        self.replica = replica
        self._started_ms = int(time.time() * 1000)
        self._task: asyncio.Task[None] | None = None
        self._pending: dict[str, tuple[set[str], set[str], asyncio.Event]] = {}
        self._background: set[asyncio.Task[None]] = set()

    @property
    def db(self) -> Database:
        return self.services.db

    def _now_ms(self) -> int:
        return int(self.services.clock.now() * 1000)

    async def start(self) -> None:
        if not self.db.shared:
            return
        await self._beat()
        await self.db.listen(ASK_CHANNEL, self._asked)
        await self.db.listen(DONE_CHANNEL, self._answered)
        self._task = asyncio.create_task(self._run(), name="fleet-heartbeat")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        for task in list(self._background):
            task.cancel()
        with contextlib.suppress(Exception):
            await leases.leave(self.db, self.replica)

    async def _beat(self) -> None:
        await leases.heartbeat(
            self.db, self.replica, now_ms=self._now_ms(), started_ms=self._started_ms
        )

    async def _run(self) -> None:
        beats = 0
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                await self._beat()
                beats += 1
                if beats % 100 == 0:
                    await leases.prune_replicas(
                        self.db, now_ms=self._now_ms(), older_than_ms=24 * 3600 * 1000
                    )
            except Exception as exc:
                log.warning("replica heartbeat failed: %s", exc)

    async def live(self) -> list[str]:
        """Replicas seen alive lately (this one included, once it has started)."""
        return await leases.live_replicas(self.db, now_ms=self._now_ms(), within_ms=ALIVE_MS)

    async def read_your_writes(self) -> list[str]:
        """Commit every routing-log row buffered before now, here and on every live
        replica; returns the replicas that did not answer in time (normally none)."""
        await self.services.routelog.flush()
        if not self.db.shared:
            return []
        others = set(await self.live()) - {self.replica}
        if not others:
            return []
        token = secrets.token_hex(8)
        answered: set[str] = set()
        done = asyncio.Event()
        self._pending[token] = (others, answered, done)
        try:
            await self.db.notify(ASK_CHANNEL, f"{token}:{self.replica}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), BARRIER_S)
        finally:
            del self._pending[token]
        missing = sorted(others - answered)
        if missing:
            log.warning("read-your-writes: no answer from %s", ", ".join(missing))
        return missing

    def _asked(self, payload: str) -> None:
        token, _, asker = payload.partition(":")
        if not token or asker == self.replica:
            return
        task = asyncio.get_running_loop().create_task(self._flush_for(token))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _flush_for(self, token: str) -> None:
        try:
            await self.services.routelog.flush()
            await self.db.notify(DONE_CHANNEL, f"{token}:{self.replica}")
        except Exception as exc:
            log.warning("read-your-writes: could not flush for a peer: %s", exc)

    def _answered(self, payload: str) -> None:
        token, _, replica = payload.partition(":")
        pending = self._pending.get(token)
        if pending is None:
            return
        others, answered, done = pending
        answered.add(replica)
        if others <= answered:
            done.set()


async def read_your_writes(services: Services) -> None:
    """Before an ops read: every request that finished before now is in the store."""
    fleet = services.extras.get("fleet")
    if isinstance(fleet, Fleet):
        await fleet.read_your_writes()
    else:
        await services.routelog.flush()
