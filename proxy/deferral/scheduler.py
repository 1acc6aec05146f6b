"""The deferral queue's background work. Each step is a ``*_once`` method that reads the
time from ``services.clock`` (tests drive them with a ``ManualClock``, no sleeping);
``start()`` runs them in loops.

- ``flush_once``: submit due groups of queued tickets as provider batches
  (``proxy.deferral.flusher``).
- ``poll_once``: retrieve due batches with backoff; on a final status ingest the results
  (``proxy.deferral.ingest``).
- ``guard_once``: tickets near their deadline (and off-peak tickets whose cheaper window
  opened) go ``realtime`` and are sent directly.
- ``webhooks_once``: deliver due webhooks.
- ``reconcile_at_startup``: settle local ``created`` batches after a crash: adopt the ones
  the provider knows by metadata, requeue the tickets of the ones it never saw.

Every loop runs in every replica; the work is claimed, not duplicated (leases on rows
and a named lease for the flush pass; ``proxy/store/README.md`` has the table). With
SQLite there is one process, and its leases are simply always its own.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx

from adapters.base import BatchInfo, BatchLane, BatchStatus
from adapters.errors import AdapterError
from proxy.context import Services
from proxy.deferral import webhooks
from proxy.deferral.coordination import Renewer, new_replica_id
from proxy.deferral.flusher import METADATA_KEY, Flusher, FlushSummary
from proxy.deferral.ingest import ingest
from proxy.deferral.queue import Deferral, send_direct
from proxy.deferral.turnaround import TurnaroundWatch
from proxy.durations import format_duration
from proxy.settings import resolve_webhook_secret
from proxy.store import batches as bstore
from proxy.store import leases
from proxy.store import tickets as tstore
from proxy.store.jobs import Batch, Ticket
from proxy.store.outlook import outlook

log = logging.getLogger(__name__)

# The default of ``store.reconcile_grace``: a ``created`` batch whose holder's lease ran
# out this long ago had its outcome lost (a crash, or a timeout while creating it).
RECONCILE_GRACE_MS = 120_000
_LIST_CAP = 20_000
# How far a provider's clock may be from ours when a batch's creation time is compared
# with the moment its intent was written.
_CLOCK_SKEW_S = 600
_DOWNLOAD_TRIES = 3


class Scheduler:
    def __init__(
        self,
        services: Services,
        *,
        webhook_client: httpx.AsyncClient | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.services = services
        settings = services.settings
        self._secret = resolve_webhook_secret(settings, environ)
        enabled = self._secret is not None and bool(settings.webhooks.allowed_hosts)
        self.deferral = Deferral(services, webhooks_enabled=enabled)
        services.extras["deferral"] = self.deferral
        services.extras["scheduler"] = self
        self.replica: str = services.extras.setdefault("replica", new_replica_id())
        self._webhook_client = webhook_client
        self._own_client = webhook_client is None
        self._inflight: set[str] = set()
        # Recent batch turnarounds: the planner reads ``services.turnaround`` (the
        # watch's ``expected``) when the operator leaves ``batch.learn_turnaround`` on.
        self.turnaround = TurnaroundWatch()
        learn = settings.batch.learn_turnaround
        self.flusher = Flusher(
            services, inflight=self._inflight, alert=self._alert, replica=self.replica,
            first_poll=lambda p: self.turnaround.first_poll(p, 0.0) if learn else 0.0,
        )  # fmt: skip
        self._sending: dict[str, asyncio.Task[None]] = {}
        self._send_limit = asyncio.Semaphore(16)
        self._tasks: list[asyncio.Task[None]] = []
        # Result downloads the provider refused outright, per local batch id.
        self._refused: dict[str, int] = {}
        # Recent monitoring warnings, newest last (also logged).
        self.alerts: collections.deque[str] = collections.deque(maxlen=200)
        if learn:
            services.turnaround = self.turnaround.expected
            services.turnaround_longest = self.turnaround.longest
        # Batches seen running at their last poll: local id -> (provider, submitted Unix s).
        self._running: dict[str, tuple[str, float]] = {}

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self, *, loops: bool = True) -> None:
        """Reconcile, then run ``steps()`` in loops; ``loops=False`` leaves the stepping
        to the caller (``costroute simulate`` runs the same steps on a virtual clock)."""
        self.deferral.start()
        await self.deferral.listen()
        try:
            await self.reconcile_at_startup()
        except Exception:
            log.exception("start-up reconciliation failed; the poll loop will retry it")
        if not loops:
            return
        self._tasks = [
            asyncio.create_task(self._loop(name, every, step), name=f"scheduler-{name}")
            for name, every, step in self.steps()
        ]

    def steps(self, *, wait: bool = False) -> list[tuple[str, float, Callable[[], Awaitable[Any]]]]:
        """The background steps in the order they run, each with its interval in seconds.
        ``wait``: the guard awaits its direct sends (a simulation wants them done within
        the step; the live loop lets them run alongside the next steps)."""
        batch = self.services.settings.batch
        tick = max(0.2, float(min(batch.flush_interval, batch.poll_interval)))
        return [
            ("flush", max(0.2, float(batch.flush_interval)), self.flush_once),
            ("poll", tick, self.poll_once),
            ("guard", tick, lambda: self.guard_once(wait=wait)),
            ("webhooks", tick, self.webhooks_once),
            ("renew", self.services.settings.store.lease / 3, self.renew_once),
        ]

    async def stop(self) -> None:
        sending = list(self._sending)
        tasks = self._tasks + list(self._sending.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if sending:
            # Sends cut short: another replica (or this one, restarted) takes them at once
            # instead of after the lease runs out.
            with contextlib.suppress(Exception):
                await leases.unclaim_realtime(self.services.db, self.replica, sending)
        await self.deferral.stop()
        if self._own_client and self._webhook_client is not None:
            await self._webhook_client.aclose()
            self._webhook_client = None

    async def run(self) -> None:
        """Run the loops until cancelled."""
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    async def _loop(self, name: str, every: float, step: Callable[[], Awaitable[Any]]) -> None:
        while True:
            try:
                await step()
            except Exception:
                log.exception("scheduler %s step failed; retrying", name)
            await asyncio.sleep(every)

    async def next_work_ms(self) -> int | None:
        """The earliest time (Unix ms) at which a step has work, if nothing arrives
        meanwhile (``None``: none until something arrives). ``costroute simulate`` skips
        the ticks before it; the live loops tick regardless."""
        now_ms = self._now_ms()
        ahead = await outlook(self.services.db)
        if ahead.created_batches or ahead.realtime_tickets or self._sending:
            return now_ms
        margin = self.services.settings.batch.deadline_margin * 1000
        times = [
            ahead.next_poll_ms,
            None if ahead.earliest_deadline_ms is None else ahead.earliest_deadline_ms - margin,
            ahead.next_release_ms,
            ahead.next_webhook_ms if self._secret is not None else None,
            await self.flusher.next_due_ms(now_ms),
        ]
        known = [t for t in times if t is not None]
        return min(known) if known else None

    def _now_ms(self) -> int:
        return int(self.services.clock.now() * 1000)

    def _refresh_turnaround(self) -> None:
        now = self.services.clock.now()
        ages: dict[str, list[float]] = {}
        for provider, submitted in self._running.values():
            ages.setdefault(provider, []).append(now - submitted)
        self.turnaround.refresh(now, ages)

    def _alert(self, message: str) -> None:
        log.warning("%s", message)
        self.alerts.append(message)

    # --- reconcile ---------------------------------------------------------------------

    async def reconcile_at_startup(self) -> tuple[int, int]:
        """(adopted, released) local batches that were ``created`` when we stopped. With
        one process on the database (SQLite) every such batch is an orphan; on a shared
        one other replicas may be creating theirs, so the usual grace applies."""
        db = self.services.db
        if not db.shared:
            # The only process on this database: what a killed predecessor held is free.
            await leases.forget_leases(db)
        return await self._reconcile(grace_ms=self.grace_ms if db.shared else 0)

    @property
    def grace_ms(self) -> int:
        return self.services.settings.store.reconcile_grace * 1000

    async def _reconcile(self, *, grace_ms: int) -> tuple[int, int]:
        """Settle ``created`` batches whose holder's lease ran out ``grace_ms`` ago: take
        each over (the epoch grows, so the old holder can no longer record it), list the
        provider's batches, then adopt the one carrying its id or, if the whole list was
        seen without it, requeue its tickets. Nothing is created here."""
        db = self.services.db
        now_ms = self._now_ms()
        lease_ms = self.services.settings.store.lease * 1000
        stale: list[tuple[Batch, bstore.Lease]] = []
        for batch in await bstore.stale_created(db, now_ms=now_ms, grace_ms=grace_ms):
            if batch.id in self._inflight or self.services.batch.get(batch.provider) is None:
                continue
            taken = await bstore.take_over(
                db, batch.id, owner=self.replica, now_ms=now_ms, lease_ms=lease_ms,
                grace_ms=grace_ms,
            )  # fmt: skip
            if taken is not None:
                stale.append((batch, taken))
        adopted = released = 0
        for provider in sorted({b.provider for b, _ in stale}):
            adapter = self.services.batch[provider]
            mine = [(b, lease) for b, lease in stale if b.provider == provider]
            try:
                found, maybe, complete = await _find_by_metadata(adapter, [b for b, _ in mine])
            except AdapterError as exc:
                log.warning(
                    "reconcile %s: cannot list batches (%s); will retry", provider, exc.message
                )
                continue
            for batch, lease in mine:
                info = found.get(batch.id)
                if info is not None:
                    if await bstore.mark_submitted(
                        db, batch.id, provider_batch_id=info.id, input_file_id=info.input_file_id,
                        now_ms=now_ms, next_poll_ms=now_ms, lease=lease,
                    ):  # fmt: skip
                        log.warning("batch %s: adopted provider batch %s", batch.id, info.id)
                        adopted += 1
                elif batch.id in maybe:
                    # A provider batch still running may be this one (its metadata is
                    # readable only once it ends): wait for it rather than requeue tickets
                    # that may be running there. It ends within the provider's window.
                    log.info("batch %s: a running provider batch may be it; waiting", batch.id)
                elif complete:
                    if await bstore.release(
                        db, batch.id, now_ms=now_ms, reason="batch never reached the provider",
                        lease=lease,
                    ):  # fmt: skip
                        log.warning(
                            "batch %s: never reached the provider; tickets requeued", batch.id
                        )
                    released += 1
                else:
                    self._alert(
                        f"batch {batch.id}: not found in the first {_LIST_CAP} provider batches"
                    )
        return adopted, released

    # --- poll and ingest ---------------------------------------------------------------

    async def poll_once(self) -> int:
        """Poll due batches; returns how many answered. Each batch is leased to this
        replica for its poll (and its ingest, renewed meanwhile), so replicas polling
        together split the batches instead of polling (or ingesting) one twice."""
        db = self.services.db
        await self._reconcile(grace_ms=self.grace_ms)
        lease_ms = self.services.settings.store.lease * 1000
        answered = 0
        while True:
            claimed = await bstore.claim_polls(
                db, owner=self.replica, now_ms=self._now_ms(), lease_ms=lease_ms
            )
            if not claimed:
                self._refresh_turnaround()
                return answered
            for batch in claimed:
                if await self._poll_one(batch, bstore.Lease(self.replica, batch.epoch)):
                    answered += 1

    async def _poll_one(self, batch: Batch, lease: bstore.Lease) -> bool:
        db, batch_cfg = self.services.db, self.services.settings.batch
        now_ms = self._now_ms()
        adapter = self.services.batch.get(batch.provider)
        if adapter is None or batch.provider_batch_id is None:
            # Not ours to poll (a provider since unconfigured): look again much later.
            await bstore.record_poll(
                db, batch.id, next_poll_ms=now_ms + 3600_000, poll_failures=batch.poll_failures,
                lease=lease,
            )  # fmt: skip
            return False
        try:
            info = await adapter.retrieve(batch.provider_batch_id)
        except AdapterError as exc:
            failures = batch.poll_failures + 1
            delay = min(batch_cfg.poll_interval * 2**failures, 3600)
            await bstore.record_poll(
                db, batch.id, next_poll_ms=now_ms + delay * 1000, poll_failures=failures,
                lease=lease,
            )  # fmt: skip
            log.warning("batch %s: poll failed (%s); next in %ss", batch.id, exc.message, delay)
            return False
        submitted_s = (batch.submitted_ms or batch.created_ms) / 1000
        if info.status.final:
            self._running.pop(batch.id, None)
            if info.status in (BatchStatus.COMPLETED, BatchStatus.EXPIRED):
                # An expired batch ran the whole window: slow, and worth knowing.
                now_s = now_ms / 1000
                self.turnaround.finished(batch.provider, now_s, now_s - submitted_s)
            await self._ingest(batch, info, lease)
            return True
        self._running[batch.id] = (batch.provider, submitted_s)
        age_s = (now_ms - (batch.submitted_ms or batch.created_ms)) / 1000
        if age_s > batch_cfg.stuck_after:
            self._alert(
                f"batch {batch.id} ({info.id}) is {info.status} after {format_duration(age_s)} "
                f"(> batch.stuck_after {format_duration(batch_cfg.stuck_after)})"
            )
        # Poll young batches often and old ones less: most finish well inside 24 h.
        interval = max(batch_cfg.poll_interval, min(age_s / 10, batch_cfg.poll_interval * 10))
        if batch_cfg.learn_turnaround:  # and not before any recent batch ended
            interval = max(interval, self.turnaround.first_poll(batch.provider, age_s))
        await bstore.record_poll(
            db, batch.id, next_poll_ms=now_ms + int(interval * 1000), poll_failures=0,
            completed=info.completed, failed=info.failed, lease=lease,
        )  # fmt: skip
        return True

    async def _ingest(self, batch: Batch, info: BatchInfo, lease: bstore.Lease) -> None:
        # A result file the provider refuses outright (gone, expired) is retried a few
        # times, then given up: its tickets go back to the queue instead of waiting on it.
        give_up = self._refused.get(batch.id, 0) >= _DOWNLOAD_TRIES
        db, ttl_s = self.services.db, self.services.settings.store.lease

        async def renew() -> bool:
            return await bstore.renew(
                db, batch.id, lease, now_ms=self._now_ms(), lease_ms=ttl_s * 1000
            )

        try:
            async with Renewer(renew, ttl_s, name=f"ingest {batch.id}"):
                result = await ingest(
                    self.services, batch, info, read_files=not give_up, lease=lease
                )
        except AdapterError as exc:
            if not exc.retryable:
                self._refused[batch.id] = self._refused.get(batch.id, 0) + 1
            delay = self.services.settings.batch.poll_interval * 1000
            await bstore.record_poll(
                self.services.db,
                batch.id,
                next_poll_ms=self._now_ms() + delay,
                poll_failures=batch.poll_failures + 1,
                lease=lease,
            )
            log.warning("batch %s: result download failed (%s); will retry", batch.id, exc.message)
            return
        self._refused.pop(batch.id, None)
        if give_up:
            self._alert(f"batch {batch.id} ({info.id}): results unreadable; tickets requeued")
        batch_cfg = self.services.settings.batch
        if result.capacity_refusal:
            hold = max(batch_cfg.max_wait, 60) * 1000
            self.flusher.hold(batch.provider, batch.model, self._now_ms() + hold)
        if result.failure_rate > batch_cfg.alert_failure_rate:
            self._alert(
                f"batch {batch.id} ({info.id}) {info.status}: {result.failure_rate:.0%} of its "
                f"lines failed (> batch.alert_failure_rate {batch_cfg.alert_failure_rate:.0%})"
            )

    # --- guard and direct sends --------------------------------------------------------

    async def guard_once(self, *, wait: bool = True) -> list[str]:
        """Escalate tickets near their deadline (and off-peak tickets whose window opened)
        to a direct send; with ``wait`` the sends are awaited (tests)."""
        margin = self.services.settings.batch.deadline_margin * 1000
        moved = await tstore.escalate_due(self.services.db, now_ms=self._now_ms(), margin_ms=margin)
        for ticket, reason in moved:
            log.warning(
                "ticket %s (%s, was %s): %s", ticket.id, ticket.model, ticket.status, reason
            )
        lease_ms = self.services.settings.store.lease * 1000
        rows = await leases.claim_realtime(
            self.services.db, self.replica, now_ms=self._now_ms(), ttl_ms=lease_ms, limit=200
        )
        tasks: list[asyncio.Task[None]] = []
        for ticket, body in rows:
            if ticket.id not in self._sending:
                task = asyncio.create_task(self._send_one(ticket, body))
                self._sending[ticket.id] = task
                # A callback, not ``finally``: a task cancelled before it ran has none.
                task.add_done_callback(functools.partial(self._sent, ticket.id))
                tasks.append(task)
        if wait and tasks:
            await asyncio.gather(*tasks)
        return [ticket.id for ticket, _ in moved]

    @property
    def sending(self) -> list[asyncio.Task[None]]:
        """The direct sends in flight (a simulation waits for them between steps)."""
        return list(self._sending.values())

    def _sent(self, ticket_id: str, _: asyncio.Task[None]) -> None:
        self._sending.pop(ticket_id, None)

    async def _send_one(self, ticket: Ticket, body: bytes) -> None:
        try:
            async with self._send_limit:
                await send_direct(self.services, ticket, body)
        except Exception:
            log.exception("ticket %s: direct send crashed; it will be retried", ticket.id)
            await leases.unclaim_realtime(self.services.db, self.replica, [ticket.id])

    async def renew_once(self) -> None:
        """Keep the leases of the tickets this replica is sending right now."""
        if self._sending:
            await leases.renew_realtime(
                self.services.db, self.replica, list(self._sending), now_ms=self._now_ms(),
                ttl_ms=self.services.settings.store.lease * 1000,
            )  # fmt: skip

    # --- webhooks ----------------------------------------------------------------------

    async def webhooks_once(self) -> int:
        """Attempt every due delivery; returns how many succeeded."""
        if self._secret is None:
            return 0
        if self._webhook_client is None:
            self._webhook_client = webhooks.client(self.services.settings.webhooks)
        return await webhooks.deliver_due(self.services, self._webhook_client, self._secret)

    async def flush_once(self, *, force: bool = False) -> FlushSummary:
        return await self.flusher.flush(force=force)

    async def flush_now(self) -> FlushSummary:
        """``POST /admin/flush`` and ``costroute flush``: every due-or-not group now."""
        return await self.flush_once(force=True)


async def _find_by_metadata(
    adapter: BatchLane, wanted: list[Batch]
) -> tuple[dict[str, BatchInfo], set[str], bool]:
    """Provider batches whose metadata names one of ``wanted`` (by local id); the local
    ids that a batch whose metadata the provider cannot tell yet may be
    (``BatchInfo.metadata_pending``); and whether the whole list was seen (so a batch
    found neither way truly never reached the provider)."""
    found: dict[str, BatchInfo] = {}
    maybe: set[str] = set()
    ids = {batch.id for batch in wanted}
    since = min(batch.created_ms for batch in wanted) / 1000 - _CLOCK_SKEW_S
    seen = 0
    async for info in adapter.list(since=since):
        local = info.metadata.get(METADATA_KEY)
        if local in ids:
            found[local] = info
            if len(found) == len(ids):
                return found, maybe - set(found), True
        elif info.metadata_pending:
            maybe.update(b.id for b in wanted if could_be(info, b))
        seen += 1
        if seen >= _LIST_CAP:
            return found, maybe - set(found), False
    return found, maybe - set(found), True


def could_be(info: BatchInfo, batch: Batch) -> bool:
    """Whether a provider batch of unknown metadata may be local ``batch``: not if it was
    created well before the batch's intent was written, nor if it holds more items than
    the batch has lines (a lane may leave items out, never add any)."""
    if info.created_at and info.created_at < batch.created_ms / 1000 - _CLOCK_SKEW_S:
        return False
    return not (info.total and info.total > batch.line_count)


async def flush_now(
    services: Services, *, environ: Mapping[str, str] | None = None
) -> FlushSummary:
    """Flush through the running scheduler, or a temporary one (the offline CLI)."""
    found = services.extras.get("scheduler")
    if isinstance(found, Scheduler):
        return await found.flush_now()
    scheduler = Scheduler(services, environ=environ)
    await scheduler._reconcile(grace_ms=RECONCILE_GRACE_MS)
    return await scheduler.flush_now()
