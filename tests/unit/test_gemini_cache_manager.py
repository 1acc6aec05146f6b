"""Managed Gemini context caching against the Gemini emulator (in-process, ManualClock)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.genai import types
from openai.types.chat import ChatCompletion
from starlette.applications import Starlette

from adapters.clock import ManualClock
from adapters.emulators.gemini.server import GeminiEmulatorConfig, create_app
from adapters.gemini.cache import CacheModel, CachePolicy, CachePrices, credential_hash
from adapters.gemini.cache_manager import CacheManager
from adapters.gemini.chat import GeminiAdapter
from proxy.store.db import Database
from proxy.store.gemini_caches import SqliteCacheRegistry

FLASH = "gemini-2.5-flash"
PRO = "gemini-2.5-pro"
PRICES = CachePrices(input=0.30, cached_input=0.03, storage_per_hour=1.00)
# Two sightings in ten minutes is twelve reads an hour: worth caching on these prices.
POLICY = CachePolicy(min_repeats=2, window_s=600, ttl_s=3600, idle_delete_s=1800)
MODELS = {FLASH: CacheModel(1024, PRICES), PRO: CacheModel(2048, PRICES)}
SYSTEM = "You follow the house style guide. " * 400  # ~3,400 tokens


@dataclass
class Env:
    clock: ManualClock
    app: Starlette
    client: httpx.AsyncClient
    db: Database
    path: Path

    def adapter(
        self,
        key: str = "key-a",
        *,
        policy: CachePolicy = POLICY,
        models: dict[str, CacheModel] | None = None,
        db: Database | None = None,
    ) -> GeminiAdapter:
        manager = CacheManager(
            self.client,
            api_key=key,
            registry=SqliteCacheRegistry(db or self.db),
            policy=policy,
            models=MODELS if models is None else models,
            clock=self.clock,
        )
        return GeminiAdapter(self.client, api_key=key, cache=manager, clock=self.clock)

    def requests(self, needle: str, method: str = "POST") -> list[dict[str, Any]]:
        return [r for r in self.app.state.requests if needle in r["path"] and r["method"] == method]

    def generate_bodies(self) -> list[dict[str, Any]]:
        return [r["json"] for r in self.requests(":generateContent")]


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    clock = ManualClock()
    config = GeminiEmulatorConfig(api_keys=frozenset({"key-a", "key-b"}))
    app = create_app(config, clock=clock)
    transport = httpx.ASGITransport(app=app)
    client = httpx.AsyncClient(transport=transport, base_url="http://gemini.test/v1beta")
    path = tmp_path / "costroute.db"
    db = await Database.open(path)
    yield Env(clock, app, client, db, path)
    await client.aclose()
    await db.close()


def request(
    question: str = "Summarise rule 3.", model: str = FLASH, **extra: Any
) -> dict[str, Any]:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
    return {"model": model, "messages": messages, **extra}


async def ask(
    adapter: GeminiAdapter, body: dict[str, Any], mode: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    headers = {"X-Context-Cache": mode} if mode else {}
    reply = await adapter.complete(body, headers=headers)
    assert reply.parsed is not None
    ChatCompletion.model_validate(reply.parsed)
    return reply.parsed, dict(reply.notes)


async def test_cache_is_created_after_repeats_and_then_hit(env: Env) -> None:
    adapter = env.adapter()
    first, notes = await ask(adapter, request("q1"))
    assert notes == {}
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert env.requests("/cachedContents") == []

    env.clock.advance(60)
    second, notes = await ask(adapter, request("q2"))
    assert notes["cache_event"] == "created"
    assert notes["lane_suffix"] == "cache"
    assert notes["cache_name"].startswith("cachedContents/")
    assert notes["cached_tokens"] > 3000
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] == notes["cached_tokens"]

    env.clock.advance(60)
    _, hit = await ask(adapter, request("q3"))
    assert hit["cache_event"] == "hit"
    assert hit["cache_name"] == notes["cache_name"]
    assert hit["cache_storage_usd"] == pytest.approx(hit["cached_tokens"] * 1.0 / 1e6 * 60 / 3600)

    # One cache; what was sent with it carries only the remainder and no system/tools.
    creates = env.requests("/cachedContents")
    assert len(creates) == 1
    create = dict(creates[0]["json"])
    assert create["model"] == f"models/{FLASH}"
    assert create["ttl"] == "3600s"
    types.CreateCachedContentConfig.model_validate(
        {k: v for k, v in create.items() if k != "model"}
    )
    sent = env.generate_bodies()
    assert "cachedContent" not in sent[0]
    assert sent[0]["systemInstruction"]["parts"][0]["text"] == SYSTEM
    for body in sent[1:]:
        assert body["cachedContent"] == notes["cache_name"]
        assert "systemInstruction" not in body
        assert "tools" not in body
        assert body["contents"] == [
            {"role": "user", "parts": [{"text": body["contents"][0]["parts"][0]["text"]}]}
        ]


async def test_no_cache_when_storage_costs_more_than_it_saves(env: Env) -> None:
    dear = {
        FLASH: CacheModel(1024, CachePrices(input=0.30, cached_input=0.03, storage_per_hour=50.0))
    }
    adapter = env.adapter(models=dear)
    for index in range(5):
        _, notes = await ask(adapter, request(f"q{index}"))
        assert notes == {}
    assert env.requests("/cachedContents") == []


async def test_no_prices_means_no_automatic_cache_but_force_works(env: Env) -> None:
    adapter = env.adapter(models={FLASH: CacheModel(1024, None)})
    for index in range(3):
        assert (await ask(adapter, request(f"q{index}")))[1] == {}
    _, notes = await ask(adapter, request("forced"), "force")
    assert notes["cache_event"] == "created"
    assert notes["cache_storage_usd"] == 0.0


async def test_no_cache_below_the_minimum_size(env: Env) -> None:
    adapter = env.adapter()
    small = {
        "model": FLASH,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
    }
    for _ in range(3):
        assert (await ask(adapter, small, "force"))[1] == {}
    assert env.requests("/cachedContents") == []
    assert "systemInstruction" in env.generate_bodies()[-1]


async def test_provider_too_small_is_remembered_and_sent_uncached(env: Env) -> None:
    # We believe the minimum is 1,024 tokens; this provider wants 8,192.
    strict = create_app(GeminiEmulatorConfig(cache_min_tokens={FLASH: 8192}), clock=env.clock)
    transport = httpx.ASGITransport(app=strict)
    async with httpx.AsyncClient(transport=transport, base_url="http://g/v1beta") as client:
        local = Env(env.clock, strict, client, env.db, env.path)
        adapter = local.adapter()
        reply, notes = await ask(adapter, request("q1"), "force")
        assert notes == {"cache_event": "fallback"}  # tried, refused, sent uncached
        assert reply["choices"][0]["message"]["content"]
        assert "systemInstruction" in local.generate_bodies()[-1]
        assert (await ask(adapter, request("q2"), "force"))[1] == {}
        assert len(local.requests("/cachedContents")) == 1  # not asked again


async def test_force_creates_on_first_sight_and_off_never_uses(env: Env) -> None:
    adapter = env.adapter()
    _, notes = await ask(adapter, request("q1"), "force")
    assert notes["cache_event"] == "created"
    _, off = await ask(adapter, request("q2"), "off")
    assert off == {}
    last = env.generate_bodies()[-1]
    assert "cachedContent" not in last
    assert last["systemInstruction"]["parts"][0]["text"] == SYSTEM
    _, auto = await ask(adapter, request("q3"))
    assert auto["cache_event"] == "hit"


async def test_policy_mode_off_is_the_default_when_configured(env: Env) -> None:
    adapter = env.adapter(policy=CachePolicy(mode="off", window_s=600))  # type: ignore[arg-type]
    for index in range(4):
        assert (await ask(adapter, request(f"q{index}")))[1] == {}
    _, notes = await ask(adapter, request("q"), "force")
    assert notes["cache_event"] == "created"


async def test_gone_cache_is_recreated_once(env: Env) -> None:
    adapter = env.adapter()
    _, notes = await ask(adapter, request("q1"), "force")
    env.app.state.caches.delete(notes["cache_name"])  # the provider lost it
    reply, again = await ask(adapter, request("q2"))
    assert again["cache_event"] == "recreated"
    assert again["cache_name"] != notes["cache_name"]
    assert again["cached_tokens"] > 3000
    assert reply["usage"]["prompt_tokens_details"]["cached_tokens"] == again["cached_tokens"]
    _, hit = await ask(adapter, request("q3"))
    assert (hit["cache_event"], hit["cache_name"]) == ("hit", again["cache_name"])


async def test_falls_back_uncached_when_recreation_fails(env: Env) -> None:
    adapter = env.adapter()
    _, notes = await ask(adapter, request("q1"), "force")
    env.app.state.caches.delete(notes["cache_name"])
    env.app.state.faults.add(path="/cachedContents", status=503, times=1)
    reply, fallback = await ask(adapter, request("q2"))
    assert fallback == {"cache_event": "fallback"}
    assert reply["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    last = env.generate_bodies()[-1]
    assert "cachedContent" not in last
    assert last["systemInstruction"]["parts"][0]["text"] == SYSTEM


async def test_falls_back_when_the_recreated_cache_is_refused_too(env: Env) -> None:
    adapter = env.adapter()
    await ask(adapter, request("q1"), "force")
    env.app.state.faults.add(path=":generateContent", status=404, times=2)
    reply, notes = await ask(adapter, request("q2"))
    assert notes == {"cache_event": "fallback"}
    assert reply["choices"][0]["message"]["content"]
    assert len(env.requests("/cachedContents")) == 2  # created, recreated once, no more
    assert "cachedContent" not in env.generate_bodies()[-1]


async def test_expired_cache_is_not_used(env: Env) -> None:
    adapter = env.adapter()
    _, notes = await ask(adapter, request("q1"), "force")
    env.clock.advance(3700)  # past the TTL: the provider deleted it, nobody extended it
    _, after = await ask(adapter, request("q2"), "force")
    assert after["cache_event"] == "created"
    assert after["cache_name"] != notes["cache_name"]
    assert all(
        r["json"].get("cachedContent") != notes["cache_name"] for r in env.requests(":generate")[1:]
    )


async def test_caches_never_cross_models_or_credentials(env: Env) -> None:
    a, b = env.adapter("key-a"), env.adapter("key-b")
    _, flash = await ask(a, request("q"), "force")
    _, pro = await ask(a, request("q", model=PRO), "force")
    _, other_key = await ask(b, request("q"), "force")
    names = {flash["cache_name"], pro["cache_name"], other_key["cache_name"]}
    assert len(names) == 3
    assert {flash["cache_event"], pro["cache_event"], other_key["cache_event"]} == {"created"}
    # Each request used the cache of its own model and key.
    sent = {
        (r["path"], r["headers"]["x-goog-api-key"], r["json"].get("cachedContent"))
        for r in env.requests(":generateContent")
    }
    assert (f"/v1beta/models/{FLASH}:generateContent", "key-a", flash["cache_name"]) in sent
    assert (f"/v1beta/models/{PRO}:generateContent", "key-a", pro["cache_name"]) in sent
    assert (f"/v1beta/models/{FLASH}:generateContent", "key-b", other_key["cache_name"]) in sent
    registry = SqliteCacheRegistry(env.db)
    assert len(await registry.entries(credential=credential_hash("key-a"))) == 2
    assert len(await registry.entries(credential=credential_hash("key-b"))) == 1


async def test_registry_survives_a_restart(env: Env) -> None:
    _, notes = await ask(env.adapter(), request("q1"), "force")
    await env.db.close()
    env.db = await Database.open(env.path)
    _, after = await ask(env.adapter(), request("q2"))
    assert (after["cache_event"], after["cache_name"]) == ("hit", notes["cache_name"])
    assert len(env.requests("/cachedContents")) == 1


async def test_a_burst_makes_one_cache(env: Env) -> None:
    adapter = env.adapter()
    results = await asyncio.gather(*(ask(adapter, request(f"q{i}"), "force") for i in range(6)))
    names = {notes["cache_name"] for _, notes in results}
    assert len(names) == 1
    assert sorted(notes["cache_event"] for _, notes in results) == ["created"] + ["hit"] * 5
    assert len(env.requests("/cachedContents")) == 1


async def test_a_use_near_expiry_extends_the_ttl_first(env: Env) -> None:
    adapter = env.adapter()
    _, notes = await ask(adapter, request("q1"), "force")
    name = notes["cache_name"]
    env.clock.advance(1000)  # most of the TTL left: nothing to do
    await ask(adapter, request("q2"))
    assert env.requests(name, "PATCH") == []
    env.clock.advance(1400)  # under half left: the use extends it before sending
    _, hit = await ask(adapter, request("q3"))
    assert hit["cache_event"] == "hit"
    patches = env.requests(name, "PATCH")
    assert len(patches) == 1
    assert patches[0]["query"] == {"updateMask": "ttl"}
    assert patches[0]["json"] == {"ttl": "3600s"}
    assert env.app.state.caches.get(name).expire_time == pytest.approx(env.clock.now() + 3600)


async def test_maintenance_extends_caches_in_use_and_deletes_idle_ones(env: Env) -> None:
    adapter = env.adapter()
    manager = adapter._cache
    assert manager is not None
    _, notes = await ask(adapter, request("q1"), "force")
    name = notes["cache_name"]
    env.clock.advance(1000)
    await ask(adapter, request("q2"))  # used; 2,600 s left, no extension needed yet

    env.clock.advance(1000)  # 1,600 s left, used 1,000 s ago: keep it alive
    report = await manager.maintain()
    assert report.extended == [name]
    assert env.app.state.caches.get(name).expire_time == pytest.approx(env.clock.now() + 3600)

    env.clock.advance(600)  # used 1,600 s ago, 3,000 s left: nothing to do
    report = await manager.maintain()
    assert (report.extended, report.deleted) == ([], [])

    env.clock.advance(200)  # idle for idle_delete: deleted at the provider and forgotten
    report = await manager.maintain()
    assert report.deleted == [name]
    assert env.requests(name, "DELETE")
    assert env.app.state.caches.page(100, "")[0] == []
    assert await SqliteCacheRegistry(env.db).entries(credential=manager.credential) == []


async def test_maintenance_forgets_expired_and_vanished_caches(env: Env) -> None:
    adapter = env.adapter(policy=CachePolicy(window_s=600, ttl_s=600, idle_delete_s=7200))
    manager = adapter._cache
    assert manager is not None
    _, first = await ask(adapter, request("q1"), "force")
    _, second = await ask(adapter, request("other", model=PRO), "force")
    env.app.state.caches.delete(second["cache_name"])
    env.clock.advance(400)  # under half the ttl left: maintenance tries to extend
    report = await manager.maintain()
    assert report.extended == [first["cache_name"]]
    assert report.forgotten == [second["cache_name"]]
    env.clock.advance(10_000)
    report = await manager.maintain()
    assert report.forgotten == [first["cache_name"]]
    rows = await env.db.fetchall("SELECT COUNT(*) FROM gemini_prefix_seen")
    assert rows[0][0] == 0  # sightings older than the window are pruned


async def test_growing_conversation_reuses_its_early_prefix(env: Env) -> None:
    adapter = env.adapter()
    document = "Clause text of the contract. " * 300
    history: list[dict[str, Any]] = [{"role": "user", "content": document + "Question 1?"}]
    events = []
    for turn in range(2, 6):
        reply, notes = await ask(adapter, {"model": FLASH, "messages": history})
        events.append(notes.get("cache_event"))
        history += [
            reply["choices"][0]["message"],
            {"role": "user", "content": f"Question {turn}?"},
        ]
        env.clock.advance(30)
    # Turn 1 has nothing before its question; from turn 2 the first exchange repeats,
    # is cached on its second sighting and then hit.
    assert events == [None, None, "created", "hit"]


async def test_stream_reports_cached_tokens_when_done(env: Env) -> None:
    adapter = env.adapter()
    await ask(adapter, request("q1"), "force")
    stream = await adapter.open_stream(request("q2", stream=True), headers={})
    events = [event async for event in stream.events()]
    await stream.aclose()
    assert events[-1] == b"data: [DONE]\n\n"
    assert stream.notes["cache_event"] == "hit"
    assert stream.notes["cached_tokens"] > 3000


async def test_recreate_works_for_streams(env: Env) -> None:
    adapter = env.adapter()
    _, notes = await ask(adapter, request("q1"), "force")
    env.app.state.caches.delete(notes["cache_name"])
    stream = await adapter.open_stream(request("q2"), headers={})
    events = [event async for event in stream.events()]
    await stream.aclose()
    assert b"[DONE]" in events[-1]
    assert stream.notes["cache_event"] == "recreated"


async def test_adapter_refuses_a_manager_with_another_key(env: Env) -> None:
    manager = env.adapter("key-a")._cache
    with pytest.raises(ValueError, match="API key"):
        GeminiAdapter(env.client, api_key="key-b", cache=manager, clock=env.clock)


class _BrokenTouch(SqliteCacheRegistry):
    async def touch(self, name: str, now_ms: int) -> None:
        raise RuntimeError("disk full")


async def test_registry_failures_never_fail_the_request(env: Env) -> None:
    manager = CacheManager(
        env.client,
        api_key="key-a",
        registry=_BrokenTouch(env.db),
        policy=POLICY,
        models=MODELS,
        clock=env.clock,
    )
    adapter = GeminiAdapter(env.client, api_key="key-a", cache=manager, clock=env.clock)
    reply, notes = await ask(adapter, request("q1"), "force")
    assert notes["cache_event"] == "created"  # the answer survives a failed bookkeeping write
    assert reply["choices"][0]["message"]["content"]

    await env.db.close()  # the registry is gone altogether: send uncached
    reply, notes = await ask(adapter, request("q2"))
    assert notes == {"cache_event": "fallback"}
    assert "cachedContent" not in env.generate_bodies()[-1]
    env.db = await Database.open(env.path)


async def test_reconcile_adopts_caches_the_registry_lost(env: Env) -> None:
    adapter = env.adapter()
    _, notes = await ask(adapter, request("q1"), "force")
    manager = adapter._cache
    assert manager is not None
    # A crash lost the registry row; an unrelated cache (not ours) must be left alone.
    await SqliteCacheRegistry(env.db).forget(notes["cache_name"])
    env.app.state.caches.create(
        {
            "model": f"models/{FLASH}",
            "displayName": "someone else",
            "systemInstruction": {"parts": [{"text": SYSTEM}]},
        }
    )
    assert await manager.reconcile() == [notes["cache_name"]]
    assert await manager.reconcile() == []
    _, hit = await ask(adapter, request("q2"))
    assert (hit["cache_event"], hit["cache_name"]) == ("hit", notes["cache_name"])
