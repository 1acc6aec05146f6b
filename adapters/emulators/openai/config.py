"""Configuration of the OpenAI / DeepSeek emulator.

Model lists, retirement dates and limits come from here, not from constants spread
through the code, because providers change them (providers.md, "Time warning").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

OPENAI_MODELS: tuple[str, ...] = (
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4.1-nano",
    "gpt-5",
    "gpt-5-mini",
    "gpt-5-nano",
    "o1",
    "o3",
    "o3-mini",
    "o4-mini",
    "text-embedding-3-small",
    "text-embedding-3-large",
    "text-embedding-ada-002",
)

DEEPSEEK_MODELS: tuple[str, ...] = (
    "deepseek-flash",
    "deepseek-v4-flash",
    "deepseek-v4-pro",
    "deepseek-chat",
    "deepseek-reasoner",
)

# The legacy aliases stopped working at 2026-07-24 15:59 UTC (providers.md §4.2). Not the
# default, so tests that run on the ManualClock's 2026-01-01 see them alive; pass this as
# ``deepseek_retired`` to emulate the switch.
DEEPSEEK_LEGACY_RETIREMENT: Mapping[str, float] = MappingProxyType(
    {"deepseek-chat": 1_784_908_740.0, "deepseek-reasoner": 1_784_908_740.0}
)

# Native sizes; ``dimensions`` may shorten the text-embedding-3 ones.
EMBEDDING_DIMENSIONS: Mapping[str, int] = MappingProxyType(
    {
        "text-embedding-3-small": 1536,
        "text-embedding-3-large": 3072,
        "text-embedding-ada-002": 1536,
    }
)


def _no_dates() -> Mapping[str, float]:
    return MappingProxyType({})


def _no_names() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class OpenAIEmulatorConfig:
    flavour: Literal["openai", "deepseek"] = "openai"
    # None: any non-empty bearer token is accepted; otherwise others get 401.
    api_keys: frozenset[str] | None = None
    # Known models; empty means the flavour's default list.
    models: tuple[str, ...] = ()
    # Model ids starting with these are reasoning models: no max_tokens, no temperature,
    # reasoning tokens in usage.
    reasoning_prefixes: tuple[str, ...] = ("o1", "o3", "o4", "gpt-5")
    # Real seconds slept before every answer, and between SSE events (benchmarks).
    latency: float = 0.0
    stream_delay: float = 0.0
    # DeepSeek: model -> unix time from which it answers 400 "Model Not Exist".
    deepseek_retired: Mapping[str, float] = field(default_factory=_no_dates)
    # Request snapshot names the response reports, e.g. {"gpt-4o": "gpt-4o-2024-08-06"};
    # unmapped models are echoed as sent.
    resolved_models: Mapping[str, str] = field(default_factory=_no_names)
    # prompt tokens + requested output above this -> 400 context_length_exceeded.
    context_window: int = 1_000_000
    # OpenAI automatic prompt cache (§1.7): minimum prompt, hit granularity, idle lifetime.
    prompt_cache_min_tokens: int = 1024
    prompt_cache_step: int = 128
    prompt_cache_ttl: float = 600.0
    # Requests per minute reported in x-ratelimit-* headers; enforce it with 429s if set.
    rpm_limit: int = 10_000
    tpm_limit: int = 30_000_000
    enforce_rate_limits: bool = False
    # Share of flex-tier calls served; the rest are refused with OpenAI's unbilled 429
    # ``resource_unavailable`` (§1.1.1). Which ones: a hash of ``seed``, the request and how
    # often that same request was seen, so a run is repeatable whatever the arrival order.
    flex_capacity: float = 1.0
    seed: int = 0
    # How many recorded requests ``app.state.requests`` keeps.
    request_log_size: int = 1000
    # Responses background mode: seconds queued, then seconds in progress (on the clock).
    # Unverified: OpenAI documents no durations; these keep tests and the demo quick.
    background_queued_s: float = 1.0
    background_run_s: float = 2.0

    def __post_init__(self) -> None:
        if not self.models:
            defaults = DEEPSEEK_MODELS if self.flavour == "deepseek" else OPENAI_MODELS
            object.__setattr__(self, "models", defaults)

    @property
    def is_deepseek(self) -> bool:
        return self.flavour == "deepseek"

    def is_reasoning(self, model: str) -> bool:
        return model.startswith(self.reasoning_prefixes)

    def is_embedding(self, model: str) -> bool:
        return "embedding" in model

    def retired(self, model: str, now: float) -> bool:
        when = self.deepseek_retired.get(model)
        return when is not None and now >= when
