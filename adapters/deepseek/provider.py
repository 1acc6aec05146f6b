"""Building the DeepSeek provider's parts: real-time chat only (DeepSeek has no batch
API; its cheaper hours are the off-peak lane, which the proxy's planner runs)."""

from __future__ import annotations

from adapters.deepseek.chat import DeepSeekAdapter
from adapters.http import make_upstream
from adapters.parts import ProviderConfig, ProviderParts


def build(config: ProviderConfig) -> ProviderParts:
    chat = DeepSeekAdapter(
        make_upstream(config.base_url, **config.pool),
        api_key=config.api_key,
        max_response_bytes=config.max_response_bytes,
    )
    return ProviderParts(chat=chat)
