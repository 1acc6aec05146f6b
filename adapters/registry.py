"""Provider type -> how to build its parts: the real-time chat adapter, the batch adapter
(if the provider has a batch lane here) and any background service the provider needs
(Gemini's managed context caches). The proxy builds every provider through ``build``,
from a ``ProviderConfig`` of plain values, so it never names a provider's modules.

Adding a provider: one package under ``adapters/``, a ``build(config) -> ProviderParts``
function there, one entry in ``BUILDERS``, its prices and its emulator.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from adapters.base import BatchLane
from adapters.parts import ProviderConfig, ProviderParts


@dataclass(frozen=True, slots=True)
class Capabilities:
    """The lanes a provider type offers beyond real time, as the planner reads them."""

    batch: bool = False  # a provider batch API (half price, up to 24 h)
    flex: bool = False  # OpenAI's flex service tier
    context_cache: bool = False  # caching that costroute manages
    responses: bool = False  # OpenAI's Responses API, passed through natively
    # Endpoints the batch lane carries (None: every endpoint the provider serves).
    batch_endpoints: frozenset[str] | None = None


# Static facts, readable on the request path without importing any provider's modules.
CAPABILITIES: dict[str, Capabilities] = {
    "openai": Capabilities(batch=True, flex=True, responses=True),
    "deepseek": Capabilities(),
    # Message Batches carry Messages only (Anthropic has no embeddings). Its prompt
    # caching is placed by the chat adapter itself, with no cache objects to manage.
    "anthropic": Capabilities(batch=True, batch_endpoints=frozenset({"/v1/chat/completions"})),
    # Gemini batches carry generateContent only; embeddings batches are another method.
    "gemini": Capabilities(
        batch=True, context_cache=True, batch_endpoints=frozenset({"/v1/chat/completions"})
    ),
}


def capabilities(provider_type: str) -> Capabilities:
    return CAPABILITIES.get(provider_type, _NONE)


_NONE = Capabilities()


@dataclass(frozen=True, slots=True)
class ProviderKind:
    """How to build one provider type. ``build_batch`` alone serves work without a running
    server (``costroute flush``): it builds no real-time pool."""

    build: Callable[[ProviderConfig], ProviderParts]
    build_batch: Callable[[ProviderConfig], BatchLane | None]


def _no_batch(_config: ProviderConfig) -> BatchLane | None:
    return None


@functools.cache
def _kinds() -> dict[str, ProviderKind]:
    # Each provider package is imported here only; nothing else in the proxy names one.
    from adapters.anthropic import provider as anthropic
    from adapters.deepseek import provider as deepseek
    from adapters.gemini import provider as gemini
    from adapters.openai import provider as openai

    return {
        "openai": ProviderKind(openai.build, openai.build_batch),
        "deepseek": ProviderKind(deepseek.build, _no_batch),
        "anthropic": ProviderKind(anthropic.build, anthropic.build_batch),
        "gemini": ProviderKind(gemini.build, gemini.build_batch),
    }


def kind(config: ProviderConfig) -> ProviderKind:
    kinds = _kinds()
    try:
        return kinds[config.type]
    except KeyError:
        raise ValueError(
            f"providers.{config.name}: unknown type {config.type!r} (known: {', '.join(kinds)})"
        ) from None


def build(config: ProviderConfig) -> ProviderParts:
    return kind(config).build(config)


def build_batch(config: ProviderConfig) -> BatchLane | None:
    return kind(config).build_batch(config)
