"""What a running proxy holds: one ``Services`` object built at start-up and reached
from handlers as ``request.app.state.services``; the caller as ``request.state.caller``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from adapters.base import BatchLane, ChatAdapter
from adapters.clock import Clock
from proxy.settings import Settings
from proxy.store.db import Database


class RouteLog(Protocol):
    """The buffered routing-log writer (``proxy.ops.routelog.RouteLog``), as handlers and
    loops below ``ops`` see it: they record rows, ops decides how they are written."""

    def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def flush(self) -> None: ...
    def record(self, **fields: Any) -> None: ...
    def record_later(self, build: Callable[[], Mapping[str, Any] | None]) -> None: ...


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated key: its configured name is the caller's identity everywhere."""

    name: str
    admin: bool
    default_tolerance: int | None = None


@dataclass(slots=True)
class Services:
    settings: Settings
    db: Database
    clock: Clock
    routelog: RouteLog
    # Keyed by provider name as configured under [providers.NAME].
    chat: dict[str, ChatAdapter] = field(default_factory=dict)
    batch: dict[str, BatchLane] = field(default_factory=dict)
    # Feature services that later modules attach (deferral queue, scheduler, metrics...).
    extras: dict[str, Any] = field(default_factory=dict)
    # How the retry policy waits between attempts (``costroute simulate`` waits on its
    # virtual clock instead of the wall clock).
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    # Provider name -> its recent batch turnaround in seconds, for the planner; kept by
    # the scheduler (``proxy.deferral.turnaround``), empty until batches have run.
    turnaround: dict[str, float] = field(default_factory=dict)
    # Provider name -> the longest recent batch turnaround, for the flusher (same source).
    turnaround_longest: dict[str, float] = field(default_factory=dict)
