"""Configuration of the Gemini emulator.

Model lists and cache minimums come from here, never from constants in the handlers,
because the provider has changed them over time (providers.md §3.7, §3.13).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

DEFAULT_CHAT_MODELS = (
    "gemini-2.5-flash",
    "gemini-2.5-pro",
    "gemini-2.5-flash-lite",
    "gemini-2.0-flash",
    "gemini-2.0-flash-lite",
)
DEFAULT_EMBEDDING_MODELS = ("text-embedding-004", "gemini-embedding-001")
DEFAULT_THINKING_MODELS = ("gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.5-flash-lite")
# The 2025 figures (1,024 for Flash, 2,048 for Pro); later guides raised them, so tests
# and demos override these per model when they need another era.
DEFAULT_CACHE_MIN_TOKENS: Mapping[str, int] = MappingProxyType(
    {
        "gemini-2.5-flash": 1024,
        "gemini-2.5-pro": 2048,
        "gemini-2.5-flash-lite": 1024,
        "gemini-2.0-flash": 1024,
        "gemini-2.0-flash-lite": 1024,
    }
)


@dataclass(frozen=True, slots=True)
class GeminiEmulatorConfig:
    # Accepted API keys; ``None`` accepts any non-empty key.
    api_keys: frozenset[str] | None = None
    # How a missing or wrong key is refused: Google answers 400 INVALID_ARGUMENT
    # "API key not valid" for a malformed key and 403 PERMISSION_DENIED for others.
    auth_error_status: Literal[400, 403] = 400
    chat_models: tuple[str, ...] = DEFAULT_CHAT_MODELS
    embedding_models: tuple[str, ...] = DEFAULT_EMBEDDING_MODELS
    thinking_models: tuple[str, ...] = DEFAULT_THINKING_MODELS
    # Per-model minimum size of an explicit cache; entries given here override the
    # defaults above model by model, and unlisted models use ``default_cache_min_tokens``.
    cache_min_tokens: Mapping[str, int] = field(default_factory=lambda: DEFAULT_CACHE_MIN_TOKENS)
    default_cache_min_tokens: int = 1024
    # Default cache lifetime when neither ttl nor expireTime is given (providers.md §3.5).
    default_cache_ttl: float = 3600.0
    # Real seconds slept before every answer (faults add their own latency).
    latency: float = 0.0
    # A prompt containing this text is refused the way a safety filter refuses it:
    # HTTP 200, ``promptFeedback.blockReason`` and no candidates (providers.md §3.3).
    blocked_marker: str | None = "[emulator:block]"
    block_reason: str = "SAFETY"
    # Words per streamed text chunk.
    stream_chunk_words: int = 3
    # Line ending of SSE frames. CRLF by default (not verified in providers.md): it is the
    # stricter test, since line-based parsers accept both while code that splits events
    # only on "\n\n" breaks on it; "\n" gives the framing providers.md §3.4 shows.
    sse_newline: Literal["\r\n", "\n"] = "\r\n"
    # Output dimensionality of embeddings when the request does not choose one.
    embedding_dimensions: int = 768
    max_recorded_requests: int = 1000
    # Batch Mode (providers.md §3.12), timed on the injected clock from creation: pending,
    # running after ``batch_start_after``, done after ``batch_complete_after`` (``None``:
    # never, so a test can reach ``batch_expire_after`` and see BATCH_STATE_EXPIRED).
    batch_start_after: float = 5.0
    batch_complete_after: float | None = 60.0
    batch_expire_after: float = 48 * 3600.0
    # Inline batch requests must stay under 20 MB in total.
    max_inline_batch_bytes: int = 20 * 1024 * 1024
    # Pending or running batches allowed at once; beyond it a create is refused 429
    # RESOURCE_EXHAUSTED. Gemini's real per-tier values are unpublished (unverified):
    # None = no limit.
    max_live_batches: int | None = None
    # ``costroute simulate``: a batch's own completion time (seconds after creation) from
    # its creation sequence number (1, 2, ...), overriding ``batch_complete_after``; and
    # the chance that one request of a batch fails with a retryable 500 INTERNAL (a
    # generator seeded by the batch's sequence number decides).
    batch_turnaround: Callable[[int], float] | None = None
    batch_line_failure_rate: float = 0.0

    def __post_init__(self) -> None:
        merged = {**DEFAULT_CACHE_MIN_TOKENS, **self.cache_min_tokens}
        object.__setattr__(self, "cache_min_tokens", MappingProxyType(merged))

    def min_cache_tokens(self, model: str) -> int:
        return self.cache_min_tokens.get(model, self.default_cache_min_tokens)

    def is_thinking(self, model: str) -> bool:
        return model in self.thinking_models

    @property
    def models(self) -> tuple[str, ...]:
        return self.chat_models + self.embedding_models
