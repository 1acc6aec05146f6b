"""Building the Gemini provider's parts: the real-time adapter, its managed context
cache manager (the background service: TTL extension, idle deletion, reconciliation) and
the Batch Mode lane."""

from __future__ import annotations

from adapters.gemini.batch import GeminiBatchLane
from adapters.gemini.cache import CacheMode, CacheModel, CachePolicy, CachePrices, CacheRegistry
from adapters.gemini.cache_manager import CacheManager
from adapters.gemini.chat import GeminiAdapter
from adapters.http import make_client
from adapters.parts import ProviderConfig, ProviderParts, batch_client


def build(config: ProviderConfig) -> ProviderParts:
    if config.api_key is None:
        raise ValueError(f"providers.{config.name}: Gemini needs api_key_env")
    registry: CacheRegistry | None = config.registries.get("cache")
    if registry is None:
        raise ValueError(f"providers.{config.name}: Gemini needs the store's cache registry")
    cache = config.cache
    policy = CachePolicy(
        mode=CacheMode(cache.mode),
        min_repeats=cache.min_repeats,
        window_s=cache.window_s,
        ttl_s=cache.ttl_s,
        idle_delete_s=cache.idle_delete_s,
    )
    models: dict[str, CacheModel] = {}
    for model in config.models:
        price = config.prices(model.upstream)
        prices = None
        if price is not None:
            prices = CachePrices(
                input=price.input,
                cached_input=price.input if price.cached_input is None else price.cached_input,
                storage_per_hour=price.cache_storage_per_hour,
            )
        models[model.upstream] = CacheModel(min_tokens=model.cache_min_tokens, prices=prices)
    client = make_client(config.base_url, **config.pool)
    manager = CacheManager(
        client,
        api_key=config.api_key,
        registry=registry,
        policy=policy,
        models=models,
        clock=config.clock,
    )
    adapter = GeminiAdapter(
        client,
        api_key=config.api_key,
        cache=manager,
        clock=config.clock,
        max_response_bytes=config.max_response_bytes,
    )
    lane = GeminiBatchLane(
        batch_client(config), api_key=config.api_key, clock=config.clock, cache=manager
    )
    return ProviderParts(chat=adapter, service=manager, batch=lane)


def build_batch(config: ProviderConfig) -> GeminiBatchLane:
    """The Batch Mode lane alone (``costroute flush`` without a server), on its own pool
    (uploads never hold real-time connections). It uses no caches: the cache manager
    lives with the running proxy."""
    if config.api_key is None:
        raise ValueError(f"providers.{config.name}: Gemini needs api_key_env")
    return GeminiBatchLane(batch_client(config), api_key=config.api_key, clock=config.clock)
