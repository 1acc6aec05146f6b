"""Managed Gemini context caching end to end (when a cache is made, used and billed):
openai SDK -> proxy -> Gemini emulator. The lifecycle (expiry, re-creation, restarts,
maintenance) is in test_gemini_cache_lifecycle.py.

Each test gets its own emulator, proxy and SQLite file. Cache minimums: the emulator
enforces 1,024 tokens for 2.5 Flash and Flash-Lite and 2,048 for 2.5 Pro (the proxy's
config agrees, except for ``flash-lite-optimist``, configured at 256).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.e2e.conftest import CLIENT_KEY
from tests.e2e.gemini_stack import (
    FLASH,
    GEMINI_KEY,
    GEMINI_KEY_B,
    PRO,
    START,
    TTL,
    GeminiStack,
    ask,
    assert_valid_cache_create,
    assert_wire,
    cached,
    long_system,
    running,
    used_cache,
)

TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "find_clause",
        "description": "Look a clause up by number.",
        "parameters": {
            "type": "object",
            "properties": {"number": {"type": "integer"}},
            "required": ["number"],
        },
    },
}


@pytest.fixture
def gem(tmp_path: Path) -> Iterator[GeminiStack]:
    with running(tmp_path) as stack:
        yield stack
        assert_wire(stack, key="")  # two providers here: either key, never the client's


def expected_cost(
    gem: GeminiStack, row: dict[str, Any], *, storage_s: float = 0.0, created: bool = False
) -> float:
    """Uncached prompt at the input price, cached tokens at the cached price, output at
    the output price, plus the cache's storage since its last use, plus (for the request
    that created the cache) writing the cache's tokens once at the input price."""
    pricer = gem.proxy.app.state.services.extras["pricer"]
    rates = pricer.rates("gemini", FLASH, START)
    inp, cached_rate, out = rates.for_prompt(row["prompt_tokens"])
    assert cached_rate < inp  # otherwise nothing here would be tested
    prompt, hit = row["prompt_tokens"], row["cached_tokens"]
    tokens = (prompt - hit) * inp + hit * cached_rate + row["completion_tokens"] * out
    storage = hit * rates.cache_storage_per_hour * storage_s / 3600
    writing = hit * inp if created else 0
    return float((tokens + storage + writing) / 1e6)


def test_a_repeated_long_system_prompt_is_cached_after_min_repeats(gem: GeminiStack) -> None:
    system = long_system("auto")
    first = ask(gem, system, "Which clause covers case 1?")
    assert first.lane == "realtime"
    assert cached(first) == 0
    assert gem.cache_creates() == []
    assert gem.generations()[-1]["json"]["systemInstruction"] == {"parts": [{"text": system}]}

    second = ask(gem, system, "Which clause covers case 2?")  # second sighting: create
    assert second.lane == "realtime+cache"
    [create] = gem.cache_creates()
    config = assert_valid_cache_create(create["json"], FLASH)
    assert create["headers"]["x-goog-api-key"] == GEMINI_KEY
    assert config.system_instruction is not None
    assert create["json"]["systemInstruction"] == {"parts": [{"text": system}]}
    assert create["json"]["ttl"] == f"{TTL}s"
    assert create["json"]["displayName"].startswith("costroute-")
    name = gem.created_name()
    generation = gem.generations()[-1]["json"]
    assert generation == {
        "contents": [{"role": "user", "parts": [{"text": "Which clause covers case 2?"}]}],
        "cachedContent": name,
    }
    cache_tokens = gem.state.caches.get(name).total_tokens
    assert cached(second) == cache_tokens > 1024
    assert second.usage.prompt_tokens > cache_tokens  # the question is not cached

    # Ten minutes later (on both clocks) the cache is hit; its storage since the last use
    # is charged to this request.
    gem.proxy_clock.advance(600)
    gem.emulator_clock.advance(600)
    third = ask(gem, system, "Which clause covers case 3?")
    assert third.lane == "realtime+cache"
    assert len(gem.cache_creates()) == 1
    assert used_cache(gem.generations()[-1]) == name
    assert cached(third) == cache_tokens

    rows = gem.new_routes(3)
    assert [r["lane"] for r in rows] == ["realtime", "realtime+cache", "realtime+cache"]
    assert [r["cache_name"] for r in rows] == [None, name, name]
    assert [r["cached_tokens"] for r in rows] == [0, cache_tokens, cache_tokens]
    assert rows[0]["cost_usd"] == pytest.approx(rows[0]["baseline_usd"])
    # The creating request pays for writing the cache; later hits save.
    assert rows[1]["cost_usd"] == pytest.approx(expected_cost(gem, rows[1], created=True))
    assert rows[1]["cost_usd"] > rows[1]["baseline_usd"]
    assert rows[2]["cost_usd"] == pytest.approx(expected_cost(gem, rows[2], storage_s=600.0))
    assert rows[2]["cost_usd"] < rows[2]["baseline_usd"]
    for row in rows[1:]:
        assert row["saved_usd"] == pytest.approx(row["baseline_usd"] - row["cost_usd"])
    # The baseline is the same request with every prompt token at the input price.
    uncached_row = {**rows[1], "cached_tokens": 0}
    assert rows[1]["baseline_usd"] == pytest.approx(expected_cost(gem, uncached_row))


def test_a_streamed_request_uses_and_meters_the_cache(gem: GeminiStack) -> None:
    system = long_system("stream")
    ask(gem, system, "Warm up.", mode="force")
    name = gem.created_name()
    answer = ask(gem, system, "Which clause covers case 9?", stream=True)
    assert answer.lane == "realtime+cache"
    assert cached(answer) == gem.state.caches.get(name).total_tokens
    generation = gem.generations()[-1]
    assert generation["path"].endswith(":streamGenerateContent")
    assert used_cache(generation) == name
    assert "systemInstruction" not in generation["json"]
    row = gem.new_routes(2)[-1]
    assert (row["stream"], row["lane"], row["cache_name"]) == (1, "realtime+cache", name)
    assert row["cached_tokens"] == cached(answer)
    assert row["cost_usd"] < row["baseline_usd"]


def test_tools_are_baked_into_the_cache_and_the_tool_loop_reuses_it(gem: GeminiStack) -> None:
    system = long_system("tools")
    call = ask(gem, system, "What does clause 12 say?", mode="force", tools=[TOOL])
    assert call.lane == "realtime+cache"
    [create] = gem.cache_creates()
    assert create["json"]["tools"][0]["functionDeclarations"][0]["name"] == "find_clause"
    name = gem.created_name()
    sent = gem.generations()[-1]["json"]
    assert set(sent) == {"contents", "cachedContent"}  # no tools next to the cache...
    [tool_call] = call.choice.message.tool_calls  # ...yet the model still sees them
    assert tool_call.function.name == "find_clause"

    history = [
        call.choice.message.model_dump(exclude_none=True, exclude={"annotations", "refusal"}),
        {"role": "tool", "tool_call_id": tool_call.id, "content": '{"text": "Parcels..."}'},
    ]
    answer = ask(gem, system, "What does clause 12 say?", tools=[TOOL], history=history)
    assert answer.lane == "realtime+cache"
    assert answer.choice.finish_reason == "stop"
    follow = gem.generations()[-1]["json"]
    assert used_cache(gem.generations()[-1]) == name
    assert [turn["role"] for turn in follow["contents"]] == ["user", "model", "user"]
    assert "functionResponse" in follow["contents"][2]["parts"][0]
    assert len(gem.cache_creates()) == 1


def test_no_cache_below_the_minimum_size(gem: GeminiStack) -> None:
    system = long_system("small", tokens=600)
    for index, mode in enumerate((None, None, None, "force")):
        answer = ask(gem, system, f"Question {index}", mode=mode)
        assert answer.lane == "realtime"
        assert cached(answer) == 0
    assert gem.cache_creates() == []
    assert all("systemInstruction" in g["json"] for g in gem.generations())
    assert all(r["cache_name"] is None for r in gem.new_routes(4))


def test_the_providers_too_small_answer_is_handled_and_remembered(gem: GeminiStack) -> None:
    # The proxy thinks 600 tokens are enough (min 256); the provider wants 1,024.
    system = long_system("optimist", tokens=600)
    first = ask(gem, system, "Question 1", mode="force", model="flash-lite-optimist")
    assert first.lane == "realtime"
    assert first.choice.message.content
    assert len(gem.cache_creates()) == 1  # tried, refused with 400 "too small"
    assert "systemInstruction" in gem.generations()[-1]["json"]
    second = ask(gem, system, "Question 2", mode="force", model="flash-lite-optimist")
    assert second.lane == "realtime"
    assert len(gem.cache_creates()) == 1  # not asked again
    assert gem.live_caches() == []


def test_off_never_uses_a_cache_and_force_creates_one_at_first_sight(gem: GeminiStack) -> None:
    system = long_system("modes")
    forced = ask(gem, system, "Question 1", mode="force")
    assert forced.lane == "realtime+cache"
    assert len(gem.cache_creates()) == 1
    name = gem.created_name()

    off = ask(gem, system, "Question 2", mode="off")
    assert off.lane == "realtime"
    assert cached(off) == 0
    sent = gem.generations()[-1]["json"]
    assert "cachedContent" not in sent
    assert sent["systemInstruction"] == {"parts": [{"text": system}]}

    auto = ask(gem, system, "Question 3")
    assert auto.lane == "realtime+cache"
    assert used_cache(gem.generations()[-1]) == name

    # "off" requests are not even counted: after three of them, the first "auto"
    # sighting of a new prompt does not create a cache.
    other = long_system("modes-other")
    for index in range(3):
        assert ask(gem, other, f"Off {index}", mode="off").lane == "realtime"
    assert ask(gem, other, "Auto 1").lane == "realtime"
    assert len(gem.cache_creates()) == 1
    rows = gem.new_routes(7)
    assert [r["cache_name"] for r in rows] == [name, None, name, None, None, None, None]


def test_caches_never_cross_models_or_credentials(gem: GeminiStack) -> None:
    system = long_system("shared", tokens=2600)  # above both the Flash and Pro minimums
    targets = [(FLASH, GEMINI_KEY), ("flash-b", GEMINI_KEY_B), (PRO, GEMINI_KEY)]
    for model, _ in targets:
        assert ask(gem, system, "Question 1", mode="force", model=model).lane == "realtime+cache"
    creates = gem.cache_creates()
    assert [(c["json"]["model"], c["headers"]["x-goog-api-key"]) for c in creates] == [
        (f"models/{FLASH}", GEMINI_KEY),
        (f"models/{FLASH}", GEMINI_KEY_B),
        (f"models/{PRO}", GEMINI_KEY),
    ]
    names = [gem.created_name(index) for index in range(3)]
    assert len(set(names)) == 3
    first = gem.generations()
    assert [used_cache(g) for g in first] == names
    assert [g["headers"]["x-goog-api-key"] for g in first] == [k for _, k in targets]

    # Asked again (auto), each provider and model finds its own cache and no other.
    for model, _ in targets:
        assert ask(gem, system, "Question 2", model=model).lane == "realtime+cache"
    assert len(gem.cache_creates()) == 3
    again = gem.generations()[3:]
    assert [used_cache(g) for g in again] == names
    assert [g["path"].split("/")[-1].split(":")[0] for g in again] == [FLASH, FLASH, PRO]
    rows = gem.new_routes(6)
    assert [(r["provider"], r["cache_name"]) for r in rows[3:]] == [
        ("gemini", names[0]),
        ("gemini-b", names[1]),
        ("gemini", names[2]),
    ]


def test_a_burst_of_identical_requests_makes_one_cache(gem: GeminiStack) -> None:
    system = long_system("burst")

    async def burst() -> list[str]:
        async with openai.AsyncOpenAI(
            base_url=gem.url + "/v1", api_key=CLIENT_KEY, max_retries=0
        ) as client:

            async def one(index: int) -> str:
                raw = await client.chat.completions.with_raw_response.create(
                    model=FLASH,
                    messages=[
                        {"role": "system", "content": system},
                        {"role": "user", "content": f"Question {index}"},
                    ],
                    extra_headers={"X-Context-Cache": "force"},
                )
                return raw.headers["x-costroute-lane"]

            return await asyncio.gather(*(one(i) for i in range(6)))

    assert asyncio.run(burst()) == ["realtime+cache"] * 6
    assert len(gem.cache_creates()) == 1
    name = gem.created_name()
    assert {used_cache(g) for g in gem.generations()} == {name}


def test_a_growing_conversation_caches_its_first_exchange(gem: GeminiStack) -> None:
    # No system prompt: the long document is the first user turn, and the cacheable
    # prefix ends after the model's first answer.
    document = long_system("conversation")
    turns: list[Any] = [{"role": "user", "content": document}]
    client = gem.client()
    for index in range(3):
        reply = client.chat.completions.with_raw_response.create(model=FLASH, messages=turns)
        answer = reply.parse().choices[0].message.content or ""
        lane = reply.headers["x-costroute-lane"]
        assert lane == ("realtime+cache" if index == 2 else "realtime")
        turns += [
            {"role": "assistant", "content": answer},
            {"role": "user", "content": f"And point {index + 2}?"},
        ]
    # Turn 3 saw the [document, answer] prefix a second time: cached and used.
    [create] = gem.cache_creates()
    assert create["json"]["contents"] == [
        {"role": "user", "parts": [{"text": document}]},
        {"role": "model", "parts": [{"text": turns[1]["content"]}]},
    ]
    assert "systemInstruction" not in create["json"]
    last = gem.generations()[-1]
    assert used_cache(last) == gem.created_name()
    assert [turn["role"] for turn in last["json"]["contents"]] == ["user", "model", "user"]
    assert last["json"]["contents"][0]["parts"] == [{"text": "And point 2?"}]


def test_a_retried_request_counts_as_one_sighting(gem: GeminiStack) -> None:
    system = long_system("retried")
    gem.state.faults.add(path=":generateContent", status=503)
    answer = ask(gem, system, "Asked only once")
    assert gem.new_routes(1)[-1]["attempts"] == 2
    assert gem.cache_creates() == []
    assert answer.lane == "realtime"


def test_the_request_that_creates_a_cache_pays_for_writing_it(gem: GeminiStack) -> None:
    answer = ask(gem, long_system("creation"), "Question 1", mode="force")
    assert answer.lane == "realtime+cache"
    row = gem.new_routes(1)[-1]
    assert row["cached_tokens"] > 0
    assert row["cost_usd"] >= row["baseline_usd"]
