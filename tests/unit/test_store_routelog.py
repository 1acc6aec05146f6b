import asyncio
from pathlib import Path

import pytest

from proxy.routelog import RouteLog
from proxy.store.db import Database, GroupCommit
from proxy.store.migrations import MIGRATIONS


async def test_migrations_apply_once_and_wal_is_on(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "a.db")
    await db.close()
    db = await Database.open(tmp_path / "a.db")  # second open: nothing re-applied
    try:
        names = [row[0] for row in await db.fetchall("SELECT name FROM _migrations ORDER BY name")]
        assert names == sorted(name for name, _ in MIGRATIONS)
        mode = await db.fetchone("PRAGMA journal_mode")
        assert mode is not None
        assert mode[0] == "wal"
    finally:
        await db.close()


async def test_group_commit_shares_transactions_and_resolves_after_commit(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "g.db")
    batches: list[int] = []

    async def apply(conn, items: list[int]) -> list[int]:
        batches.append(len(items))
        await conn.executemany(
            "INSERT INTO ticket_events (ticket_id, ts_ms, to_status) VALUES (?, 0, 'queued')",
            [(str(i),) for i in items],
        )
        return [i * 2 for i in items]

    writer: GroupCommit[int, int] = GroupCommit(db, apply)
    writer.start()
    try:
        results = await asyncio.gather(*(writer.submit(i) for i in range(200)))
        assert results == [i * 2 for i in range(200)]
        # Far fewer transactions than writes: that is the point of group commit.
        assert sum(batches) == 200
        assert len(batches) < 200
        # Durable: a fresh connection sees every row.
        other = await Database.open(tmp_path / "g.db")
        row = await other.fetchone("SELECT COUNT(*) FROM ticket_events")
        await other.close()
        assert row is not None
        assert row[0] == 200
    finally:
        await writer.stop()
        await db.close()


async def test_group_commit_failure_reaches_every_waiter(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "f.db")

    async def apply(conn, items: list[int]) -> list[int]:
        await conn.execute("INSERT INTO nowhere VALUES (1)")
        return items

    writer: GroupCommit[int, int] = GroupCommit(db, apply)
    writer.start()
    try:
        outcomes = await asyncio.gather(
            *(writer.submit(i) for i in range(5)), return_exceptions=True
        )
        assert all(isinstance(o, Exception) for o in outcomes)
    finally:
        await writer.stop()
        await db.close()


async def test_routelog_buffers_and_flushes(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "r.db")
    log = RouteLog(db, linger=0.01)
    log.start()
    try:
        for i in range(50):
            log.record(
                ts_ms=i,
                request_id=f"req_{i}",
                endpoint="/v1/chat/completions",
                lane="realtime",
                reason="test",
                status=200,
            )
        await log.flush()
        rows = await db.fetchall("SELECT request_id, stream, attempts FROM routes ORDER BY id")
        assert [r[0] for r in rows] == [f"req_{i}" for i in range(50)]
        assert {(r[1], r[2]) for r in rows} == {(0, 1)}
        with pytest.raises(TypeError):
            log.record(bogus=1)
    finally:
        await log.stop()
        await db.close()
