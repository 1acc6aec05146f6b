"""Running a workload through the real proxy on virtual time.

The app is ``proxy.app.create_app`` with ``loops=False``: everything ``costroute serve``
builds (auth, planner, deferral queue, routing log, provider adapters, scheduler, cache
upkeep), except that nothing runs on a wall-clock timer. The engine owns time instead:

1. It moves the ``VirtualClock`` to the next moment something happens: an arrival (at a
   quantum of ``quantum`` seconds: requests arriving in the same quantum are sent
   together), a due scheduler step, or a retry backoff ending.
2. It sends that moment's arrivals through the app's ASGI interface (in-process,
   ``proxy.simulate.asgi``: every header and body as a client would send them) and
   waits until every task is done or asleep on the virtual clock.
3. It runs the steps that are due, in ``Scheduler.steps()`` order and at its intervals
   (flush, poll and ingest, deadline guard, webhooks), plus the providers' upkeep every
   ``MAINTENANCE_INTERVAL``, exactly as the live loops would; the guard's direct sends run
   as tasks, as live.

It stops once every request has ended and every provider batch is closed (a batch whose
tickets the deadline guard took over is still billed when it ends), or at the horizon:
the last arrival plus the longest tolerance plus a day. Nothing sleeps on the wall clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette

from adapters.upkeep import MAINTENANCE_INTERVAL, Upkeep
from proxy.app import create_app
from proxy.context import Services
from proxy.deferral.scheduler import Scheduler
from proxy.lanes.tolerance import HEADER as TOLERANCE_HEADER
from proxy.settings import Settings
from proxy.simulate import asgi
from proxy.simulate.scenario import Scenario
from proxy.simulate.vclock import VirtualClock
from proxy.simulate.workload import EMBEDDINGS, Request
from proxy.simulate.world import World, build_world
from proxy.store import outcomes

log = logging.getLogger(__name__)

# 2026-11-30 00:00 UTC, a Monday: weekday price windows (DeepSeek peak hours) apply.
DEFAULT_START = 1_795_996_800.0
_WORDS = ("alpha", "brief", "costs", "delta", "ember", "fable", "grove", "haven", "ivory")


@dataclass(slots=True)
class Sent:
    """One workload request as the engine sent it."""

    index: int
    request: Request
    sent_at: float  # virtual seconds
    answered_at: float | None = None
    status: int | None = None
    lane: str | None = None
    request_id: str | None = None
    ticket_id: str | None = None
    error: str | None = None


@dataclass(slots=True)
class Run:
    """What a finished simulation leaves for the report."""

    settings: Settings
    scenario: Scenario
    seed: int
    start: float
    end: float
    quantum: float
    sent: list[Sent]
    served: list[outcomes.Served]
    batches: dict[tuple[str, str], int]
    requeued: int
    escalated: set[str]
    unfinished: int
    steps: dict[str, int] = field(default_factory=dict)
    wall_seconds: float = 0.0


@dataclass
class _Texts:
    """Prompt text of the right size, built once per shape."""

    prefixes: dict[tuple[str, int], str] = field(default_factory=dict)

    def prefix(self, group: str, tokens: int) -> str:
        key = (group, tokens)
        text = self.prefixes.get(key)
        if text is None:
            text = self.prefixes[key] = _filler(f"Shared context {group}: ", tokens * 4)
        return text


_PHRASE = " ".join(_WORDS) + " "


def _filler(head: str, chars: int) -> str:
    body = head + _PHRASE * (chars // len(_PHRASE) + 1)
    return body[:chars].ljust(chars, ".")


def body_of(index: int, request: Request, texts: _Texts) -> dict[str, Any]:
    """An OpenAI request whose size the emulators count as ``prompt_tokens`` and whose
    answer they size to ``completion_tokens`` (``[emulator:reply N]``)."""
    if request.endpoint == EMBEDDINGS:
        return {"model": request.model, "input": _filler(f"r{index} ", request.prompt_tokens * 4)}
    messages: list[dict[str, str]] = []
    overhead = 3 + 4  # reply priming + the user message (emulator token rules)
    if request.prefix is not None and request.prefix_tokens:
        messages.append(
            {"role": "system", "content": texts.prefix(request.prefix, request.prefix_tokens)}
        )
        overhead += 4 + request.prefix_tokens
    head = f"[emulator:reply {request.completion_tokens}] request {index}: "
    chars = max(request.prompt_tokens - overhead, len(head) // 4 + 1) * 4
    messages.append({"role": "user", "content": _filler(head, chars)})
    return {"model": request.model, "messages": messages}


class Engine:
    def __init__(
        self,
        settings: Settings,
        scenario: Scenario,
        workload: Sequence[Request],
        *,
        workdir: Path,
        seed: int | None = None,
        start: float = DEFAULT_START,
        quantum: float = 1.0,
        progress: Callable[[str], None] | None = None,
        skip_idle: bool = True,
    ) -> None:
        self.skip_idle = skip_idle
        self.seed = scenario.seed if seed is None else seed
        self.workload = list(workload)
        self.scenario = scenario
        self.start = start
        self.quantum = max(quantum, 0.001)
        self.clock = VirtualClock(start)
        self.world: World = build_world(
            settings,
            scenario,
            keys={r.key for r in self.workload},
            workdir=workdir,
            clock=self.clock,
            seed=self.seed,
        )
        self.progress = progress or (lambda _: None)
        self.sent: list[Sent] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._texts = _Texts()
        self.step_counts: dict[str, int] = {}

    async def run(self) -> Run:
        started = time.perf_counter()
        world = self.world
        app = create_app(
            world.settings,
            clock=self.clock,
            environ=world.environ,
            transports=world.transports(),
            loops=False,
            inline_store=True,
        )
        async with _lifespan(app):
            services: Services = app.state.services
            services.sleep = self.clock.sleep
            scheduler = services.extras["scheduler"]
            assert isinstance(scheduler, Scheduler)
            upkeep = services.extras["cache_maintenance"]
            assert isinstance(upkeep, Upkeep)
            await self._drive(app, services, scheduler, upkeep)
            await services.routelog.flush()
            db = services.db
            served = await outcomes.final_rows(db)
            run = Run(
                settings=world.settings,
                scenario=self.scenario,
                seed=self.seed,
                start=self.start,
                end=self.clock.now(),
                quantum=self.quantum,
                sent=self.sent,
                served=served,
                batches=await outcomes.batch_counts(db),
                requeued=await outcomes.requeued_lines(db),
                escalated=await outcomes.escalated(db),
                unfinished=await outcomes.unfinished_tickets(db),
                steps=dict(self.step_counts),
            )
        run.wall_seconds = time.perf_counter() - started
        return run

    async def _drive(
        self,
        app: Starlette,
        services: Services,
        scheduler: Scheduler,
        upkeep: Upkeep,
    ) -> None:
        clock = self.clock
        steps: list[tuple[str, float, Callable[[], Any]]] = [
            *scheduler.steps(wait=False),
            ("upkeep", MAINTENANCE_INTERVAL, upkeep.run_once),
        ]
        skippable = [name != "upkeep" for name, _, _ in steps]
        due = [self.start for _ in steps]
        arrivals = deque(enumerate(self.workload))
        longest = max((r.tolerance or 0 for r in self.workload), default=0)
        last = self.workload[-1].at if self.workload else 0.0
        horizon = self.start + last + longest + 86_400
        next_report = self.start + 3600.0
        while True:
            moments = list(due)
            if arrivals:
                moments.append(self._arrival_time(arrivals[0][1]))
            wake = clock.next_wake()
            if wake is not None:
                moments.append(wake)
            now = max(min(moments), clock.now())
            if now > horizon:
                log.warning("simulation stopped at its horizon with work left")
                break
            clock.set(now)
            clock.wake_due()
            arrived = False
            while arrivals and self._arrival_time(arrivals[0][1]) <= now:
                index, request = arrivals.popleft()
                self._launch(app, index, request)
                arrived = True
            await self._settle(scheduler)
            if arrived:
                # New tickets may be due sooner than the skip planned: tick as live.
                for i, (_, every, _) in enumerate(steps):
                    if skippable[i]:
                        due[i] = min(due[i], self._grid(now, every))
            ran = False
            for i, (name, every, step) in enumerate(steps):
                if due[i] > now:
                    continue
                try:
                    await step()
                except Exception:
                    log.exception("simulated %s step failed; it runs again next time", name)
                self.step_counts[name] = self.step_counts.get(name, 0) + 1
                due[i] = now + every
                ran = ran or skippable[i]
                await self._settle(scheduler)
            soon = bool(arrivals) and self._arrival_time(arrivals[0][1]) <= now + min(
                every for (_, every, _), ok in zip(steps, skippable, strict=True) if ok
            )
            if ran and self.skip_idle and not soon:  # (an arrival by then ticks anyway)
                await self._skip_idle(scheduler, steps, skippable, due)
            if now >= next_report:
                hours = (now - self.start) / 3600
                self.progress(f"{hours:5.1f} h simulated, {len(self.sent)} requests sent")
                next_report = now + 3600.0
            idle = all(math.isinf(d) for d, ok in zip(due, skippable, strict=True) if ok)
            if (
                (ran or idle)
                and not arrivals
                and not self._busy(scheduler)
                and clock.next_wake() is None
                and await outcomes.unfinished_tickets(services.db) == 0
                # Late batches too: their lines are billed when they end, after the
                # guard has already paid for the same requests in real time.
                and await outcomes.live_batches(services.db) == 0
            ):
                break

    async def _skip_idle(
        self,
        scheduler: Scheduler,
        steps: Sequence[tuple[str, float, Callable[[], Any]]],
        skippable: Sequence[bool],
        due: list[float],
    ) -> None:
        """Move the scheduler steps' next run to the first tick at which one of them has
        work (``Scheduler.next_work_ms``): the ticks skipped would have done nothing."""
        work_ms = await scheduler.next_work_ms()
        when = math.inf if work_ms is None else work_ms / 1000
        for i, (_, every, _) in enumerate(steps):
            if skippable[i] and when > due[i]:
                due[i] = self._grid(when, every) if math.isfinite(when) else math.inf

    def _grid(self, at: float, every: float) -> float:
        """The first tick of a step with interval ``every`` at or after ``at``."""
        return self.start + math.ceil((at - self.start) / every - 1e-9) * every

    def _arrival_time(self, request: Request) -> float:
        return self.start + math.ceil(request.at / self.quantum - 1e-9) * self.quantum

    def _launch(self, app: Starlette, index: int, request: Request) -> None:
        sent = Sent(index, request, self.clock.now())
        self.sent.append(sent)
        task = asyncio.create_task(self._send(app, sent))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, app: Starlette, sent: Sent) -> None:
        request = sent.request
        headers = {
            "authorization": f"Bearer {self.world.client_keys[request.key]}",
            "content-type": "application/json",
        }
        if request.tolerance is not None:
            headers[TOLERANCE_HEADER] = f"{request.tolerance}s"
        body = orjson.dumps(body_of(sent.index, request, self._texts))
        try:
            response = await asgi.post(app, request.endpoint, headers, body)
        except Exception as exc:  # the proxy must answer everything; record if not
            sent.error = f"{type(exc).__name__}: {exc}"
            sent.answered_at = self.clock.now()
            return
        sent.answered_at = self.clock.now()
        sent.status = response.status
        sent.lane = response.headers.get("x-costroute-lane")
        sent.request_id = response.headers.get("x-request-id")
        sent.ticket_id = response.headers.get("x-costroute-ticket")
        if response.status >= 400:
            with contextlib.suppress(Exception):
                sent.error = str(orjson.loads(response.body)["error"]["message"])

    def _busy(self, scheduler: Scheduler) -> bool:
        return any(not t.done() for t in self._pending(scheduler))

    def _pending(self, scheduler: Scheduler) -> Iterator[asyncio.Task[Any]]:
        yield from self._tasks
        yield from scheduler.sending

    async def _settle(self, scheduler: Scheduler) -> None:
        """Wait until every request and direct send is done or asleep on virtual time."""
        clock = self.clock
        while True:
            pending = {t for t in self._pending(scheduler) if not t.done()}
            if len(pending) <= clock.sleeping:
                return
            clock.parked.clear()
            parked = asyncio.ensure_future(clock.parked.wait())
            try:
                await asyncio.wait({*pending, parked}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                parked.cancel()


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> Any:
    async with app.router.lifespan_context(app):
        yield


async def simulate(
    settings: Settings,
    scenario: Scenario,
    workload: Sequence[Request],
    *,
    workdir: Path,
    seed: int | None = None,
    start: float = DEFAULT_START,
    quantum: float = 1.0,
    progress: Callable[[str], None] | None = None,
    skip_idle: bool = True,
) -> Run:
    engine = Engine(
        settings,
        scenario,
        workload,
        workdir=workdir,
        seed=seed,
        start=start,
        quantum=quantum,
        progress=progress,
        skip_idle=skip_idle,
    )
    return await engine.run()
