"""The Gemini v1beta operations, as plain async methods on request bodies.

The HTTP plumbing (auth, faults, recording, framing of errors) lives in gemini_server.py;
everything here raises ``GeminiError`` and returns JSON-ready dicts or chunk lists.
"""

from __future__ import annotations

import secrets
from typing import Any

from adapters.clock import Clock
from adapters.emulators.gemini.cache import CacheEntry, CacheStore
from adapters.emulators.gemini.config import GeminiEmulatorConfig
from adapters.emulators.gemini.errors import invalid_argument, not_found
from adapters.emulators.gemini.generate import ReplyPlan, plan_reply, render, stream_chunks
from adapters.emulators.gemini.tokens import count_prompt, details
from adapters.emulators.gemini.validate import (
    check_contents,
    check_generation_config,
    check_system,
    check_tools,
    parse,
)
from adapters.emulators.gemini.wire import (
    BatchEmbedContentsRequest,
    CountTokensRequest,
    EmbedContentRequest,
    GenerateContentRequest,
)
from adapters.emulators.tokens import embedding

CHAT_METHODS = (
    "generateContent",
    "streamGenerateContent",
    "countTokens",
    "createCachedContent",
    "batchGenerateContent",
)
EMBEDDING_METHODS = ("embedContent", "batchEmbedContents", "countTokens")


class GeminiApi:
    def __init__(self, config: GeminiEmulatorConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self.caches = CacheStore(config, clock)

    # -- models ------------------------------------------------------------------------

    def require_model(self, model: str, method: str) -> None:
        chat = model in self.config.chat_models and method in CHAT_METHODS
        embed = model in self.config.embedding_models and method in EMBEDDING_METHODS
        if not (chat or embed):
            raise not_found(
                f"models/{model} is not found for API version v1beta, or is not supported for "
                f"{method}. Call ListModels to see the list of available models and their "
                "supported methods."
            )

    def model_resource(self, model: str) -> dict[str, Any]:
        if model not in self.config.models:
            raise not_found(f"models/{model} is not found for API version v1beta.")
        chat = model in self.config.chat_models
        body: dict[str, Any] = {
            "name": f"models/{model}",
            "version": "001",
            "displayName": model.replace("-", " ").title(),
            "description": f"Emulated {model}",
            "inputTokenLimit": 1_048_576 if chat else 2048,
            "outputTokenLimit": 65_536 if chat else 1,
            "supportedGenerationMethods": list(CHAT_METHODS if chat else EMBEDDING_METHODS),
        }
        if chat:
            body.update({"temperature": 1, "topP": 0.95, "topK": 64, "maxTemperature": 2})
        if self.config.is_thinking(model):
            body["thinking"] = True
        return body

    # -- generation --------------------------------------------------------------------

    def plan(self, model: str, raw: Any, *, method: str) -> ReplyPlan:
        self.require_model(model, method)
        request = parse(GenerateContentRequest, raw)
        cache = self._checked(request, model)
        response_id = secrets.token_urlsafe(16)[:22]
        return plan_reply(
            request, model=model, cache=cache, settings=self.config, response_id=response_id
        )

    def generate(self, model: str, raw: Any) -> dict[str, Any]:
        return render(self.plan(model, raw, method="generateContent"))

    def stream(self, model: str, raw: Any) -> list[dict[str, Any]]:
        plan = self.plan(model, raw, method="streamGenerateContent")
        return stream_chunks(plan, words=self.config.stream_chunk_words)

    def count_tokens(self, model: str, raw: Any) -> dict[str, Any]:
        self.require_model(model, "countTokens")
        body = parse(CountTokensRequest, raw)
        if body.contents is not None and body.generate_content_request is not None:
            raise invalid_argument(
                "* CountTokensRequest: contents and generate_content_request are mutually "
                "exclusive."
            )
        inner = body.generate_content_request
        if inner is None:
            check_contents(body.contents or [], where="CountTokensRequest", required=True)
            tally = count_prompt(contents=body.contents or [])
            return {"totalTokens": sum(tally.values()), "promptTokensDetails": details(tally)}
        cache = self._checked(inner, model)
        tally = count_prompt(
            contents=inner.contents or [], system=inner.system_instruction, tools=inner.tools
        )
        result: dict[str, Any] = {}
        if cache is not None:
            tally.update(cache.tally)
            result["cachedContentTokenCount"] = cache.total_tokens
        return {"totalTokens": sum(tally.values()), **result, "promptTokensDetails": details(tally)}

    def _checked(self, request: GenerateContentRequest, model: str) -> CacheEntry | None:
        check_generation_config(request.generation_config, model=model, settings=self.config)
        check_system(request.system_instruction)
        check_tools(request.tools, request.tool_config)
        cache = None
        if request.cached_content:
            sets_shape = (
                request.system_instruction is not None
                or bool(request.tools)
                or request.tool_config is not None
            )
            cache = self.caches.for_request(request.cached_content, model, sets_shape=sets_shape)
        needs_contents = cache is None or not cache.contents
        check_contents(
            request.contents or [], where="GenerateContentRequest", required=needs_contents
        )
        return cache

    # -- embeddings --------------------------------------------------------------------

    def embed(self, model: str, raw: Any) -> dict[str, Any]:
        self.require_model(model, "embedContent")
        body = parse(EmbedContentRequest, raw)
        return {"embedding": self._vector(body)}

    def batch_embed(self, model: str, raw: Any) -> dict[str, Any]:
        self.require_model(model, "batchEmbedContents")
        body = parse(BatchEmbedContentsRequest, raw)
        for index, item in enumerate(body.requests):
            if item.model is not None and item.model != f"models/{model}":
                raise invalid_argument(
                    f"* BatchEmbedContentsRequest.requests[{index}].model: the model must "
                    f"match the model in the URL (models/{model}).",
                    field=f"requests[{index}].model",
                )
        return {"embeddings": [self._vector(item) for item in body.requests]}

    def _vector(self, body: EmbedContentRequest) -> dict[str, Any]:
        check_contents([body.content], where="EmbedContentRequest", required=True)
        text = " ".join(part.text or "" for part in body.content.parts or [])
        size = body.output_dimensionality or self.config.embedding_dimensions
        return {"values": embedding(text, size)}
