"""Bulk writes: multi-row INSERTs split by the parameter limit, the writer's PRAGMAs,
and the partial group index the claim relies on."""

from pathlib import Path

import pytest

from proxy.store import db as dbmod
from proxy.store.db import Database, insert_values


async def test_insert_values_splits_rows_across_statements(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 7 parameters per statement and 3 per row: 2 rows a statement, 5 statements.
    monkeypatch.setattr(dbmod, "MAX_PARAMS", 7)
    db = await Database.open(tmp_path / "b.db")
    try:
        rows = [(i, f"t{i}", None if i % 2 else b"\x00raw") for i in range(9)]
        async with db.transaction() as conn:
            await conn.execute("CREATE TABLE t (a INTEGER, b TEXT, c BLOB)")
            await insert_values(conn, "INSERT INTO t (a, b, c)", rows)
            await insert_values(conn, "INSERT INTO t (a, b, c)", [])
        found = await db.fetchall("SELECT a, b, c FROM t ORDER BY a")
        assert [tuple(row) for row in found] == rows
    finally:
        await db.close()


async def test_writer_gets_the_bulk_pragmas_and_the_reader_does_not(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "p.db")
    try:
        async with db.transaction() as conn:
            async with conn.execute("PRAGMA wal_autocheckpoint") as cursor:
                assert (await cursor.fetchone())[0] == 10000
            async with conn.execute("PRAGMA cache_size") as cursor:
                assert (await cursor.fetchone())[0] == -32768
        reader = await db.fetchone("PRAGMA cache_size")
        assert reader is not None
        assert reader[0] == -2000
    finally:
        await db.close()


async def test_group_index_holds_only_queued_batch_tickets(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "i.db")
    try:
        row = await db.fetchone("SELECT sql FROM sqlite_master WHERE name = 'tickets_queued_group'")
        assert row is not None
        assert "WHERE status = 'queued' AND lane = 'batch'" in row[0]
        gone = await db.fetchone("SELECT 1 FROM sqlite_master WHERE name = 'tickets_status_group'")
        assert gone is None
    finally:
        await db.close()
