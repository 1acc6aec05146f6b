"""Building the Anthropic provider's parts: real-time chat with managed prompt caching,
and the Message Batches lane (one ``Translator`` for both, so a batch item is the same
Messages request real time would send, and both feed one memory of seen prefixes)."""

from __future__ import annotations

from adapters.anthropic.batch import AnthropicBatchLane
from adapters.anthropic.chat import AnthropicAdapter, Caching, Translator
from adapters.http import make_upstream
from adapters.parts import ProviderConfig, ProviderParts, batch_client


def translator(config: ProviderConfig) -> Translator:
    caching = Caching(
        mode=config.cache.mode,
        min_repeats=config.cache.min_repeats,
        window_s=float(config.cache.window_s),
        min_tokens={model.upstream: model.cache_min_tokens for model in config.models},
        prices=config.prices,
        clock=config.clock.now,
    )
    return Translator(
        max_tokens={model.upstream: model.max_tokens_default for model in config.models},
        caching=caching,
    )


def build(config: ProviderConfig) -> ProviderParts:
    shared = translator(config)
    chat = AnthropicAdapter(
        make_upstream(config.base_url, **config.pool),
        api_key=config.api_key,
        translator=shared,
        max_response_bytes=config.max_response_bytes,
    )
    lane = AnthropicBatchLane(
        batch_client(config), api_key=config.api_key, translator=shared, clock=config.clock
    )
    return ProviderParts(chat=chat, batch=lane)


def build_batch(config: ProviderConfig) -> AnthropicBatchLane:
    """The Message Batches lane alone (``costroute flush`` without a server), on its own
    pool."""
    return AnthropicBatchLane(
        batch_client(config), api_key=config.api_key, translator=translator(config),
        clock=config.clock,
    )  # fmt: skip
