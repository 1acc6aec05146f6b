"""Pure cache rules: candidate prefixes, fingerprints, economics (adapters.gemini.cache)."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.errors import Unsupported
from adapters.gemini.cache import (
    MAX_CANDIDATES,
    CacheMode,
    CachePrices,
    cache_body,
    candidates,
    credential_hash,
    economics,
    estimate_tokens,
    parse_mode,
    storage_cost,
    varying_start,
    with_cache,
)
from adapters.gemini.translate import GeminiCall, build_request

FLASH = CachePrices(input=0.30, cached_input=0.03, storage_per_hour=1.00)
PRO = CachePrices(input=1.25, cached_input=0.125, storage_per_hour=4.50)
CRED = credential_hash("key-a")
BIG = "policy text " * 500  # ~1,500 tokens


def call(
    messages: list[dict[str, Any]], model: str = "gemini-2.5-flash", **extra: Any
) -> GeminiCall:
    return build_request({"model": model, "messages": messages, **extra})


def chat(*turns: str, system: str | None = BIG) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    for index, text in enumerate(turns):
        messages.append({"role": "user" if index % 2 == 0 else "assistant", "content": text})
    return messages


def test_single_turn_offers_system_only_prefix() -> None:
    found = candidates(call(chat("question?")), credential=CRED, min_tokens=1)
    assert [c.end for c in found] == [0]
    assert found[0].tokens >= 1400


def test_multi_turn_offers_every_cut_after_a_model_turn() -> None:
    c = call(chat(BIG, "answer one", "q2", "answer two", "q3"))
    found = candidates(c, credential=CRED, min_tokens=1)
    assert [x.end for x in found] == [0, 2, 4]
    assert found[0].tokens < found[1].tokens < found[2].tokens
    # The cuts are shared by later turns of the same conversation.
    later = candidates(
        call(chat(BIG, "answer one", "q2", "answer two", "q3", "answer three", "q4")),
        credential=CRED,
        min_tokens=1,
    )
    assert [x.fingerprint for x in later[:3]] == [x.fingerprint for x in found]


def test_min_tokens_filters_small_candidates() -> None:
    c = call(chat("q", system="short system"))
    assert candidates(c, credential=CRED, min_tokens=1024) == []
    assert [x.end for x in candidates(c, credential=CRED, min_tokens=1)] == [0]


def test_no_system_no_tools_single_turn_has_nothing_to_cache() -> None:
    assert candidates(call(chat(BIG, system=None)), credential=CRED, min_tokens=1) == []


def test_tool_loop_keeps_the_current_step_out_of_the_prefix() -> None:
    messages = [
        *chat(BIG, "earlier answer", "use the tool"),
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]
    c = call(messages)
    assert varying_start(c.payload["contents"]) == 2
    assert [x.end for x in candidates(c, credential=CRED, min_tokens=1)] == [0, 2]


def test_fingerprints_separate_models_credentials_system_and_tools() -> None:
    base = call(chat("q"))
    fp = candidates(base, credential=CRED, min_tokens=1)[0].fingerprint
    other_model = candidates(
        call(chat("q"), model="gemini-2.5-pro"), credential=CRED, min_tokens=1
    )[0]
    other_key = candidates(base, credential=credential_hash("key-b"), min_tokens=1)[0]
    other_system = candidates(call(chat("q", system=BIG + "!")), credential=CRED, min_tokens=1)[0]
    tool = {
        "type": "function",
        "function": {
            "name": "f",
            "parameters": {"type": "object", "properties": {"a": {"type": "string"}}},
        },
    }
    with_tools = candidates(call(chat("q"), tools=[tool]), credential=CRED, min_tokens=1)[0]
    with_choice = candidates(
        call(chat("q"), tools=[tool], tool_choice="required"), credential=CRED, min_tokens=1
    )[0]
    assert (
        len(
            {
                fp,
                other_model.fingerprint,
                other_key.fingerprint,
                other_system.fingerprint,
                with_tools.fingerprint,
                with_choice.fingerprint,
            }
        )
        == 6
    )


def test_fingerprint_ignores_what_is_sent_alongside_a_cache() -> None:
    a = candidates(call(chat("q one")), credential=CRED, min_tokens=1)[0]
    b = candidates(
        call(chat("q two"), temperature=0.2, max_tokens=9), credential=CRED, min_tokens=1
    )[0]
    assert a.fingerprint == b.fingerprint


def test_candidates_are_capped_keeping_the_shortest_and_latest() -> None:
    turns = [f"turn {i} " + "x" * 40 for i in range(21)]
    found = candidates(call(chat(*turns)), credential=CRED, min_tokens=1)
    assert len(found) == MAX_CANDIDATES
    assert found[0].end == 0
    assert [x.end for x in found[1:]] == [12, 14, 16, 18, 20]


def test_cache_body_and_request_with_cache() -> None:
    c = call(chat(BIG, "answer", "q2"), temperature=0.5)
    target = candidates(c, credential=CRED, min_tokens=1)[-1]
    body = cache_body(c, target)
    assert body["model"] == "models/gemini-2.5-flash"
    assert body["systemInstruction"] == c.payload["systemInstruction"]
    assert body["contents"] == c.payload["contents"][:2]
    sent = with_cache(c, "cachedContents/abc", target)
    assert sent == {
        "contents": [{"role": "user", "parts": [{"text": "q2"}]}],
        "generationConfig": {"temperature": 0.5},
        "cachedContent": "cachedContents/abc",
    }
    system_only = cache_body(c, candidates(c, credential=CRED, min_tokens=1)[0])
    assert "contents" not in system_only


def test_estimate_tokens() -> None:
    assert estimate_tokens("abcd" * 100) == 100
    assert estimate_tokens([{"inlineData": {"mimeType": "image/png", "data": "A" * 99999}}]) == 258
    assert estimate_tokens(None) == 0


@pytest.mark.parametrize(
    ("prices", "sightings", "window_s", "tokens", "already", "worth_it"),
    [
        # 2.5 Flash breaks even near 3.7 reads per hour (providers.md §3.9).
        (FLASH, 3, 3600, 100_000, 0, False),
        (FLASH, 4, 3600, 100_000, 0, True),
        # A short window means a high rate.
        (FLASH, 2, 600, 100_000, 0, True),
        # 2.5 Pro needs about 4 reads per hour.
        (PRO, 4, 3600, 50_000, 0, False),
        (PRO, 5, 3600, 50_000, 0, True),
        # Only the tokens a shorter cache does not already serve count as saving.
        (FLASH, 10, 3600, 100_000, 80_000, False),
        (FLASH, 10, 3600, 100_000, 50_000, True),
        # No discount, no saving.
        (CachePrices(1.0, 1.0, 0.0), 100, 3600, 10_000, 0, False),
        # Free storage with any discount is worth it.
        (CachePrices(1.0, 0.5, 0.0), 1, 3600, 10_000, 0, True),
    ],
)
def test_economics_table(
    prices: CachePrices, sightings: int, window_s: int, tokens: int, already: int, worth_it: bool
) -> None:
    verdict = economics(
        sightings=sightings, window_s=window_s, tokens=tokens, prices=prices, already_cached=already
    )
    assert verdict.worth_it is worth_it
    assert verdict.hits_per_hour == pytest.approx(sightings / (window_s / 3600))


def test_economics_numbers() -> None:
    verdict = economics(sightings=4, window_s=3600, tokens=1_000_000, prices=FLASH)
    assert verdict.saving_per_hour == pytest.approx(4 * 0.27)
    assert verdict.storage_per_hour == pytest.approx(1.0)


def test_storage_cost() -> None:
    assert storage_cost(1_000_000, FLASH, 1800) == pytest.approx(0.5)
    assert storage_cost(1_000_000, None, 1800) == 0.0
    assert storage_cost(1_000_000, FLASH, -5) == 0.0


def test_parse_mode() -> None:
    assert parse_mode(None, CacheMode.AUTO) is CacheMode.AUTO
    assert parse_mode(" Force ", CacheMode.AUTO) is CacheMode.FORCE
    assert parse_mode("off", CacheMode.FORCE) is CacheMode.OFF
    with pytest.raises(Unsupported) as caught:
        parse_mode("always", CacheMode.AUTO)
    assert caught.value.param == "X-Context-Cache"


def test_credential_hash_hides_the_key() -> None:
    assert "key-a" not in credential_hash("key-a")
    assert credential_hash("key-a") != credential_hash("key-b")
