"""Building the Anthropic provider's parts: real-time chat with managed prompt caching.
(Its Message Batches lane is not built yet: deferred Claude requests go out in real time,
and the planner says so.)"""

from __future__ import annotations

from adapters.anthropic.chat import AnthropicAdapter, Caching
from adapters.http import make_upstream
from adapters.parts import ProviderConfig, ProviderParts


def build(config: ProviderConfig) -> ProviderParts:
    def input_price(model: str) -> float | None:
        price = config.prices(model)
        return None if price is None else price.input

    caching = Caching(
        mode=config.cache.mode,
        min_repeats=config.cache.min_repeats,
        window_s=float(config.cache.window_s),
        min_tokens={model.upstream: model.cache_min_tokens for model in config.models},
        input_price=input_price,
        clock=config.clock.now,
    )
    chat = AnthropicAdapter(
        make_upstream(config.base_url, **config.pool),
        api_key=config.api_key,
        max_tokens={model.upstream: model.max_tokens_default for model in config.models},
        max_response_bytes=config.max_response_bytes,
        caching=caching,
    )
    return ProviderParts(chat=chat)
