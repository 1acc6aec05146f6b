"""Managed prompt caching for Anthropic (providers.md 5.6): where costroute places a
``cache_control`` breakpoint, decided from what it has seen. Pure but for the sightings
memory, which is this process's (a restart only forgets how often a prefix was seen).

A request's cacheable prefix is its tools and system prompt. When the same prefix (same
model) has been seen ``min_repeats`` times within ``window`` and is at least the model's
minimum cacheable size (``cache_min_tokens``), one breakpoint goes on its last block, so
the next calls read it at 10 % of the input price. The TTL follows the expected reuse: 5
minutes (write at 125 %) when the prefix came back within 5 minutes, 1 hour (write at
200 %) when it comes back less often but within an hour; a prefix seen less often than
that is not worth a write and gets no breakpoint. A caller's own ``cache_control`` (top
level or on any block) is respected and nothing is added. ``X-Context-Cache: off`` (or
``[cache] mode = "off"``) disables it; ``force`` places a breakpoint on the first sighting.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

# Write premiums relative to the input price (providers.md 5.6).
WRITE_PREMIUM = {"5m": 0.25, "1h": 1.0}
_MAX_TRACKED = 10_000


@dataclass(frozen=True, slots=True)
class Placement:
    ttl: str  # "5m" | "1h"
    prefix_tokens: int


def estimate_tokens(value: Any) -> int:
    """About four bytes of JSON per token: enough to compare with a minimum."""
    return len(orjson.dumps(value)) // 4


def has_breakpoints(request: Mapping[str, Any]) -> bool:
    if request.get("cache_control") is not None:
        return True
    blocks: list[Any] = list(request.get("tools") or [])
    system = request.get("system")
    if isinstance(system, list):
        blocks += system
    for message in request.get("messages") or []:
        content = message.get("content")
        if isinstance(content, list):
            blocks += content
    return any(isinstance(b, dict) and b.get("cache_control") is not None for b in blocks)


def prefix_of(request: Mapping[str, Any]) -> tuple[str, int] | None:
    """(fingerprint, estimated tokens) of the tools and system prompt, or None."""
    tools, system = request.get("tools") or [], request.get("system") or []
    if not tools and not system:
        return None
    raw = orjson.dumps([request.get("model"), tools, system], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(raw).hexdigest(), estimate_tokens([tools, system])


def place(request: dict[str, Any], placement: Placement) -> dict[str, Any]:
    """The request with one breakpoint on the last block of its prefix."""
    control = {"type": "ephemeral"} if placement.ttl == "5m" else {"type": "ephemeral",
                                                                    "ttl": "1h"}  # fmt: skip
    out = dict(request)
    system = out.get("system")
    if system:
        blocks = [dict(b) for b in system]
        blocks[-1]["cache_control"] = control
        out["system"] = blocks
    else:
        tools = [dict(t) for t in out["tools"]]
        tools[-1]["cache_control"] = control
        out["tools"] = tools
    return out


class Sightings:
    """When each prefix was seen (bounded; oldest prefixes forgotten first)."""

    def __init__(self) -> None:
        self._seen: OrderedDict[str, list[float]] = OrderedDict()
        self._last_request: dict[str, str] = {}

    def see(
        self, fingerprint: str, now: float, window: float, request_id: str | None = None
    ) -> list[float]:
        """The sightings within ``window``, this one last. A retried attempt (the same
        ``request_id``) is not a new sighting."""
        times = [t for t in self._seen.pop(fingerprint, []) if now - t <= window]
        repeat = request_id is not None and self._last_request.get(fingerprint) == request_id
        if request_id is not None:
            self._last_request[fingerprint] = request_id
        if not repeat or not times:
            times.append(now)
        self._seen[fingerprint] = times[-16:]
        while len(self._seen) > _MAX_TRACKED:
            dropped, _ = self._seen.popitem(last=False)
            self._last_request.pop(dropped, None)
        return times


def decide(
    times: list[float], *, prefix_tokens: int, minimum: int, min_repeats: int, mode: str
) -> Placement | None:
    """Whether (and with which TTL) to place a breakpoint, from this prefix's sightings
    (the current one last)."""
    if mode == "off" or prefix_tokens < minimum:
        return None
    if mode == "force":
        return Placement("5m", prefix_tokens)
    if len(times) < min_repeats:
        return None
    gap = times[-1] - times[-2]
    if gap <= 300:
        return Placement("5m", prefix_tokens)
    if gap <= 3600:
        return Placement("1h", prefix_tokens)
    return None
