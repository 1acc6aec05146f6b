"""SQL for the Gemini context-cache registry (``adapters.gemini.cache.CacheRegistry``).

``gemini_caches`` holds one row per live ``cachedContents`` resource, so caches outlive
restarts; rows are deleted when the cache is deleted, expires or is reported gone.
``gemini_prefix_seen`` holds one row per sighting of a cacheable prefix (pruned past the
window) plus ``too_small`` markers for prefixes the provider refused to cache.
Fingerprints already include the model and credential; both are still matched in every
query so that a cache can never be handed across either.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from adapters.gemini.cache import CacheEntry, Sighting
from proxy.store.db import Database

_ENTRY_COLUMNS = (
    "name, fingerprint, model, credential, token_count, created_ms, expire_ms, last_used_ms, hits"
)
_ACTIVE = "active"


class StoreCacheRegistry:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def find(
        self, fingerprints: Sequence[str], *, model: str, credential: str
    ) -> dict[str, CacheEntry]:
        if not fingerprints:
            return {}
        marks = ", ".join("?" for _ in fingerprints)
        rows = await self._db.fetchall(
            f"SELECT {_ENTRY_COLUMNS} FROM gemini_caches "
            f"WHERE fingerprint IN ({marks}) AND model = ? AND credential = ? AND status = ? "
            "ORDER BY created_ms",
            (*fingerprints, model, credential, _ACTIVE),
        )
        # Ordered oldest first, so the newest entry of a fingerprint wins.
        return {row["fingerprint"]: _entry(row) for row in rows}

    async def record_seen(
        self,
        fingerprints: Sequence[str],
        *,
        model: str,
        credential: str,
        now_ms: int,
        window_ms: int,
        too_small_ms: int,
    ) -> dict[str, Sighting]:
        if not fingerprints:
            return {}
        window_start = now_ms - window_ms
        marker_start = now_ms - too_small_ms
        marks = ", ".join("?" for _ in fingerprints)
        async with self._db.transaction() as conn:
            await conn.executemany(
                "INSERT INTO gemini_prefix_seen (fingerprint, model, credential, ts_ms) "
                "VALUES (?, ?, ?, ?)",
                [(fp, model, credential, now_ms) for fp in fingerprints],
            )
            rows = await conn.fetchall(
                "SELECT fingerprint, "
                "SUM(CASE WHEN too_small = 0 AND ts_ms > ? THEN 1 ELSE 0 END) AS seen, "
                "MAX(CASE WHEN too_small = 1 AND ts_ms > ? THEN 1 ELSE 0 END) AS small "
                f"FROM gemini_prefix_seen WHERE fingerprint IN ({marks}) "
                "AND model = ? AND credential = ? AND ts_ms > ? GROUP BY fingerprint",
                (
                    window_start,
                    marker_start,
                    *fingerprints,
                    model,
                    credential,
                    min(window_start, marker_start),
                ),
            )
        found = {row[0]: Sighting(count=int(row[1] or 0), too_small=bool(row[2])) for row in rows}
        return {fp: found.get(fp, Sighting(count=1, too_small=False)) for fp in fingerprints}

    async def add(self, entry: CacheEntry) -> None:
        async with self._db.transaction() as conn:
            await conn.execute(
                # Never take over a row: a name belongs to the key that created it.
                f"INSERT INTO gemini_caches ({_ENTRY_COLUMNS}, status) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO NOTHING",
                (
                    entry.name,
                    entry.fingerprint,
                    entry.model,
                    entry.credential,
                    entry.token_count,
                    entry.created_ms,
                    entry.expire_ms,
                    entry.last_used_ms,
                    entry.hits,
                    _ACTIVE,
                ),
            )

    async def touch(self, name: str, now_ms: int) -> None:
        async with self._db.transaction() as conn:
            await conn.execute(
                "UPDATE gemini_caches SET hits = hits + 1, "
                f"last_used_ms = {conn.dialect.greatest('last_used_ms', '?')} WHERE name = ?",
                (now_ms, name),
            )

    async def set_expiry(self, name: str, expire_ms: int) -> None:
        async with self._db.transaction() as conn:
            await conn.execute(
                "UPDATE gemini_caches SET expire_ms = ? WHERE name = ?", (expire_ms, name)
            )

    async def forget(self, name: str) -> None:
        async with self._db.transaction() as conn:
            await conn.execute("DELETE FROM gemini_caches WHERE name = ?", (name,))

    async def mark_too_small(
        self, fingerprint: str, *, model: str, credential: str, now_ms: int
    ) -> None:
        async with self._db.transaction() as conn:
            await conn.execute(
                "INSERT INTO gemini_prefix_seen (fingerprint, model, credential, ts_ms, too_small) "
                "VALUES (?, ?, ?, ?, 1)",
                (fingerprint, model, credential, now_ms),
            )

    async def entries(self, *, credential: str) -> list[CacheEntry]:
        rows = await self._db.fetchall(
            f"SELECT {_ENTRY_COLUMNS} FROM gemini_caches WHERE credential = ? AND status = ? "
            "ORDER BY created_ms",
            (credential, _ACTIVE),
        )
        return [_entry(row) for row in rows]

    async def prune(self, *, seen_before_ms: int, too_small_before_ms: int) -> None:
        async with self._db.transaction() as conn:
            await conn.execute(
                "DELETE FROM gemini_prefix_seen WHERE "
                "(too_small = 0 AND ts_ms <= ?) OR (too_small = 1 AND ts_ms <= ?)",
                (seen_before_ms, too_small_before_ms),
            )


# The name it had while SQLite was the only engine.
SqliteCacheRegistry = StoreCacheRegistry


def _entry(row: Any) -> CacheEntry:
    return CacheEntry(
        name=row["name"],
        fingerprint=row["fingerprint"],
        model=row["model"],
        credential=row["credential"],
        token_count=int(row["token_count"]),
        created_ms=int(row["created_ms"]),
        expire_ms=int(row["expire_ms"]),
        last_used_ms=int(row["last_used_ms"]),
        hits=int(row["hits"]),
    )
