"""DeepSeek speaks the OpenAI chat format (base URL ``https://api.deepseek.com``), so it
reuses the OpenAI adapter; it has no embeddings endpoint and no batch API. Its usage
carries ``prompt_cache_hit_tokens``, which ``openai_wire.extract_usage`` reads; its 402
(insufficient balance) is a non-retryable status like any other 4xx."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.base import Reply
from adapters.errors import Unsupported
from adapters.openai.chat import OpenAIAdapter


class DeepSeekAdapter(OpenAIAdapter):
    provider_type = "deepseek"

    async def embed(self, body: dict[str, Any], *, headers: Mapping[str, str]) -> Reply:
        raise Unsupported(
            "DeepSeek has no embeddings endpoint; route this model elsewhere.", param="model"
        )
