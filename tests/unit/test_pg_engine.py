"""The PostgreSQL engine's own sessions: replicas starting together migrate once, under
a lock that goes with its own connection; pooled connections carry no state from one
use to the next (the pool skips asyncpg's reset round trip, so nothing may need it)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from proxy.store.db import Database
from proxy.store.migrations import MIGRATIONS


async def test_replicas_starting_together_apply_each_migration_once(pg_schema_url: str) -> None:
    opened = await asyncio.gather(*(Database.open(pg_schema_url, pool_size=2) for _ in range(3)))
    try:
        rows = await opened[0].fetchall("SELECT name FROM _migrations ORDER BY name")
        assert [row[0] for row in rows] == sorted(name for name, _ in MIGRATIONS)
        # The migration lock's session is gone with it: no advisory lock is left.
        locks = await opened[1].fetchall(
            "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory'"
        )
        assert locks[0][0] == 0
    finally:
        for db in opened:
            await db.close()


async def test_a_pooled_connection_comes_back_clean(pg_schema_url: str) -> None:
    db = await Database.open(pg_schema_url, pool_size=2)
    try:
        async with db.transaction() as conn:
            await conn.execute("CREATE TABLE t (a INTEGER)")

        async def fails() -> None:
            async with db.transaction() as conn:
                await conn.execute("ALTER TABLE t ADD PRIMARY KEY (a)")
                await conn.execute("INSERT INTO t VALUES (1), (1)")

        with pytest.raises(asyncpg.UniqueViolationError):
            await fails()
        # The failed transaction was rolled back on its connection (its ALTER too),
        # whichever connection the pool hands out next, and the search path the URL
        # chose still holds on every one.
        schema = pg_schema_url.rsplit("search_path=", 1)[1]
        for n in range(4):
            async with db.transaction() as conn:
                row = await conn.fetchone("SELECT current_schema()")
                assert row is not None
                assert row[0] == schema
                await conn.execute("INSERT INTO t VALUES (1)")
            assert await db.fetchone("SELECT COUNT(*) FROM t") == (n + 1,)
    finally:
        await db.close()
