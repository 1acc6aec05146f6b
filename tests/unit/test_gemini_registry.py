"""The cache registry (proxy.store.gemini_caches) on a real database, on each engine."""

from __future__ import annotations

from adapters.gemini.cache import CacheEntry, Sighting
from proxy.store.db import Database
from proxy.store.gemini_caches import SqliteCacheRegistry

MODEL = "gemini-2.5-flash"
CRED = "cred-a"


def entry(
    name: str = "cachedContents/a", fingerprint: str = "fp1", **changes: object
) -> CacheEntry:
    fields: dict[str, object] = {
        "name": name,
        "fingerprint": fingerprint,
        "model": MODEL,
        "credential": CRED,
        "token_count": 2000,
        "created_ms": 1_000,
        "expire_ms": 3_601_000,
        "last_used_ms": 1_000,
        **changes,
    }
    return CacheEntry(**fields)  # type: ignore[arg-type]


async def test_entries_survive_reopening_the_database(db_target: str) -> None:
    path = db_target
    db = await Database.open(path)
    registry = SqliteCacheRegistry(db)
    await registry.add(entry())
    await registry.touch("cachedContents/a", 5_000)
    await registry.set_expiry("cachedContents/a", 9_000_000)
    await db.close()

    db = await Database.open(path)
    try:
        registry = SqliteCacheRegistry(db)
        found = await registry.find(["fp1", "fp2"], model=MODEL, credential=CRED)
        assert found == {"fp1": entry(hits=1, last_used_ms=5_000, expire_ms=9_000_000)}
        assert await registry.entries(credential=CRED) == [found["fp1"]]
    finally:
        await db.close()


async def test_find_never_crosses_models_or_credentials(db_target: str) -> None:
    db = await Database.open(db_target)
    try:
        registry = SqliteCacheRegistry(db)
        await registry.add(entry())
        assert await registry.find(["fp1"], model="gemini-2.5-pro", credential=CRED) == {}
        assert await registry.find(["fp1"], model=MODEL, credential="cred-b") == {}
        assert await registry.entries(credential="cred-b") == []
    finally:
        await db.close()


async def test_newest_entry_wins_and_forget_removes(db_target: str) -> None:
    db = await Database.open(db_target)
    try:
        registry = SqliteCacheRegistry(db)
        await registry.add(entry("cachedContents/old", created_ms=1))
        await registry.add(entry("cachedContents/new", created_ms=2))
        assert (await registry.find(["fp1"], model=MODEL, credential=CRED))[
            "fp1"
        ].name == "cachedContents/new"
        await registry.forget("cachedContents/new")
        await registry.forget("cachedContents/old")
        assert await registry.find(["fp1"], model=MODEL, credential=CRED) == {}
    finally:
        await db.close()


async def test_sightings_count_within_the_window(db_target: str) -> None:
    db = await Database.open(db_target)
    try:
        registry = SqliteCacheRegistry(db)

        async def seen(now_ms: int, *fps: str) -> dict[str, Sighting]:
            return await registry.record_seen(
                list(fps),
                model=MODEL,
                credential=CRED,
                now_ms=now_ms,
                window_ms=10_000,
                too_small_ms=50_000,
            )

        assert await seen(1_000, "a", "b") == {"a": Sighting(1, False), "b": Sighting(1, False)}
        assert (await seen(2_000, "a"))["a"] == Sighting(2, False)
        assert (await seen(11_500, "a"))["a"] == Sighting(2, False)  # the first fell out
        # Other credentials and models have their own counts.
        other = await registry.record_seen(
            ["a"], model=MODEL, credential="cred-b", now_ms=11_600, window_ms=10_000, too_small_ms=1
        )
        assert other["a"].count == 1

        await registry.mark_too_small("a", model=MODEL, credential=CRED, now_ms=12_000)
        assert (await seen(13_000, "a"))["a"] == Sighting(2, True)
        assert (await seen(70_000, "a"))["a"] == Sighting(1, False)  # the marker expired
    finally:
        await db.close()


async def test_prune_drops_old_sightings_and_markers(db_target: str) -> None:
    db = await Database.open(db_target)
    try:
        registry = SqliteCacheRegistry(db)
        await registry.record_seen(
            ["a"], model=MODEL, credential=CRED, now_ms=1_000, window_ms=10, too_small_ms=10
        )
        await registry.record_seen(
            ["a"], model=MODEL, credential=CRED, now_ms=5_000, window_ms=10, too_small_ms=10
        )
        await registry.mark_too_small("a", model=MODEL, credential=CRED, now_ms=1_000)
        await registry.prune(seen_before_ms=2_000, too_small_before_ms=500)
        rows = await db.fetchall(
            "SELECT ts_ms, too_small FROM gemini_prefix_seen ORDER BY ts_ms, too_small"
        )
        assert [tuple(r) for r in rows] == [(1_000, 1), (5_000, 0)]
    finally:
        await db.close()
