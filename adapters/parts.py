"""What a provider is built from (``ProviderConfig``: plain values and a few callables
the proxy hands over) and what it is built into (``ProviderParts``). Shared by every
provider package and by ``adapters.registry``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from adapters.base import BatchLane, ChatAdapter
from adapters.clock import Clock
from adapters.http import PoolOptions, make_client


@dataclass(frozen=True, slots=True)
class ModelFacts:
    """One configured model served by the provider being built."""

    name: str
    upstream: str
    cache_min_tokens: int
    max_tokens_default: int = 4096


@dataclass(frozen=True, slots=True)
class ModelPrices:
    """USD per 1M tokens (storage: per 1M tokens per hour), as the price table has them."""

    input: float
    cached_input: float | None
    cache_storage_per_hour: float
    # Prompt-cache writes (Anthropic), USD per 1M tokens; None: not in the price table.
    cache_write: float | None = None
    cache_write_1h: float | None = None
    batch_discount: float = 0.5


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """The ``[cache]`` section, for providers whose caching costroute manages."""

    mode: str = "auto"
    min_repeats: int = 2
    window_s: int = 3600
    ttl_s: int = 3600
    idle_delete_s: int = 1800


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """Everything a builder may read: plain values and a few callables from the proxy."""

    name: str
    type: str
    base_url: str
    api_key: str | None
    clock: Clock
    # The real-time pool; the batch pool is its own (uploads must never hold connections
    # the real-time lane needs).
    pool: PoolOptions
    batch_pool: PoolOptions
    max_response_bytes: int
    flex_timeout: float
    models: tuple[ModelFacts, ...] = ()
    cache: CacheSettings = field(default_factory=CacheSettings)
    # Upstream model -> its prices, or None when the price table does not know it.
    prices: Callable[[str], ModelPrices | None] = lambda _model: None
    # Durable registries the proxy's store offers (by kind, e.g. "cache"); a builder takes
    # the ones it needs and checks their protocol.
    registries: Mapping[str, Any] = field(default_factory=dict)


class ProviderService(Protocol):
    """Background upkeep a provider needs while the proxy runs."""

    async def reconcile(self) -> Any:
        """At start-up: adopt what a crash left behind."""
        ...

    async def maintain(self) -> Any:
        """Periodically (every ``Upkeep.interval`` seconds)."""
        ...


@dataclass(slots=True)
class ProviderParts:
    chat: ChatAdapter
    batch: BatchLane | None = None
    service: ProviderService | None = None


def batch_client(config: ProviderConfig) -> httpx.AsyncClient:
    """The batch lane's own pooled client for one provider."""
    return make_client(config.base_url, **config.batch_pool)
