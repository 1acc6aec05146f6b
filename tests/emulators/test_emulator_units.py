"""Pure parts of the OpenAI/DeepSeek emulator: the prompt caches and the schema sampler."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.clock import ManualClock
from adapters.emulators.prompt_cache import DeepSeekPrefixCache, OpenAIPrefixCache, message_tokens
from adapters.emulators.schema_sample import sample
from adapters.emulators.tokens import count_messages


def conversation(system_chars: int, user: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "s" * system_chars},
        {"role": "user", "content": user},
    ]


def test_openai_cache_hits_in_steps_from_the_minimum() -> None:
    cache = OpenAIPrefixCache(ManualClock())
    first = conversation(6000, "one")  # ~1,500 tokens of shared prefix
    assert cache.use("gpt-4o", first, count_messages(first)) == 0
    second = conversation(6000, "two")
    hit = cache.use("gpt-4o", second, count_messages(second))
    assert hit % 128 == 0
    assert 1024 <= hit <= 1500


def test_openai_cache_never_hits_below_the_minimum() -> None:
    cache = OpenAIPrefixCache(ManualClock())
    # 900 shared tokens, in a prompt above the minimum: the shared part is too short.
    a = conversation(3600, "x" * 2000)
    b = conversation(3600, "y" * 2000)
    assert cache.use("gpt-4o", a, count_messages(a)) == 0
    assert cache.use("gpt-4o", b, count_messages(b)) == 0


def test_openai_cache_entries_expire_when_idle() -> None:
    clock = ManualClock()
    cache = OpenAIPrefixCache(clock, ttl=300)
    prompt = conversation(8000, "q")
    tokens = count_messages(prompt)
    cache.use("gpt-4o", prompt, tokens)
    clock.advance(299)
    assert cache.use("gpt-4o", prompt, tokens) > 0  # and this use refreshes it
    clock.advance(299)
    assert cache.use("gpt-4o", prompt, tokens) > 0
    clock.advance(301)
    assert cache.use("gpt-4o", prompt, tokens) == 0


def test_deepseek_units() -> None:
    cache = DeepSeekPrefixCache()
    a, b, c = ({"role": "user", "content": t * 40} for t in "abc")
    assert cache.use("m", [a, b]) == 0
    assert cache.use("m", [a, b]) == message_tokens(a) + message_tokens(b)  # whole input
    assert cache.use("m", [a, c]) == 0  # partial match of a unit misses ...
    assert cache.use("m", [a, {"role": "user", "content": "z"}]) == message_tokens(a)  # ... seeds a
    assert cache.use("other-model", [a, b]) == 0
    reply = {"role": "assistant", "content": "answer"}
    cache.store_output("m", [b, reply])
    assert cache.use("m", [b, reply, c]) == message_tokens(b) + message_tokens(reply)


def test_message_tokens_sum_to_count_messages() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "rules"},
        {"role": "user", "content": [{"type": "text", "text": "hello"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
    ]
    assert sum(message_tokens(m) for m in messages) + 3 == count_messages(messages)


@pytest.mark.parametrize(
    ("schema", "check"),
    [
        ({"type": "string", "minLength": 12, "maxLength": 14}, lambda v: 12 <= len(v) <= 14),
        ({"type": "string", "format": "date-time"}, lambda v: v.endswith("Z")),
        (
            {"type": "integer", "minimum": 50, "maximum": 60},
            lambda v: isinstance(v, int) and 50 <= v <= 60,
        ),
        ({"type": "integer", "exclusiveMaximum": 1}, lambda v: v < 1),
        ({"type": "number"}, lambda v: isinstance(v, float)),
        ({"type": "boolean"}, lambda v: isinstance(v, bool)),
        ({"type": "null"}, lambda v: v is None),
        ({"const": 7}, lambda v: v == 7),
        ({"enum": ["a", "b"]}, lambda v: v == "a"),
        ({"anyOf": [{"type": "null"}, {"type": "integer"}]}, lambda v: isinstance(v, int)),
        ({"type": "array", "items": {"type": "boolean"}, "minItems": 3}, lambda v: len(v) == 3),
        ({"type": "array", "items": {"type": "string"}, "maxItems": 0}, lambda v: v == []),
        ({"properties": {"a": {"type": "string"}}}, lambda v: set(v) == {"a"}),
        (
            {
                "$defs": {"n": {"type": "integer"}},
                "type": "object",
                "properties": {"x": {"$ref": "#/$defs/n"}},
            },
            lambda v: isinstance(v["x"], int),
        ),
        (None, lambda v: v == {}),
    ],
)
def test_schema_samples(schema: dict[str, Any] | None, check: Any) -> None:
    value = sample(schema, "seed")
    assert check(value), value
    assert sample(schema, "seed") == value  # deterministic


def test_recursive_schema_terminates() -> None:
    tree = {
        "$defs": {
            "node": {
                "type": "object",
                "properties": {"children": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
            }
        },
        "$ref": "#/$defs/node",
    }
    assert isinstance(sample(tree), dict)
