"""The life of a managed Gemini cache end to end: expiry at the provider, re-creation
once and then the uncached fallback, TTL extension, idle deletion, and the registry
surviving a restart. openai SDK -> proxy -> Gemini emulator.

Each test gets its own emulator, proxy and SQLite file, with two ManualClocks (proxy and
emulator) that start together; moving only the emulator's makes a cache expire on the
provider behind the proxy's back.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.gemini_stack import (
    GEMINI_KEY,
    TTL,
    GeminiStack,
    ask,
    assert_wire,
    cached,
    long_system,
    running,
    used_cache,
)


@pytest.fixture
def gem(tmp_path: Path) -> Iterator[GeminiStack]:
    with running(tmp_path) as stack:
        yield stack
        assert_wire(stack, key="")  # two providers here: either key, never the client's


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_a_cache_expired_on_the_provider_is_recreated_once(gem: GeminiStack, stream: bool) -> None:
    system = long_system("expiry")
    ask(gem, system, "Question 1", mode="force")
    old = gem.created_name()
    gem.emulator_clock.advance(TTL + 1)  # gone at Google; the proxy's clock has not moved

    answer = ask(gem, system, "Question 2", stream=stream)
    assert answer.lane == "realtime+cache"
    assert len(gem.cache_creates()) == 2
    new = gem.created_name()
    assert new != old
    assert [used_cache(g) for g in gem.generations()[-2:]] == [old, new]
    assert cached(answer) == gem.state.caches.get(new).total_tokens

    assert ask(gem, system, "Question 3").lane == "realtime+cache"
    assert used_cache(gem.generations()[-1]) == new
    assert len(gem.cache_creates()) == 2
    rows = gem.new_routes(3)
    assert [r["cache_name"] for r in rows] == [old, new, new]
    assert all(r["status"] == 200 for r in rows)


def test_when_recreation_fails_the_request_goes_uncached(gem: GeminiStack) -> None:
    system = long_system("fallback")
    ask(gem, system, "Question 1", mode="force")
    old = gem.created_name()
    gem.emulator_clock.advance(TTL + 1)
    gem.state.faults.add(path="/cachedContents", status=500)  # the re-create fails

    answer = ask(gem, system, "Question 2")
    assert answer.lane == "realtime"
    assert answer.choice.message.content
    assert cached(answer) == 0
    assert len(gem.cache_creates()) == 2
    last_two = gem.generations()[-2:]
    assert used_cache(last_two[0]) == old
    assert used_cache(last_two[1]) is None
    assert last_two[1]["json"]["systemInstruction"] == {"parts": [{"text": system}]}
    row = gem.new_routes(2)[-1]
    assert (row["status"], row["lane"], row["cache_name"], row["cached_tokens"]) == (
        200,
        "realtime",
        None,
        0,
    )

    # The provider recovers: the prompt has been seen often enough to be cached again.
    again = ask(gem, system, "Question 3")
    assert again.lane == "realtime+cache"
    assert len(gem.cache_creates()) == 3
    assert used_cache(gem.generations()[-1]) == gem.created_name()


def test_a_recreated_cache_that_is_gone_too_is_not_recreated_again(gem: GeminiStack) -> None:
    system = long_system("twice")
    ask(gem, system, "Question 1", mode="force")
    # The next two generateContent calls hear "cache not found".
    gem.state.faults.add(path=":generateContent", status=404, times=2)
    answer = ask(gem, system, "Question 2")
    assert answer.lane == "realtime"
    assert len(gem.cache_creates()) == 2  # one re-creation, no more
    generations = gem.generations()[-3:]
    assert [used_cache(g) is not None for g in generations] == [True, True, False]
    assert gem.new_routes(2)[-1]["status"] == 200


def restart_and_ask_again(gem: GeminiStack) -> None:
    system = long_system("restart")
    ask(gem, system, "Question 1", mode="force")
    name = gem.created_name()
    gem.reset()
    gem.restart_proxy()  # a new app on the same SQLite file
    # At start-up the proxy lists the provider's caches to adopt any a crash lost.
    assert [r["method"] for r in gem.sent("/cachedContents")][:1] == ["GET"]
    answer = ask(gem, system, "Question 2")
    assert answer.lane == "realtime+cache"
    assert gem.cache_creates() == []
    assert used_cache(gem.generations()[-1]) == name
    assert len(gem.live_caches()) == 1
    row = gem.new_routes(1)[-1]
    assert (row["lane"], row["cache_name"]) == ("realtime+cache", name)


def test_the_registry_survives_a_restart(tmp_path: Path) -> None:
    with running(tmp_path, second_provider=False) as gem:
        restart_and_ask_again(gem)
        assert_wire(gem, GEMINI_KEY)


def test_the_registry_survives_a_restart_with_two_keys_on_one_project(gem: GeminiStack) -> None:
    restart_and_ask_again(gem)


def test_a_cache_in_use_is_extended_and_an_idle_one_deleted(gem: GeminiStack) -> None:
    system = long_system("lifetime")
    ask(gem, system, "Question 1", mode="force")
    name = gem.created_name()
    # Past half its TTL a hit extends it (PATCH ttl) before it is used.
    gem.proxy_clock.advance(TTL * 0.6)
    gem.emulator_clock.advance(TTL * 0.6)
    assert ask(gem, system, "Question 2").lane == "realtime+cache"
    [patch] = gem.sent(f"/{name}", method="PATCH")
    assert patch["query"] == {"updateMask": "ttl"}
    assert patch["json"] == {"ttl": f"{TTL}s"}
    # Past the first expiry it is alive thanks to the PATCH (and, early in its new TTL,
    # not extended again).
    gem.proxy_clock.advance(TTL * 0.45)
    gem.emulator_clock.advance(TTL * 0.45)
    assert ask(gem, system, "Question 3").lane == "realtime+cache"
    assert used_cache(gem.generations()[-1]) == name
    assert len(gem.cache_creates()) == 1
    assert len(gem.sent(f"/{name}", method="PATCH")) == 1

    # Idle for longer than idle_delete (30 min): maintenance deletes it at the provider.
    gem.proxy_clock.advance(1801)
    gem.emulator_clock.advance(1801)
    maintenance = gem.proxy.app.state.services.extras["cache_maintenance"]
    gem.proxy.call(maintenance.run_once())
    assert [r["method"] for r in gem.sent(f"/{name}")] == ["PATCH", "DELETE"]
    assert gem.live_caches() == []
    # The old sightings are out of the window: the next request starts over, uncached.
    assert ask(gem, system, "Question 4").lane == "realtime"
    assert len(gem.cache_creates()) == 1


def test_a_cache_gone_when_its_ttl_is_extended_is_recreated(gem: GeminiStack) -> None:
    system = long_system("extend-gone")
    ask(gem, system, "Question 1", mode="force")
    old = gem.created_name()
    # The proxy is past half the TTL (so it extends before use); the provider is past
    # the expiry, so the PATCH hears "not found".
    gem.proxy_clock.advance(TTL * 0.6)
    gem.emulator_clock.advance(TTL + 1)
    answer = ask(gem, system, "Question 2")
    assert answer.lane == "realtime+cache"
    assert [r["method"] for r in gem.sent(f"/{old}")] == ["PATCH"]
    assert len(gem.cache_creates()) == 2
    new = gem.created_name()
    assert used_cache(gem.generations()[-1]) == new
    assert len(gem.generations()) == 2  # no failed generateContent on the way
    assert cached(answer) > 0
