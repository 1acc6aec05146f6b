import asyncio

import pytest

from proxy.ops.routelog import RouteLog
from proxy.store.db import Database, GroupCommit
from proxy.store.migrations import MIGRATIONS


async def test_migrations_apply_once_and_wal_is_on(db_target: str) -> None:
    db = await Database.open(db_target)
    await db.close()
    db = await Database.open(db_target)  # second open: nothing re-applied
    try:
        names = [row[0] for row in await db.fetchall("SELECT name FROM _migrations ORDER BY name")]
        assert names == sorted(name for name, _ in MIGRATIONS)
        if not db.dialect.postgres:
            mode = await db.fetchone("PRAGMA journal_mode")
            assert mode is not None
            assert mode[0] == "wal"
    finally:
        await db.close()


async def test_group_commit_shares_transactions_and_resolves_after_commit(db_target: str) -> None:
    db = await Database.open(db_target)
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
        other = await Database.open(db_target)
        row = await other.fetchone("SELECT COUNT(*) FROM ticket_events")
        await other.close()
        assert row is not None
        assert row[0] == 200
    finally:
        await writer.stop()
        await db.close()


async def test_group_commit_failure_reaches_every_waiter(db_target: str) -> None:
    db = await Database.open(db_target)

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


async def test_routelog_buffers_and_flushes(db_target: str) -> None:
    db = await Database.open(db_target)
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


async def test_rows_built_later_are_built_once_in_order_and_one_bad_builder_costs_one_row(
    db_target: str,
) -> None:
    db = await Database.open(db_target)
    log = RouteLog(db, linger=0.05)
    log.start()
    built: list[int] = []

    def builder(i: int):  # type: ignore[no-untyped-def]
        def build() -> dict[str, object] | None:
            built.append(i)
            if i == 3:
                raise RuntimeError("a bug in one row")
            if i == 4:
                return None  # nothing to log
            if i == 5:
                return {"bogus": 1}  # unknown column: skipped like a failure
            return {"ts_ms": i, "request_id": f"req_{i}", "endpoint": "/e", "lane": "realtime",
                    "reason": "r", "status": 200}  # fmt: skip

        return build

    try:
        log.record_later(builder(0))
        log.record(ts_ms=1, request_id="req_1", endpoint="/e", lane="realtime", reason="r",
                   status=200)  # fmt: skip
        for i in range(2, 7):
            log.record_later(builder(i))
        # Queued, not built: the request's path paid only for the append.
        assert built == []
        await log.flush()
        rows = await db.fetchall("SELECT request_id FROM routes ORDER BY id")
        assert [r[0] for r in rows] == ["req_0", "req_1", "req_2", "req_6"]
        assert built == [0, 2, 3, 4, 5, 6]
    finally:
        await log.stop()
        await db.close()
