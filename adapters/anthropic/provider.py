"""Building the Anthropic provider's parts: real-time chat. (Its Message Batches lane and
managed prompt caching are not built yet: deferred Claude requests go out in real time,
and the planner says so.)"""

from __future__ import annotations

from adapters.anthropic.chat import AnthropicAdapter
from adapters.http import make_upstream
from adapters.parts import ProviderConfig, ProviderParts


def build(config: ProviderConfig) -> ProviderParts:
    chat = AnthropicAdapter(
        make_upstream(config.base_url, **config.pool),
        api_key=config.api_key,
        max_tokens={model.upstream: model.max_tokens_default for model in config.models},
        max_response_bytes=config.max_response_bytes,
    )
    return ProviderParts(chat=chat)
