"""Bulk writes: multi-row INSERTs and UPDATE ... FROM (VALUES ...) split by the parameter
limit, a batch chunk applied through them, the writer's PRAGMAs,
and the partial group index the claim relies on."""

import asyncio
from pathlib import Path
from typing import Any

import pytest

from proxy.store import batches as bstore
from proxy.store import db as dbmod
from proxy.store import route_rows
from proxy.store import tickets as tstore
from proxy.store.db import (
    MAX_ROWS,
    SMALL_ROWS,
    Database,
    insert_values,
    update_values,
    values_statements,
)
from proxy.store.jobs import NewTicket, Outcome, TicketFacts, TicketStatus

T = TicketStatus


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


def test_all_null_columns_are_written_as_literals_not_bound() -> None:
    rows = [(1, None, None), (2, None, b"x")]
    [(sql, params)] = list(dbmod.values_statements("H ", rows, " T"))
    assert sql == "H (?, NULL, ?), (?, NULL, ?) T"
    assert params == [1, None, 2, b"x"]


async def test_null_literals_store_null_even_over_a_column_default(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "n.db")
    try:
        rows = [(i, None, None if i % 2 else "s") for i in range(5)]
        async with db.transaction() as conn:
            await conn.execute("CREATE TABLE t (a INTEGER, b INTEGER DEFAULT 7, c TEXT)")
            await insert_values(conn, "INSERT INTO t (a, b, c)", rows)
        found = await db.fetchall("SELECT a, b, c FROM t ORDER BY a")
        assert [tuple(row) for row in found] == rows
    finally:
        await db.close()


async def test_writer_gets_the_bulk_pragmas_and_the_reader_does_not(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "p.db")
    try:
        async with db.transaction() as conn:
            assert (await conn.fetchone("PRAGMA wal_autocheckpoint"))[0] == 10000
        # The big cache only while a batch-sized job runs (nested jobs keep it).
        assert await db.writer_cache_kib() == 2000
        async with db.bulk():
            assert await db.writer_cache_kib() == 32768
            async with db.bulk():
                pass
            assert await db.writer_cache_kib() == 32768
        assert await db.writer_cache_kib() == 2000
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


async def test_update_values_splits_rows_and_keeps_the_condition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 8 parameters a statement, 3 of them the caller's: 2 rows of 2 a statement.
    monkeypatch.setattr(dbmod, "MAX_PARAMS", 8)
    db = await Database.open(tmp_path / "u.db")
    try:
        async with db.transaction() as conn:
            await conn.execute("CREATE TABLE t (k TEXT, state TEXT, v INTEGER, at INTEGER)")
            await insert_values(
                conn, "INSERT INTO t (k, state, v, at)", [(f"k{i}", "open", 0, 0) for i in range(6)]
            )
            await conn.execute("UPDATE t SET state = 'shut' WHERE k = 'k4'")
            await update_values(
                conn,
                "UPDATE t SET v = x.column1, at = ? + ? FROM",
                [(10 + i, f"k{i}") for i in range(6)],
                "AS x WHERE t.k = x.column2 AND t.state = ?",
                before=(1, 2),
                after=("open",),
            )
        found = await db.fetchall("SELECT k, v, at FROM t ORDER BY k")
        expected = [(f"k{i}", 10 + i, 3) for i in range(6)]
        expected[4] = ("k4", 0, 0)  # the condition held it back
        assert [tuple(row) for row in found] == expected
    finally:
        await db.close()


async def test_apply_outcomes_over_several_statements_is_exact_and_idempotent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A tiny parameter limit splits every bulk step of the chunk into many statements.
    monkeypatch.setattr(dbmod, "MAX_PARAMS", 40)
    monkeypatch.setattr(bstore, "MAX_PARAMS", 40)
    db = await Database.open(tmp_path / "a.db")
    try:
        items = [_new(i) for i in range(30)]
        async with db.transaction() as conn:
            await tstore.insert_tickets(conn, items)
        groups = await bstore.queued_groups(db)
        batch = await bstore.claim(
            db, batch_id="cb_1", group=groups[0], now_ms=NOW, max_lines=100,
            max_bytes=10**9, line_overhead=0, token_room=None,
        )  # fmt: skip
        assert batch is not None
        ids = [item.id for item in items]
        # The deadline guard took ticket 0 over before its line arrived.
        async with db.transaction() as conn:
            await tstore.move(
                conn, ids[:1], T.SUBMITTED, T.REALTIME, now_ms=NOW, detail="guard", lane="realtime"
            )
        outcomes = [_outcome(i, ticket_id) for i, ticket_id in enumerate(ids)]
        routed: list[str] = []

        def route(ticket: TicketFacts, outcome: Outcome) -> tuple[Any, ...]:
            routed.append(ticket.id)
            return route_rows.final(ticket, outcome, now_ms=NOW)

        first = await bstore.apply_outcomes(
            db, "cb_1", outcomes, now_ms=NOW, max_attempts=3, route=route
        )
        assert first.ignored == [(ids[0], "realtime")]
        assert sorted(first.requeued) == sorted(ids[i] for i in range(1, 30) if i % 5 == 0)
        ended = [ids[i] for i in range(1, 30) if i % 5]
        assert sorted(t.id for t, _ in first.final) == sorted(ended)
        assert sorted(routed) == sorted(ended)
        for i, ticket_id in enumerate(ids[1:], start=1):
            ticket = await tstore.get_ticket(db, ticket_id)
            assert ticket is not None
            if i % 5 == 0:
                assert (ticket.status, ticket.batch_id) == (T.QUEUED, None)
            elif i % 5 == 1:
                assert ticket.status is T.FAILED
                assert ticket.error == {"message": "bad", "type": "invalid_request_error",
                                        "param": None, "code": "x"}  # fmt: skip
            else:
                assert ticket.status is T.COMPLETED
                assert ticket.result == b'{"n": %d,  "raw":true}' % i
                assert (ticket.prompt_tokens, ticket.finished_ms) == (i, NOW)
        # A second ingest of the same lines (after a crash) changes nothing.
        routed.clear()
        again = await bstore.apply_outcomes(
            db, "cb_1", outcomes, now_ms=NOW + 1, max_attempts=3, route=route
        )
        assert (again.final, again.requeued, routed) == ([], [], [])
        count = await db.fetchone("SELECT COUNT(*) FROM routes")
        assert count is not None
        assert count[0] == len(ended)
    finally:
        await db.close()


NOW = 1_767_225_600_000


def _new(i: int) -> NewTicket:
    return NewTicket(
        id=f"tkt_{i:03d}", key_name="k", request_id=f"req_{i}", idempotency_key=None,
        endpoint="/v1/chat/completions", model="m", provider="openai", upstream_model="m",
        lane="batch", reason="test", body=b"{}", est_tokens=1, created_ms=NOW,
        deadline_ms=NOW + 3_600_000, not_before_ms=0, callback_url=None,
    )  # fmt: skip


def _outcome(i: int, ticket_id: str) -> Outcome:
    if i % 5 == 0:
        return Outcome(ticket_id, T.QUEUED, detail="retry")
    if i % 5 == 1:
        error = {"message": "bad", "type": "invalid_request_error", "param": None, "code": "x"}
        return Outcome(ticket_id, T.FAILED, error=error, detail="bad")
    # Stored exactly as the provider's bytes, spacing included.
    result = b'{"n": %d,  "raw":true}' % i
    return Outcome(ticket_id, T.COMPLETED, result=result, prompt_tokens=i, detail="ok")


def test_statement_shapes_stay_few_whatever_the_row_counts() -> None:
    # sqlite3 compiles and caches each distinct statement text; the row count is part
    # of the text, so larger counts are cut into power-of-two parts of at most MAX_ROWS.
    shapes: set[str] = set()
    for count in range(1, 1200):
        rows = [(i, i * 2, "x") for i in range(count)]
        covered: list[tuple[object, ...]] = []
        for sql, params in values_statements("INSERT INTO t (a, b, c) VALUES ", rows, ""):
            shapes.add(sql)
            covered += [tuple(params[i : i + 3]) for i in range(0, len(params), 3)]
        assert covered == rows, count
    # One per count up to SMALL_ROWS, then the powers of two above it up to MAX_ROWS.
    assert len(shapes) == SMALL_ROWS + (MAX_ROWS.bit_length() - SMALL_ROWS.bit_length())


async def test_overlapping_chunks_applied_at_once_end_each_ticket_once(db: Database) -> None:
    # An ingest on PostgreSQL writes two chunks at once (proxy.deferral.ingest); a line
    # the provider repeated can put one ticket in both. Each ticket still ends once, on
    # both engines, and neither transaction deadlocks on the other.
    items = [_new(i) for i in range(40)]
    async with db.transaction() as conn:
        await tstore.insert_tickets(conn, items)
    groups = await bstore.queued_groups(db)
    batch = await bstore.claim(
        db, batch_id="cb_2", group=groups[0], now_ms=NOW, max_lines=100,
        max_bytes=10**9, line_overhead=0, token_room=None,
    )  # fmt: skip
    assert batch is not None
    ids = [item.id for item in items]
    done = [Outcome(t, T.COMPLETED, result=b"{}", detail="ok") for t in ids]

    def route(ticket: TicketFacts, outcome: Outcome) -> tuple[Any, ...]:
        return route_rows.final(ticket, outcome, now_ms=NOW)

    first, second = await asyncio.gather(
        bstore.apply_outcomes(db, "cb_2", done[:30], now_ms=NOW, max_attempts=3, route=route),
        bstore.apply_outcomes(db, "cb_2", done[10:], now_ms=NOW, max_attempts=3, route=route),
    )
    ended = [t.id for t, _ in first.final] + [t.id for t, _ in second.final]
    assert sorted(ended) == sorted(ids)
    routes = await db.fetchall("SELECT ticket_id FROM routes")
    assert sorted(row[0] for row in routes) == sorted(ids)
    events = await db.fetchall("SELECT ticket_id FROM ticket_events WHERE to_status = 'completed'")
    assert sorted(row[0] for row in events) == sorted(ids)
