"""The shipped reference workloads, generated (seeded) into ``proxy/data/simulate/``.

- ``seed-guide``: the README's case, 1,000 GPT-4o requests a day of 800 prompt and 400
  completion tokens, with a realistic tolerance mix: a chat front end that wants answers
  now, a support tool that can wait a few minutes, summaries within a couple of hours, and
  nightly reports within the day. Traffic follows office hours (UTC).
- ``mixed-day``: 3,000 requests across OpenAI (gpt-4o-mini, o4-mini on flex, embeddings),
  Gemini (document Q&A over 8 long shared prefixes of 6,000-16,000 tokens), Anthropic
  (Claude, real time and deferred) and DeepSeek (some of it able to wait for off-peak
  hours).

``python -m proxy.simulate.reference`` rewrites the files; a test checks they match.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from proxy.simulate.workload import EMBEDDINGS, Request, dump

# Relative traffic per UTC hour: quiet nights, an office-hours hump.
_HOURS = (1, 1, 1, 1, 1, 2, 3, 5, 8, 9, 9, 8, 7, 8, 9, 9, 8, 6, 4, 3, 2, 2, 1, 1)


def _arrival(rng: random.Random) -> float:
    hour = rng.choices(range(24), weights=_HOURS)[0]
    return round(hour * 3600 + rng.uniform(0, 3600), 3)


Mix = list[tuple[float, str, int | None]]  # (weight, key, tolerance in seconds)


def _pick(rng: random.Random, mix: Mix) -> tuple[str, int | None]:
    _, key, tolerance = rng.choices(mix, weights=[w for w, _, _ in mix])[0]
    return key, tolerance


SEED_GUIDE_MIX: Mix = [
    (0.30, "chat-app", None),  # interactive: wants the answer now
    (0.10, "support", 5 * 60),
    (0.10, "support", 15 * 60),
    (0.20, "summaries", 2 * 3600),
    (0.20, "reports", 8 * 3600),
    (0.10, "reports", 24 * 3600),
]


def seed_guide(seed: int = 17) -> list[Request]:
    rng = random.Random(f"seed-guide/{seed}")
    requests = []
    for _ in range(1000):
        key, tolerance = _pick(rng, SEED_GUIDE_MIX)
        requests.append(Request(_arrival(rng), key, "gpt-4o", 800, 400, tolerance=tolerance))
    return sorted(requests, key=lambda r: r.at)


def mixed_day(seed: int = 17) -> list[Request]:
    rng = random.Random(f"mixed-day/{seed}")
    requests: list[Request] = []

    def add(count: int, make: Callable[[], Request]) -> None:
        requests.extend(make() for _ in range(count))

    def openai_mini() -> Request:
        key, tolerance = _pick(
            rng,
            [
                (0.35, "app", None),
                (0.15, "app", 10 * 60),
                (0.25, "pipeline", 3 * 3600),
                (0.25, "pipeline", 12 * 3600),
            ],
        )
        return Request(
            _arrival(rng),
            key,
            "gpt-4o-mini",
            rng.randint(300, 2500),
            rng.randint(80, 600),
            tolerance=tolerance,
        )

    def openai_flex() -> Request:
        key, tolerance = _pick(
            rng, [(0.3, "agents", None), (0.4, "agents", 5 * 60), (0.3, "agents", 30 * 60)]
        )
        return Request(
            _arrival(rng),
            key,
            "o4-mini",
            rng.randint(500, 3000),
            rng.randint(200, 1500),
            tolerance=tolerance,
        )

    def embeddings() -> Request:
        return Request(
            _arrival(rng),
            "indexer",
            "text-embedding-3-small",
            rng.randint(200, 900),
            0,
            tolerance=4 * 3600,
            endpoint=EMBEDDINGS,
        )

    documents = [(f"doc-{n}", rng.randint(6000, 16000)) for n in range(8)]

    def gemini() -> Request:
        group, size = rng.choice(documents)
        key, tolerance = _pick(
            rng, [(0.4, "docs-qa", None), (0.3, "docs-qa", 3600), (0.3, "docs-batch", 6 * 3600)]
        )
        return Request(
            _arrival(rng),
            key,
            "gemini-2.5-flash",
            size + rng.randint(50, 400),
            rng.randint(100, 500),
            tolerance=tolerance,
            prefix=group,
            prefix_tokens=size,
        )

    def claude() -> Request:
        key, tolerance = _pick(rng, [(0.6, "assistant", None), (0.4, "assistant", 4 * 3600)])
        return Request(
            _arrival(rng),
            key,
            "claude-sonnet-4-5",
            rng.randint(500, 4000),
            rng.randint(200, 800),
            tolerance=tolerance,
        )

    def deepseek() -> Request:
        key, tolerance = _pick(
            rng, [(0.4, "crawler", None), (0.3, "crawler", 2 * 3600), (0.3, "crawler", 12 * 3600)]
        )
        return Request(
            _arrival(rng),
            key,
            "deepseek-v4-flash",
            rng.randint(400, 3000),
            rng.randint(100, 800),
            tolerance=tolerance,
        )

    add(900, openai_mini)
    add(300, openai_flex)
    add(200, embeddings)
    add(700, gemini)
    add(300, claude)
    add(600, deepseek)
    return sorted(requests, key=lambda r: r.at)


WORKLOADS: dict[str, Callable[[], list[Request]]] = {
    "seed-guide": seed_guide,
    "mixed-day": mixed_day,
}


def shipped_file(filename: str) -> Path:
    return Path(str(resources.files("proxy.data").joinpath(f"simulate/{filename}")))


def shipped_path(name: str) -> Path:
    """A shipped workload's file."""
    return shipped_file(f"{name}.jsonl")


def main() -> int:
    for name, make in WORKLOADS.items():
        path = shipped_path(name)
        path.write_bytes(b"".join(dump(make())))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
