"""The cache manager: decides per request whether to use, create or skip a Gemini
``cachedContents`` entry (rules in ``adapters.gemini.cache``), talks to the provider's
cache API, and keeps the registry in step.

Lifecycle of one cache:

    created (POST, ttl) -> hit ... hit -> idle for idle_delete -> deleted (DELETE)
                            |   each use near expiry (or ``maintain``) extends the ttl
                            +-> provider says gone -> recreated once -> else uncached

One manager serves one upstream credential; the registry may be shared by several.
Creation is serialised per fingerprint in this process so a burst of identical requests
makes one cache, not many.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from adapters.clock import Clock
from adapters.errors import AdapterError, UpstreamStatus
from adapters.gemini.cache import (
    CacheEntry,
    CacheMode,
    CacheModel,
    CachePolicy,
    CacheRegistry,
    Candidate,
    Sighting,
    cache_body,
    candidates,
    credential_hash,
    economics,
    storage_cost,
    with_cache,
)
from adapters.gemini.errors import is_cache_gone, is_too_small
from adapters.gemini.http import GeminiHttp
from adapters.gemini.translate import GeminiCall

log = logging.getLogger(__name__)

# Caches we create are named so that ``reconcile`` can recognise (and re-adopt) them.
DISPLAY_PREFIX = "costroute-"
_SIGHTINGS_REMEMBERED = 4096
# A cache this close to its expiry is not handed to a request (it could expire in flight).
_EXPIRY_GUARD_MS = 5_000


@dataclass(frozen=True, slots=True)
class CacheUse:
    name: str
    candidate: Candidate
    event: str  # created | hit | recreated
    token_count: int
    # Storage accrued since the cache was last used, attributed to this request.
    storage_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class CachePlan:
    payload: dict[str, Any]
    use: CacheUse | None = None
    event: str | None = None  # "fallback" when a cache was wanted and not used


@dataclass(slots=True)
class Maintenance:
    extended: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    forgotten: list[str] = field(default_factory=list)


class CacheManager:
    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        api_key: str,
        registry: CacheRegistry,
        policy: CachePolicy,
        models: Mapping[str, CacheModel],
        clock: Clock,
        default_model: CacheModel | None = None,
    ) -> None:
        self._http = GeminiHttp(client, api_key=api_key)
        self.credential = credential_hash(api_key)
        self._display_prefix = f"{DISPLAY_PREFIX}{self.credential[:12]}-"
        # Sightings per request id, so a retried request counts once (bounded LRU).
        self._sightings: OrderedDict[str, Mapping[str, Sighting]] = OrderedDict()
        self._registry = registry
        self.policy = policy
        self._models = dict(models)
        self._default = default_model
        self._clock = clock
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def _now_ms(self) -> int:
        return int(self._clock.now() * 1000)

    def model(self, model: str) -> CacheModel | None:
        return self._models.get(model, self._default)

    async def plan(
        self, call: GeminiCall, mode: CacheMode, *, request_id: str | None = None
    ) -> CachePlan:
        """What to send for ``call``: with a cache (hit or just created) or without.
        ``request_id`` makes a retried attempt of one request count as one sighting."""
        uncached = CachePlan(call.payload)
        config = self.model(call.model)
        if mode == CacheMode.OFF or config is None:
            return uncached
        found = candidates(call, credential=self.credential, min_tokens=config.min_tokens)
        if not found:
            return uncached
        now_ms = self._now_ms()
        keys = [c.fingerprint for c in found]
        live = await self._live(keys, call.model, now_ms)
        seen = self._sightings.get(request_id) if request_id else None
        if seen is None:
            seen = await self._registry.record_seen(
                keys,
                model=call.model,
                credential=self.credential,
                now_ms=now_ms,
                window_ms=self.policy.window_s * 1000,
                too_small_ms=self.policy.too_small_s * 1000,
            )
            if request_id:
                self._sightings[request_id] = seen
                if len(self._sightings) > _SIGHTINGS_REMEMBERED:
                    self._sightings.popitem(last=False)
        hit = next((c for c in reversed(found) if c.fingerprint in live), None)
        target = self._target(found, seen, hit, live, mode, config)
        if target is not None and target is not hit:
            use = await self._create(call, target, "created")
            if use is not None:
                return CachePlan(with_cache(call, use.name, target), use)
            if hit is None:
                return CachePlan(call.payload, event="fallback")
        if hit is None:
            return uncached
        use = await self._use(call, hit, live[hit.fingerprint], now_ms)
        if use is None:
            return CachePlan(call.payload, event="fallback")
        return CachePlan(with_cache(call, use.name, use.candidate), use)

    async def live_plan(self, call: GeminiCall) -> CachePlan:
        """What a batch item sends: a cache that is live for ``call``'s prefix right now,
        else the plain payload. Never creates a cache and records no sighting: a batch
        item is not evidence of real-time repetition, and a cache made for it alone
        would cost storage for hours of batch queueing. A hit is touched (and its TTL
        extended when past half), as a real-time hit is."""
        config = self.model(call.model)
        if config is None or self.policy.mode == CacheMode.OFF:
            return CachePlan(call.payload)
        found = candidates(call, credential=self.credential, min_tokens=config.min_tokens)
        if not found:
            return CachePlan(call.payload)
        now_ms = self._now_ms()
        live = await self._live([c.fingerprint for c in found], call.model, now_ms)
        hit = next((c for c in reversed(found) if c.fingerprint in live), None)
        if hit is None:
            return CachePlan(call.payload)
        use = await self._use(call, hit, live[hit.fingerprint], now_ms)
        if use is None:
            return CachePlan(call.payload)
        await self.record_use(use)
        return CachePlan(with_cache(call, use.name, use.candidate), use)

    async def recreate(self, call: GeminiCall, use: CacheUse) -> CachePlan:
        """The provider says ``use`` is gone: forget it and create it once more."""
        await self._registry.forget(use.name)
        again = await self._create(call, use.candidate, "recreated")
        if again is None:
            return CachePlan(call.payload, event="fallback")
        return CachePlan(with_cache(call, again.name, again.candidate), again)

    async def forget(self, use: CacheUse) -> None:
        await self._registry.forget(use.name)

    async def record_use(self, use: CacheUse) -> None:
        await self._registry.touch(use.name, self._now_ms())

    def _target(
        self,
        found: list[Candidate],
        seen: Mapping[str, Sighting],
        hit: Candidate | None,
        live: Mapping[str, CacheEntry],
        mode: CacheMode,
        config: CacheModel,
    ) -> Candidate | None:
        eligible = [c for c in found if not _too_small(seen, c)]
        if mode == CacheMode.FORCE:
            return eligible[-1] if eligible else None
        if config.prices is None:
            return None
        cached = live[hit.fingerprint].token_count if hit is not None else 0
        for candidate in reversed(eligible):
            if hit is not None and candidate.end <= hit.end:
                break
            count = seen[candidate.fingerprint].count if candidate.fingerprint in seen else 0
            if count < self.policy.min_repeats:
                continue
            verdict = economics(
                sightings=count,
                window_s=self.policy.window_s,
                tokens=candidate.tokens,
                prices=config.prices,
                already_cached=cached,
            )
            if verdict.worth_it:
                return candidate
        return None

    async def _live(self, keys: list[str], model: str, now_ms: int) -> dict[str, CacheEntry]:
        entries = await self._registry.find(keys, model=model, credential=self.credential)
        live: dict[str, CacheEntry] = {}
        for key, entry in entries.items():
            if entry.expire_ms - now_ms > _EXPIRY_GUARD_MS:
                live[key] = entry
            else:
                await self._registry.forget(entry.name)  # expired: the provider deleted it
        return live

    async def _use(
        self, call: GeminiCall, candidate: Candidate, entry: CacheEntry, now_ms: int
    ) -> CacheUse | None:
        ttl_ms = self.policy.ttl_s * 1000
        if entry.expire_ms - now_ms < ttl_ms // 2:
            try:
                await self._extend(entry.name)
            except UpstreamStatus as exc:
                if not is_cache_gone(exc):
                    log.warning("gemini cache %s: could not extend: %s", entry.name, exc.message)
                else:
                    await self._registry.forget(entry.name)
                    return await self._create(call, candidate, "recreated")
            except AdapterError as exc:
                log.warning("gemini cache %s: could not extend: %s", entry.name, exc.message)
        config = self.model(call.model)
        storage = storage_cost(
            entry.token_count,
            config.prices if config else None,
            (now_ms - entry.last_used_ms) / 1000,
        )
        return CacheUse(entry.name, candidate, "hit", entry.token_count, storage)

    async def _create(self, call: GeminiCall, candidate: Candidate, event: str) -> CacheUse | None:
        lock = self._locks.get(candidate.fingerprint)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[candidate.fingerprint] = lock
        async with lock:
            now_ms = self._now_ms()
            live = await self._live([candidate.fingerprint], call.model, now_ms)
            if candidate.fingerprint in live:  # made by a concurrent request meanwhile
                entry = live[candidate.fingerprint]
                return CacheUse(entry.name, candidate, "hit", entry.token_count)
            body = cache_body(call, candidate)
            body["ttl"] = f"{self.policy.ttl_s}s"
            body["displayName"] = self._display_prefix + candidate.fingerprint
            try:
                created = await self._http.call("POST", "/cachedContents", body=body)
            except UpstreamStatus as exc:
                if is_too_small(exc):
                    await self._registry.mark_too_small(
                        candidate.fingerprint,
                        model=call.model,
                        credential=self.credential,
                        now_ms=now_ms,
                    )
                else:
                    log.warning("gemini cache create failed (%s): %s", exc.status, exc.message)
                return None
            except AdapterError as exc:
                log.warning("gemini cache create failed: %s", exc.message)
                return None
            name = created.get("name")
            if not isinstance(name, str) or not name.startswith("cachedContents/"):
                log.warning("gemini cache create returned no name")
                return None
            usage = created.get("usageMetadata")
            tokens = usage.get("totalTokenCount") if isinstance(usage, Mapping) else None
            entry = CacheEntry(
                name=name,
                fingerprint=candidate.fingerprint,
                model=call.model,
                credential=self.credential,
                token_count=tokens if isinstance(tokens, int) else candidate.tokens,
                created_ms=now_ms,
                expire_ms=self._expiry(created, now_ms),
                last_used_ms=now_ms,
            )
            await self._registry.add(entry)
            # Writing the cache processes its tokens once at the input price (providers.md
            # §3.9 leaves the creation price unstated; standard input is the safe guess),
            # so the request that creates it pays for that.
            config = self.model(call.model)
            prices = config.prices if config else None
            written = entry.token_count * prices.input / 1e6 if prices else 0.0
            return CacheUse(name, candidate, event, entry.token_count, written)

    async def _extend(self, name: str) -> int:
        updated = await self._http.call(
            "PATCH",
            f"/{name}",
            body={"ttl": f"{self.policy.ttl_s}s"},
            params={"updateMask": "ttl"},
        )
        expire_ms = self._expiry(updated, self._now_ms())
        await self._registry.set_expiry(name, expire_ms)
        return expire_ms

    def _expiry(self, resource: Mapping[str, Any], now_ms: int) -> int:
        parsed = parse_timestamp(resource.get("expireTime"))
        return parsed if parsed is not None else now_ms + self.policy.ttl_s * 1000

    async def maintain(self, now: float | None = None) -> Maintenance:
        """Extend caches in use, delete idle ones, forget expired ones, prune sightings.
        The proxy's scheduler calls this periodically (every minute or so)."""
        now_ms = int((self._clock.now() if now is None else now) * 1000)
        ttl_ms = self.policy.ttl_s * 1000
        report = Maintenance()
        for entry in await self._registry.entries(credential=self.credential):
            try:
                if entry.expire_ms <= now_ms:
                    await self._registry.forget(entry.name)
                    report.forgotten.append(entry.name)
                elif now_ms - entry.last_used_ms >= self.policy.idle_delete_s * 1000:
                    await self._delete(entry.name)
                    report.deleted.append(entry.name)
                elif entry.expire_ms - now_ms < ttl_ms // 2:
                    await self._extend(entry.name)
                    report.extended.append(entry.name)
            except UpstreamStatus as exc:
                if is_cache_gone(exc):
                    await self._registry.forget(entry.name)
                    report.forgotten.append(entry.name)
                else:
                    log.warning("gemini cache %s: maintenance failed: %s", entry.name, exc.message)
            except AdapterError as exc:
                log.warning("gemini cache %s: maintenance failed: %s", entry.name, exc.message)
        await self._registry.prune(
            seen_before_ms=now_ms - self.policy.window_s * 1000,
            too_small_before_ms=now_ms - self.policy.too_small_s * 1000,
        )
        return report

    async def reconcile(self) -> list[str]:
        """Adopt caches this proxy created that the registry does not know (a crash
        between the provider's answer and our write); call once at start-up, before
        serving. Adopted caches are used if their prefix recurs, else deleted as idle by
        ``maintain``. Assumes one registry per credential (one proxy, or a shared store)."""
        now_ms = self._now_ms()
        known = {entry.name for entry in await self._registry.entries(credential=self.credential)}
        adopted: list[str] = []
        params = {"pageSize": "1000"}
        while True:
            page = await self._http.call("GET", "/cachedContents", params=params)
            items = page.get("cachedContents")
            for item in items if isinstance(items, list) else []:
                entry = self._adoptable(item, known, now_ms)
                if entry is not None:
                    await self._registry.add(entry)
                    adopted.append(entry.name)
            token = page.get("nextPageToken")
            if not isinstance(token, str) or not token:
                return adopted
            params = {"pageSize": "1000", "pageToken": token}

    def _adoptable(self, item: Any, known: set[str], now_ms: int) -> CacheEntry | None:
        if not isinstance(item, Mapping):
            return None
        name, display, model = item.get("name"), item.get("displayName"), item.get("model")
        if not (isinstance(name, str) and isinstance(display, str) and isinstance(model, str)):
            return None
        # Several keys of one project see each other's caches: adopt only ours.
        fingerprint = display.removeprefix(self._display_prefix)
        if name in known or fingerprint == display or len(fingerprint) != 64:
            return None
        usage = item.get("usageMetadata")
        tokens = usage.get("totalTokenCount") if isinstance(usage, Mapping) else None
        return CacheEntry(
            name=name,
            fingerprint=fingerprint,
            model=model.removeprefix("models/"),
            credential=self.credential,
            token_count=tokens if isinstance(tokens, int) else 0,
            created_ms=parse_timestamp(item.get("createTime")) or now_ms,
            expire_ms=self._expiry(item, now_ms),
            last_used_ms=now_ms,
        )

    async def _delete(self, name: str) -> None:
        await self._http.call("DELETE", f"/{name}")
        await self._registry.forget(name)


def _too_small(seen: Mapping[str, Sighting], candidate: Candidate) -> bool:
    sighting = seen.get(candidate.fingerprint)
    return sighting is not None and sighting.too_small


def parse_timestamp(value: Any) -> int | None:
    """Unix ms of an RFC 3339 timestamp (Gemini sends up to nine fractional digits)."""
    if not isinstance(value, str) or "T" not in value:
        return None
    text = value.strip().replace("z", "Z")
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    if "." in text:
        head, rest = text.split(".", 1)
        digits = "".join(ch for ch in rest if ch.isdigit())
        zone = rest[len(digits) :]
        text = f"{head}.{digits[:6].ljust(6, '0')}{zone}"
    try:
        return int(datetime.fromisoformat(text).timestamp() * 1000)
    except ValueError:
        return None
