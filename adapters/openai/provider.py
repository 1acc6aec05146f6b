"""Building the OpenAI provider's parts: real-time chat and the Files/Batch lane."""

from __future__ import annotations

from adapters.http import make_upstream
from adapters.openai.batch import OpenAIBatchAdapter
from adapters.openai.chat import OpenAIAdapter
from adapters.parts import ProviderConfig, ProviderParts, batch_client


def build(config: ProviderConfig) -> ProviderParts:
    chat = OpenAIAdapter(
        make_upstream(config.base_url, **config.pool),
        api_key=config.api_key,
        max_response_bytes=config.max_response_bytes,
        flex_timeout=config.flex_timeout,
    )
    return ProviderParts(chat=chat, batch=build_batch(config))


def build_batch(config: ProviderConfig) -> OpenAIBatchAdapter:
    return OpenAIBatchAdapter(batch_client(config), api_key=config.api_key)
