"""What a running proxy holds: one ``Services`` object built at start-up and reached
from handlers as ``request.app.state.services``; the caller as ``request.state.caller``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from adapters.base import BatchAdapter, ChatAdapter
from adapters.clock import Clock
from proxy.settings import Settings
from proxy.store.db import Database

if TYPE_CHECKING:
    from proxy.routelog import RouteLog


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
    batch: dict[str, BatchAdapter] = field(default_factory=dict)
    # Feature services that later modules attach (deferral queue, scheduler, metrics...).
    extras: dict[str, Any] = field(default_factory=dict)
