"""Gemini explicit context caching: policy, prefix fingerprints, economics. Pure.

**What is cacheable.** A ``cachedContents`` entry is a *prefix* of the prompt: the system
instruction, the tools and tool config (a request that uses a cache may not send those,
so they must be baked in), and zero or more leading turns. The part of a request that
may vary is its last real user turn (one that is not only function responses) and
everything after it (the tool loop of the current step); the rest is its conversation
prefix. The prefix may be cut at any turn boundary that follows a ``model`` turn, so
each request offers several *candidate* prefixes, shortest first:

- ``end=0``: system instruction + tools alone (shared by every conversation of an app);
- ``end=j`` after each model turn up to the conversation prefix (shared by the later
  turns and the branches of one conversation), at most ``MAX_CANDIDATES`` of them.

Cutting only after model turns keeps the cached prefix and the remainder alternating.
Offering the shorter cuts matters: a growing chat never repeats its full prefix, but
it repeats its first exchanges on every turn, and that is where the document usually is.

**Fingerprint.** sha256 over the canonical JSON (sorted keys) of (model, credential hash,
systemInstruction, tools, toolConfig) followed by each leading turn's canonical JSON,
newline-separated; hashing incrementally gives every candidate's fingerprint in one
pass. Model and credential are inside the hash, so caches never cross either.

**When to create one** (``mode=auto``): the candidate reaches the model's minimum size
(estimated at ~4 characters per token; the provider's "too small" 400 is still handled),
it was seen ``min_repeats`` times within ``window``, and the saving expected from its
repeat rate beats its storage cost (``economics``). ``force`` creates the longest
candidate of minimum size on first sight; ``off`` never uses a cache.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import orjson

from adapters.errors import Unsupported
from adapters.gemini.translate import GeminiCall

MAX_CANDIDATES = 6
# Gemini bills an image or a file part at a fixed token count, whatever its byte size.
_MEDIA_TOKENS = 258
_CACHE_FIELDS = ("systemInstruction", "tools", "toolConfig")


class CacheMode(StrEnum):
    AUTO = "auto"
    FORCE = "force"
    OFF = "off"


def parse_mode(value: str | None, default: CacheMode) -> CacheMode:
    if value is None or value == "":
        return CacheMode(default)
    try:
        return CacheMode(value.strip().lower())
    except ValueError:
        raise Unsupported(
            f"X-Context-Cache must be auto, force or off, got {value!r}.", param="X-Context-Cache"
        ) from None


@dataclass(frozen=True, slots=True)
class CachePolicy:
    mode: CacheMode = CacheMode.AUTO
    min_repeats: int = 2
    window_s: int = 3600
    ttl_s: int = 3600
    idle_delete_s: int = 1800
    # How long a "too small" answer from the provider is remembered for a prefix.
    too_small_s: int = 86400


@dataclass(frozen=True, slots=True)
class CachePrices:
    """USD per 1M tokens; storage per 1M tokens per hour."""

    input: float
    cached_input: float
    storage_per_hour: float


@dataclass(frozen=True, slots=True)
class CacheModel:
    """Per upstream model: the provider's minimum cache size and the prices (if known;
    without prices ``auto`` never creates a cache, ``force`` still does)."""

    min_tokens: int
    prices: CachePrices | None = None


@dataclass(frozen=True, slots=True)
class Candidate:
    fingerprint: str
    end: int  # how many leading turns of ``contents`` the prefix holds
    tokens: int  # estimated


@dataclass(frozen=True, slots=True)
class Economics:
    hits_per_hour: float
    saving_per_hour: float
    storage_per_hour: float

    @property
    def worth_it(self) -> bool:
        return self.saving_per_hour > self.storage_per_hour


def credential_hash(api_key: str) -> str:
    """The only form of the upstream key that fingerprints and the registry hold."""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()[:32]


def estimate_tokens(value: Any) -> int:
    """~4 characters per token for text and JSON; a fixed count per media part."""
    return (_chars(value) + 3) // 4


def _chars(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, Mapping):
        if "inlineData" in value or "fileData" in value:
            return _MEDIA_TOKENS * 4
        return sum(_chars(k) + _chars(v) for k, v in value.items())
    if isinstance(value, list):
        return sum(_chars(v) for v in value)
    return len(str(value)) if value is not None else 0


def _canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def varying_start(contents: Sequence[Mapping[str, Any]]) -> int:
    """Index of the last user turn that is not only function responses (0 if none)."""
    for index in range(len(contents) - 1, -1, -1):
        turn = contents[index]
        if turn.get("role", "user") != "user":
            continue
        parts = turn.get("parts") or []
        if any(not (isinstance(p, Mapping) and "functionResponse" in p) for p in parts):
            return index
    return 0


def candidates(call: GeminiCall, *, credential: str, min_tokens: int) -> list[Candidate]:
    """The cacheable prefixes of ``call`` of at least ``min_tokens``, shortest first."""
    payload = call.payload
    contents: list[Mapping[str, Any]] = payload.get("contents") or []
    header = {"model": call.model, "credential": credential}
    header.update({key: payload[key] for key in _CACHE_FIELDS if key in payload})
    hasher = hashlib.sha256(_canonical(header))
    tokens = estimate_tokens([payload.get(key) for key in _CACHE_FIELDS])
    stop = varying_start(contents)
    found: list[Candidate] = []
    if any(key in payload for key in _CACHE_FIELDS):
        found.append(Candidate(hasher.hexdigest(), 0, tokens))
    for end in range(1, stop + 1):
        turn = contents[end - 1]
        hasher.update(b"\n" + _canonical(turn))
        tokens += estimate_tokens(turn.get("parts"))
        if turn.get("role") == "model":
            found.append(Candidate(hasher.copy().hexdigest(), end, tokens))
    # Keep the boundary-0 candidate (shared widely) and the most recent cuts.
    if len(found) > MAX_CANDIDATES:
        head = [found[0]] if found[0].end == 0 else []
        found = head + found[len(found) - (MAX_CANDIDATES - len(head)) :]
    return [c for c in found if c.tokens >= min_tokens]


def cache_body(call: GeminiCall, candidate: Candidate) -> dict[str, Any]:
    """The ``cachedContents`` create body for a candidate (without ttl/displayName)."""
    body: dict[str, Any] = {"model": f"models/{call.model}"}
    for key in _CACHE_FIELDS:
        if key in call.payload:
            body[key] = call.payload[key]
    if candidate.end:
        body["contents"] = call.payload["contents"][: candidate.end]
    return body


def with_cache(call: GeminiCall, name: str, candidate: Candidate) -> dict[str, Any]:
    """The request body that uses cache ``name``: the remainder of the contents and no
    systemInstruction/tools/toolConfig (the API rejects them next to ``cachedContent``)."""
    body = {k: v for k, v in call.payload.items() if k not in _CACHE_FIELDS}
    body["contents"] = call.payload["contents"][candidate.end :]
    body["cachedContent"] = name
    return body


def economics(
    *, sightings: int, window_s: int, tokens: int, prices: CachePrices, already_cached: int = 0
) -> Economics:
    """Expected saving per hour of caching ``tokens`` against its storage per hour.

    The repeat rate seen in the window (``sightings`` per ``window_s``) is the expected
    hit rate; each hit saves the gap between the input and cached prices on the tokens
    not already served by a shorter cache (``already_cached``); storage is billed per
    token-hour on the whole cache.
    """
    hours = max(window_s, 60) / 3600
    hits = sightings / hours
    gap = max(prices.input - prices.cached_input, 0.0)
    saving = hits * max(tokens - already_cached, 0) * gap / 1e6
    storage = tokens * prices.storage_per_hour / 1e6
    return Economics(hits_per_hour=hits, saving_per_hour=saving, storage_per_hour=storage)


def storage_cost(tokens: int, prices: CachePrices | None, seconds: float) -> float:
    if prices is None or seconds <= 0:
        return 0.0
    return tokens * prices.storage_per_hour / 1e6 * seconds / 3600


# --- the registry --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CacheEntry:
    name: str  # cachedContents/{id}
    fingerprint: str
    model: str
    credential: str
    token_count: int
    created_ms: int
    expire_ms: int
    last_used_ms: int
    hits: int = 0


@dataclass(frozen=True, slots=True)
class Sighting:
    count: int  # sightings within the window, this one included
    too_small: bool  # the provider recently refused to cache this prefix


class CacheRegistry(Protocol):
    """Durable memory of caches and prefix sightings (proxy/store/gemini_caches.py)."""

    async def find(
        self, fingerprints: Sequence[str], *, model: str, credential: str
    ) -> dict[str, CacheEntry]:
        """Live entries by fingerprint (the newest when several exist)."""
        ...

    async def record_seen(
        self,
        fingerprints: Sequence[str],
        *,
        model: str,
        credential: str,
        now_ms: int,
        window_ms: int,
        too_small_ms: int,
    ) -> dict[str, Sighting]: ...

    async def add(self, entry: CacheEntry) -> None: ...

    async def touch(self, name: str, now_ms: int) -> None:
        """Count a hit and move ``last_used_ms``."""
        ...

    async def set_expiry(self, name: str, expire_ms: int) -> None: ...

    async def forget(self, name: str) -> None: ...

    async def mark_too_small(
        self, fingerprint: str, *, model: str, credential: str, now_ms: int
    ) -> None: ...

    async def entries(self, *, credential: str) -> list[CacheEntry]: ...

    async def prune(self, *, seen_before_ms: int, too_small_before_ms: int) -> None: ...
