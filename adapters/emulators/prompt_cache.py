"""Simulated provider prompt caches, so usage reports cache hits the way real bills do.

OpenAI (providers.md §1.7): automatic and exact-prefix. Prompts shorter than
``min_tokens`` (1024) never hit; a hit covers a prefix of the prompt that an earlier
request (same model) also started with, counted in ``step`` (128) token increments and
never below ``min_tokens``. An entry lives ``ttl`` seconds after its last use. Tokens are
the emulator's estimate (``tokens.py``: one per four characters), so a prefix of ``t``
tokens is the first ``4t`` characters of the prompt rendered as text.

DeepSeek (§4.4): "prefix units" are stored at the end of each request's input and at the
end of its output; a request hits the longest stored unit that is a whole-message prefix
of it. A request that shares only part of an earlier unit misses, but that shared part
becomes a unit for later requests ("A+B then A+C misses, but seeds A").
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from adapters.clock import Clock
from adapters.emulators.tokens import count_text, text_of

_CHARS_PER_TOKEN = 4


def render_message(message: Mapping[str, Any]) -> str:
    """A message as the text the model would see (role marker, content, tool calls)."""
    calls = message.get("tool_calls")
    extra = json.dumps(calls, sort_keys=True) if calls else ""
    call_id = message.get("tool_call_id") or ""
    return f"<|{message.get('role')}|>{text_of(message.get('content'))}{extra}{call_id}<|end|>"


def message_tokens(message: Mapping[str, Any]) -> int:
    """The share of ``count_messages`` one message accounts for."""
    total = 4 + count_text(text_of(message.get("content")))
    for call in message.get("tool_calls") or []:
        fn = call.get("function", {}) if isinstance(call, dict) else {}
        total += count_text(str(fn.get("name", ""))) + count_text(str(fn.get("arguments", "")))
    return total


class _Lru:
    def __init__(self, max_entries: int) -> None:
        self._items: OrderedDict[bytes, float] = OrderedDict()
        self._max = max_entries

    def get(self, key: bytes) -> float | None:
        return self._items.get(key)

    def put(self, key: bytes, when: float) -> None:
        self._items[key] = when
        self._items.move_to_end(key)
        while len(self._items) > self._max:
            self._items.popitem(last=False)


class OpenAIPrefixCache:
    def __init__(
        self,
        clock: Clock,
        *,
        min_tokens: int = 1024,
        step: int = 128,
        ttl: float = 600.0,
        max_entries: int = 200_000,
    ) -> None:
        self._clock = clock
        self._min = min_tokens
        self._step = step
        self._ttl = ttl
        self._seen = _Lru(max_entries)

    def use(self, model: str, messages: Sequence[Mapping[str, Any]], prompt_tokens: int) -> int:
        """Cached tokens for this prompt; the prompt is stored for later requests."""
        if prompt_tokens < self._min:
            return 0
        text = "".join(render_message(m) for m in messages)
        blocks = min(len(text) // (self._step * _CHARS_PER_TOKEN), prompt_tokens // self._step)
        now = self._clock.now()
        digest = hashlib.sha256(model.encode())
        width = self._step * _CHARS_PER_TOKEN
        hits = 0
        missed = False
        for block in range(blocks):
            digest.update(text[block * width : (block + 1) * width].encode())
            key = digest.copy().digest()
            last = self._seen.get(key)
            if not missed and last is not None and now - last <= self._ttl:
                hits = block + 1
            else:
                missed = True
            self._seen.put(key, now)
        cached = hits * self._step
        return cached if cached >= self._min else 0


class DeepSeekPrefixCache:
    def __init__(self, *, max_entries: int = 200_000) -> None:
        self._units = _Lru(max_entries)
        self._seen = _Lru(max_entries)

    @staticmethod
    def _chain(model: str, messages: Iterable[Mapping[str, Any]]) -> list[bytes]:
        digest = hashlib.sha256(model.encode())
        keys: list[bytes] = []
        for message in messages:
            digest.update(render_message(message).encode())
            keys.append(digest.copy().digest())
        return keys

    def use(self, model: str, messages: Sequence[Mapping[str, Any]]) -> int:
        """Hit tokens for this input; stores the unit at the end of the input."""
        keys = self._chain(model, messages)
        hit_at = 0
        for i in range(len(keys), 0, -1):
            if self._units.get(keys[i - 1]) is not None:
                hit_at = i
                break
        # The longest prefix an earlier request shared, beyond the hit, seeds a new unit.
        for i in range(len(keys), hit_at, -1):
            if self._seen.get(keys[i - 1]) is not None:
                self._units.put(keys[i - 1], 0.0)
                break
        for key in keys:
            self._seen.put(key, 0.0)
        self._units.put(keys[-1], 0.0)
        return sum(message_tokens(m) for m in messages[:hit_at])

    def store_output(self, model: str, messages: Sequence[Mapping[str, Any]]) -> None:
        """Store the unit at the end of the model's output (input + assistant reply)."""
        keys = self._chain(model, messages)
        for key in keys:
            self._seen.put(key, 0.0)
        self._units.put(keys[-1], 0.0)
