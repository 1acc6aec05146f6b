"""Deterministic token estimates and replies for the emulators.

Real tokenisers are not needed: the emulators only have to be consistent, so a prompt
costs about one token per four characters (as OpenAI's rule of thumb says) plus a
small per-message overhead, and replies are derived from a hash of the prompt.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Any

_WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "costroute",
    "routes",
    "every",
    "call",
    "down",
    "the",
    "cheapest",
    "lane",
    "that",
    "still",
    "meets",
    "its",
    "deadline",
    "and",
    "batches",
    "wait",
    "patiently",
]


def count_text(text: str) -> int:
    return max(1, (len(text) + 3) // 4) if text else 0


def text_of(content: Any) -> str:
    """Text of an OpenAI message ``content`` (string or list of parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for part in content:
            if isinstance(part, dict):
                if part.get("type") == "text":
                    parts.append(str(part.get("text", "")))
                elif part.get("type") == "image_url":
                    parts.append("x" * 340)  # an image costs ~85 tokens at low detail
            elif isinstance(part, str):
                parts.append(part)
        return "".join(parts)
    return str(content)


def count_messages(messages: Iterable[Any]) -> int:
    total = 3  # every reply is primed with <|start|>assistant<|message|>
    for message in messages:
        total += 4
        if isinstance(message, dict):
            total += count_text(text_of(message.get("content")))
            for call in message.get("tool_calls") or []:
                fn = call.get("function", {}) if isinstance(call, dict) else {}
                total += count_text(str(fn.get("name", ""))) + count_text(
                    str(fn.get("arguments", ""))
                )
    return total


def reply_words(seed_text: str, count: int) -> list[str]:
    """``count`` words chosen deterministically from ``seed_text``."""
    digest = hashlib.sha256(seed_text.encode("utf-8")).digest()
    return [_WORDS[(digest[i % len(digest)] + i) % len(_WORDS)] for i in range(count)]


def reply_text(seed_text: str, max_tokens: int | None = None) -> str:
    digest = hashlib.sha256(seed_text.encode("utf-8")).digest()
    length = 8 + digest[0] % 17  # 8..24 words
    if max_tokens is not None:
        length = max(1, min(length, max_tokens))
    return " ".join(reply_words(seed_text, length))


# ``[emulator:reply N]`` anywhere in a prompt asks for a text answer of exactly N tokens
# (before any max_tokens cap): how ``costroute simulate`` gives each request of a
# workload its completion size. Without it, answers are 8-24 words.
REPLY_MARKER = re.compile(r"\[emulator:reply (\d{1,6})\]")


def answer_text(seed_text: str) -> str:
    """The text answer to a prompt (``seed_text`` holds the prompt): ``reply_text``, or
    exactly the size a ``REPLY_MARKER`` in it asks for."""
    found = REPLY_MARKER.search(seed_text)
    if found is None:
        return reply_text(seed_text)
    return sized_text(seed_text, int(found.group(1)))


def sized_text(seed_text: str, tokens: int) -> str:
    """Words from ``seed_text`` whose ``count_text`` is exactly ``tokens``."""
    if tokens <= 0:
        return ""
    chars = tokens * 4
    # 32 words chosen from the prompt, repeated: a simulated day sizes 100,000 answers.
    phrase = " ".join(reply_words(seed_text, 32)) + " "
    text = phrase * (chars // len(phrase) + 1)
    return text[:chars].rstrip().ljust(chars, ".")


def embedding(text: str, dimensions: int = 16) -> list[float]:
    """A unit-length deterministic vector."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    # The vector repeats the digest's 32 values: work them out once, then tile (1,536
    # dimensions per input, and a simulated day embeds thousands of inputs).
    period = [(b - 127.5) / 127.5 for b in digest]
    repeats = dimensions // len(period) + 1
    raw = (period * repeats)[:dimensions]
    norm = sum(v * v for v in raw) ** 0.5 or 1.0
    rounded = [round(v / norm, 6) for v in period]
    return (rounded * repeats)[:dimensions]
