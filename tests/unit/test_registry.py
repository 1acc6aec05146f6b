"""The provider registry: every provider type the config accepts is built through it,
with the parts its capabilities promise, and an unknown type is refused by name."""

from __future__ import annotations

import typing

import httpx
import pytest

from adapters import registry
from adapters.clock import ManualClock
from adapters.parts import ModelFacts, ProviderConfig
from proxy.settings import ProviderType


class _Registry:
    async def find(self, *args: object, **kwargs: object) -> dict[str, object]:
        return {}


def _config(provider_type: str, **overrides: object) -> ProviderConfig:
    transport = httpx.MockTransport(lambda request: httpx.Response(500))
    fields: dict[str, object] = {
        "name": f"my-{provider_type}",
        "type": provider_type,
        "base_url": "http://127.0.0.1:9/v1",
        "api_key": "sk-test",
        "clock": ManualClock(0.0),
        "pool": {"transport": transport},
        "batch_pool": {"transport": transport},
        "max_response_bytes": 1 << 20,
        "flex_timeout": 900.0,
        "models": (ModelFacts(name="m", upstream="m-up", cache_min_tokens=1024),),
        "registries": {"cache": _Registry()},
    }
    fields.update(overrides)
    return ProviderConfig(**fields)  # type: ignore[arg-type]


def test_the_config_accepts_exactly_the_types_the_registry_builds() -> None:
    assert set(typing.get_args(ProviderType)) == set(registry.CAPABILITIES)
    assert set(registry.CAPABILITIES) == set(registry._kinds())


@pytest.mark.parametrize("provider_type", sorted(registry.CAPABILITIES))
async def test_every_type_is_built_with_the_parts_its_capabilities_promise(
    provider_type: str,
) -> None:
    parts = registry.build(_config(provider_type))
    can = registry.capabilities(provider_type)
    try:
        assert parts.chat.provider_type == provider_type
        assert (parts.batch is not None) == can.batch
        if parts.batch is not None:
            assert parts.batch.provider_type == provider_type
        # A provider whose caching costroute manages has a background service to run.
        assert (parts.service is not None) == can.context_cache
    finally:
        await parts.chat.aclose()
        if parts.batch is not None:
            await parts.batch.aclose()


@pytest.mark.parametrize("provider_type", sorted(registry.CAPABILITIES))
async def test_build_batch_alone_gives_the_batch_lane_or_nothing(provider_type: str) -> None:
    adapter = registry.build_batch(_config(provider_type))
    assert (adapter is not None) == registry.capabilities(provider_type).batch
    if adapter is not None:
        await adapter.aclose()


def test_an_unknown_type_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"providers\.my-mystery: unknown type 'mystery'"):
        registry.build(_config("mystery"))
    assert registry.capabilities("mystery") == registry.Capabilities()


def test_gemini_refuses_to_build_without_the_store_s_cache_registry() -> None:
    with pytest.raises(ValueError, match="cache registry"):
        registry.build(_config("gemini", registries={}))
