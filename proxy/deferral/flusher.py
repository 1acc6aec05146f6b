"""Flushing queued batch-lane tickets into provider batch jobs.

Queued tickets are grouped by (provider, upstream model, endpoint), since a provider batch
file holds one model. A group is due when it holds ``batch.flush_lines`` tickets, when its
oldest ticket has waited ``batch.max_wait``, when a deadline leaves no more room than
``batch.min_tolerance`` (once the provider's batches are known, what one needs instead:
its longest recent turnaround, the poll interval and ``batch.deadline_margin``), or when
a flush is forced. A due group is held
while its model
(or, with ``batch_limit_scope = "provider"``, its provider) has ``max_active_batches`` live
batches (unless a deadline needs it: then a further batch beats the deadline guard's full
price), while the model's ``enqueued_token_budget`` is used up, or for a while after the
provider refused a batch for its token limit. A forced flush means "send everything now":
a group it found held stays due (its tickets queued before the force) and goes at the
first flush tick after its limit frees, not at its next ``max_wait``.

Each batch is claimed into a local ``created`` row first (``proxy.store.batches.claim``),
then its items are streamed from the store into the provider's ``BatchLane.submit`` with
the local id in its metadata, so a crash at any point is settled by reconciliation, never
by a second submission.

Several replicas: one flush pass runs at a time, under the ``flush`` lease (the limits on
live batches and enqueued tokens are decisions about all of them), and the claim checks
it is still held. The batch row is leased to this replica while it is uploaded and
created; the lease is renewed meanwhile, the create call starts only while the lease can
still be trusted, and if the row was taken over anyway (this process stalled) the
provider batch it created is cancelled instead of recorded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from adapters.base import BATCH_METADATA_KEY, BatchLane, BatchNotCreated
from adapters.errors import AdapterError
from proxy.context import Services
from proxy.deferral.coordination import Renewer, hold
from proxy.durations import format_duration
from proxy.store import batches as bstore
from proxy.store import leases
from proxy.store import tickets as tstore
from proxy.store.jobs import Batch, new_batch_id

log = logging.getLogger(__name__)

METADATA_KEY = BATCH_METADATA_KEY
# Why a group is due when its earliest deadline leaves no more room than min_tolerance.
URGENT = "a deadline needs it"


@dataclass(frozen=True, slots=True)
class FlushSummary:
    batches: tuple[str, ...] = ()
    tickets: int = 0
    held: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "object": "flush",
            "batches": list(self.batches),
            "tickets": self.tickets,
            "held": list(self.held),
            "failed": list(self.failed),
        }


class Flusher:
    def __init__(
        self,
        services: Services,
        *,
        inflight: set[str],
        alert: Callable[[str], None],
        replica: str = "local",
        first_poll: Callable[[str], float] = lambda _provider: 0.0,
    ) -> None:
        self.services = services
        self.replica = replica
        # Seconds before a new batch of a provider is worth its first poll (the
        # scheduler's learnt turnaround; 0: poll_interval alone decides).
        self._first_poll = first_poll
        # Local batch ids being uploaded or created right now: reconciliation skips them.
        self._inflight = inflight
        self._alert = alert
        self._lock = asyncio.Lock()
        # (provider, upstream model) -> Unix ms before which the group is held.
        self.cooldown: dict[tuple[str, str], int] = {}
        # When the last forced flush ran: groups whose oldest ticket is older are due.
        # In memory only: after a restart such a group waits for its usual trigger.
        self._forced_ms: int | None = None

    def hold(self, provider: str, model: str, until_ms: int) -> None:
        self.cooldown[(provider, model)] = until_ms

    def _now_ms(self) -> int:
        return int(self.services.clock.now() * 1000)

    async def flush(self, *, force: bool = False) -> FlushSummary:
        store = self.services.settings.store
        async with (
            self._lock,
            hold(
                self.services.db,
                "flush",
                self.replica,
                self.services.clock,
                ttl_s=store.lease,
                # A forced flush (admin, CLI) waits for another replica's pass to end.
                wait_s=store.lease if force else 0.0,
            ) as held,
        ):
            if held is None:
                return FlushSummary(held=("another replica is flushing",))
            return await self._flush(force, held[0])

    async def _flush(self, force: bool, fence: leases.Held | None = None) -> FlushSummary:
        db, settings = self.services.db, self.services.settings
        now_ms = self._now_ms()
        if force:
            self._forced_ms = now_ms
        await self._watch_queue(now_ms)
        created: list[str] = []
        held: list[str] = []
        failed: list[str] = []
        count = 0
        skip: set[tuple[str, str, str]] = set()
        while True:
            picked = None
            live = await bstore.live_by_model(db)
            for group in await bstore.queued_groups(db):
                key = (group.provider, group.model, group.endpoint)
                due = self._due(group, now_ms, force)
                if key in skip or due is None:
                    continue
                skip_reason = await self._blocked(group, live, now_ms, urgent=due == URGENT)
                if skip_reason is not None:
                    held.append(f"{group.model} {group.endpoint}: {skip_reason}")
                    skip.add(key)
                    continue
                picked = group
                break
            if picked is None:
                break
            key = (picked.provider, picked.model, picked.endpoint)
            room, first = await self._token_room(picked.provider, picked.model)
            lane = self.services.batch[picked.provider]
            limits = lane.limits
            async with db.bulk():  # one claim moves up to 50,000 ticket rows
                batch = await bstore.claim(
                    db,
                    batch_id=new_batch_id(),
                    group=picked,
                    now_ms=now_ms,
                    max_lines=min(settings.batch.max_lines, limits.max_items),
                    max_bytes=min(settings.batch.max_bytes, limits.max_bytes),
                    line_overhead=limits.item_overhead + len(picked.endpoint.encode()),
                    token_room=room,
                    first_always=first,
                    owner=self.replica,
                    lease_ms=settings.store.lease * 1000,
                    fence=fence,
                )
            if batch is None:
                held.append(f"{picked.model} {picked.endpoint}: waiting: enqueued_token_budget")
                skip.add(key)
                continue
            log.info(
                "batch %s: %d %s tickets for %s (%s)",
                batch.id, batch.line_count, picked.endpoint, picked.model,
                self._due(picked, now_ms, force),
            )  # fmt: skip
            if await self._submit(lane, batch):
                created.append(batch.id)
                count += batch.line_count
            else:
                failed.append(batch.id)
                skip.add(key)
        if not held:
            # Everything the forced flush found has gone: later tickets wait as usual.
            self._forced_ms = None
        return FlushSummary(tuple(created), count, tuple(held), tuple(failed))

    def _due(self, group: bstore.Group, now_ms: int, force: bool) -> str | None:
        batch = self.services.settings.batch
        if force:
            return "flush requested"
        if self._forced_ms is not None and group.oldest_ms <= self._forced_ms:
            return "flush requested earlier; its limit has freed"
        if group.count >= batch.flush_lines:
            return f"{group.count} tickets >= batch.flush_lines"
        if now_ms - group.oldest_ms >= batch.max_wait * 1000:
            return f"oldest ticket waited batch.max_wait {format_duration(batch.max_wait)}"
        if group.earliest_deadline_ms - now_ms <= self._room_ms(group.provider):
            return URGENT
        return None

    def _room_ms(self, provider: str) -> int:
        """How close a deadline may come before its group must go, whatever holds it:
        ``batch.min_tolerance`` while nothing is known, then what a batch of the
        provider needs (``proxy.deferral.turnaround``). On a slow day a group held
        behind a live batch until only ``min_tolerance`` was left went out in a batch
        that could not be back in time: the guard then paid for its tickets in real
        time and the provider billed the batch as well."""
        batch = self.services.settings.batch
        need = float(batch.min_tolerance)
        learnt = self.services.turnaround_longest.get(provider)
        if learnt is not None:
            # Known, what a batch needs replaces min_tolerance's guess: the longest
            # recent turnaround, the poller's interval at that age, and the guard's
            # margin. (With the guess, a ticket of exactly min_tolerance went out alone
            # at the next tick: thousands of one-ticket Gemini batches a day.)
            polling = min(learnt / 10, batch.poll_interval * 10)
            need = learnt + max(polling, batch.poll_interval) + batch.deadline_margin
        return int((need + batch.flush_interval) * 1000)

    async def next_due_ms(self, now_ms: int) -> int | None:
        """The earliest time (Unix ms) at which ``flush`` would submit something, if
        nothing arrives meanwhile; ``None``: only a finished batch can free what is
        waiting. For a caller that skips idle ticks (``costroute simulate``)."""
        batch = self.services.settings.batch
        live = await bstore.live_by_model(self.services.db)
        found: int | None = None
        for group in await bstore.queued_groups(self.services.db):
            forced = self._forced_ms is not None and group.oldest_ms <= self._forced_ms
            if forced or group.count >= batch.flush_lines:
                at = now_ms
            else:
                room = self._room_ms(group.provider)
                at = min(group.oldest_ms + batch.max_wait * 1000, group.earliest_deadline_ms - room)
            cooldown = self.cooldown.get((group.provider, group.model), 0)
            if cooldown > max(at, now_ms):
                at = cooldown  # held until then, whatever else holds it
            elif at <= now_ms and await self._blocked(
                group, live, now_ms, urgent=self._due(group, now_ms, False) == URGENT
            ):
                continue  # held by live batches: a poll that ends one frees it
            found = at if found is None else min(found, at)
        return found

    async def _blocked(
        self,
        group: bstore.Group,
        live: dict[tuple[str, str], int],
        now_ms: int,
        *,
        urgent: bool = False,
    ) -> str | None:
        """Why ``group`` must wait, or None. An urgent group (a deadline needs it)
        is not held by ``max_active_batches``: that cap is costroute's own pacing (the
        providers' real limits are the enqueued tokens below), and holding the group
        behind a slow batch only hands its tickets to the deadline guard at full price
        (``costroute simulate`` measured it: a one-hour batch tail escalated a tenth of
        a day's deferred requests)."""
        lane = self.services.batch.get(group.provider)
        if lane is None:
            return f"no batch adapter for provider {group.provider}"
        provider = self.services.settings.providers[group.provider]
        limit = 1 << 30 if urgent else provider.max_active_batches
        if (provider.batch_limit_scope or lane.limits.quota_scope) == "provider":
            used = sum(n for (p, _), n in live.items() if p == group.provider)
            if used >= limit:
                return f"waiting: {group.provider} max_active_batches ({limit}) reached"
        elif live.get((group.provider, group.model), 0) >= limit:
            return f"waiting: {group.model} max_active_batches ({limit}) reached"
        if self.cooldown.get((group.provider, group.model), 0) > now_ms:
            return "waiting: the provider's enqueued-token limit was hit recently"
        room, _ = await self._token_room(group.provider, group.model)
        if room is not None and room <= 0:
            return "waiting: enqueued_token_budget is used by live batches"
        return None

    async def _token_room(self, provider: str, upstream: str) -> tuple[int | None, bool]:
        """(prompt tokens that may still be enqueued or None for no budget, whether
        nothing is in flight, in which case the first ticket goes regardless)."""
        settings = self.services.settings
        budgets = [
            m.enqueued_token_budget
            for name, m in settings.models.items()
            if m.provider == provider
            and settings.upstream_model(name) == upstream
            and m.enqueued_token_budget is not None
        ]
        if not budgets:
            return None, True
        used = await bstore.live_tokens(self.services.db, provider, upstream)
        return min(budgets) - used, used == 0

    async def _submit(self, lane: BatchLane, batch: Batch) -> bool:
        """Submit one claimed batch. Whatever happens, no ticket is lost: a certain
        refusal (``BatchNotCreated``) requeues the tickets; an unknown outcome (a timeout
        or a retryable answer while creating) is left to reconciliation, which looks for
        the batch's metadata upstream before requeueing anything."""
        db, store = self.services.db, self.services.settings.store
        lease = bstore.Lease(self.replica, batch.epoch)
        ttl_ms = store.lease * 1000

        async def renew() -> bool:
            return await bstore.renew(db, batch.id, lease, now_ms=self._now_ms(), lease_ms=ttl_ms)

        self._inflight.add(batch.id)
        try:
            async with Renewer(renew, store.lease, name=batch.id) as renewer:
                info = await lane.submit(
                    _fenced_lines(bstore.lines_of(db, batch.id), renewer, batch.id),
                    endpoint=batch.endpoint,
                    model=batch.model,
                    metadata={METADATA_KEY: batch.id},
                )
        except BatchNotCreated as exc:
            reason = f"submit failed: {exc.message}"
            await bstore.release(db, batch.id, now_ms=self._now_ms(), reason=reason, lease=lease)
            log.warning("batch %s: %s; tickets requeued", batch.id, reason)
            return False
        except (AdapterError, LeaseLost) as exc:
            log.warning("batch %s: create outcome unknown (%s)", batch.id, exc)
            return False
        finally:
            self._inflight.discard(batch.id)
        now_ms = self._now_ms()
        recorded = await bstore.mark_submitted(
            db,
            batch.id,
            provider_batch_id=info.id,
            input_file_id=info.input_file_id,
            now_ms=now_ms,
            next_poll_ms=now_ms
            + int(
                max(self.services.settings.batch.poll_interval, self._first_poll(batch.provider))
                * 1000
            ),
            lease=lease,
        )
        if not recorded:
            await self._cancel_fenced(lane, batch, info.id)
        return recorded

    async def _cancel_fenced(self, lane: BatchLane, batch: Batch, provider_batch_id: str) -> None:
        """This process created ``provider_batch_id`` after losing the batch row to
        another replica (it stalled past its lease): the other replica may already have
        requeued the tickets, so this batch must not run them too."""
        self._alert(
            f"batch {batch.id}: lease lost while creating it; cancelling provider batch "
            f"{provider_batch_id}"
        )
        try:
            await lane.cancel(provider_batch_id)
        except AdapterError as exc:
            self._alert(f"batch {batch.id}: cancelling {provider_batch_id} failed: {exc.message}")

    async def _watch_queue(self, now_ms: int) -> None:
        oldest = await tstore.oldest_queued_ms(self.services.db)
        limit = self.services.settings.batch.alert_queue_age
        if oldest is not None and now_ms - oldest > limit * 1000:
            age = format_duration((now_ms - oldest) // 1000)
            self._alert(f"oldest queued ticket has waited {age} (> batch.alert_queue_age)")


class LeaseLost(Exception):
    """The batch's lease can no longer be trusted: the create call is not started."""


async def _fenced_lines(
    lines: AsyncIterator[tuple[str, bytes]], renewer: Renewer, batch_id: str
) -> AsyncIterator[tuple[str, bytes]]:
    """The batch's lines; after the last one (the lane uploads, then creates) the lease
    must still be trusted for a third of its term, or the create call is not made:
    a replica that takes the batch over waits out the lease and a grace period before it
    looks upstream, so a create started now is over (or visible) by then."""
    async for line in lines:
        yield line
    if not renewer.trusted(renewer.margin):
        raise LeaseLost(f"batch {batch_id}: lease no longer trusted before create")
