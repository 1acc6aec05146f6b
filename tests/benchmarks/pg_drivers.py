"""asyncpg against psycopg 3 on costroute's own write shapes (the driver choice in the
README's dependency table rests on this).

    python -m tests.benchmarks.pg_drivers postgresql://...   # or a throwaway cluster

Shapes: the enqueue group commit (one transaction of 64 ticket-shaped rows as a
multi-row ``INSERT ... VALUES``, 8 transactions in flight), single-row autocommit
inserts from 8 tasks, and a 2,000-row ``UPDATE ... FROM unnest(...)`` (an ingest chunk).
Reported: rows/s and the client's CPU-µs per row (``time.process_time``): on 2 cores
the driver's CPU per row is what replicas pay for every ticket.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import psycopg

from tests import pgcluster

_DDL = """
DROP TABLE IF EXISTS bench;
CREATE TABLE bench (id text PRIMARY KEY, key_name text, request_id text, idem text,
  endpoint text, model text, provider text, upstream text, lane text, reason text,
  status text, body_bytes bigint, est bigint, units bigint, created bigint, deadline bigint,
  not_before bigint, updated bigint, callback text)
"""
_COLS = 19
_ROWS = 64
_TASKS = 8
_TOTAL = 40_000


def _row(i: int) -> tuple[Any, ...]:
    return (
        f"tkt_{i:012d}", "team-a", f"req_{i}", None, "/v1/chat/completions", "gpt-4o-mini",
        "openai", "gpt-4o-mini", "batch", "tolerance 24h", "queued", 420, 105, 1,
        1_700_000_000_000 + i, 1_700_086_400_000, 0, 1_700_000_000_000 + i, None,
    )  # fmt: skip


def _values(rows: int, dollar: bool) -> str:
    out = []
    n = 0
    for _ in range(rows):
        marks = []
        for _ in range(_COLS):
            n += 1
            marks.append(f"${n}" if dollar else "%s")
        out.append("(" + ", ".join(marks) + ")")
    return "INSERT INTO bench VALUES " + ", ".join(out) + " ON CONFLICT DO NOTHING"


async def _measure(name: str, rows: int, run: Callable[[], Awaitable[None]]) -> dict[str, Any]:
    cpu, wall = time.process_time(), time.perf_counter()
    await run()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    result = {"shape": name, "rows_per_s": round(rows / wall), "cpu_us_per_row": cpu / rows * 1e6}
    print(
        f"  {name:<48} {result['rows_per_s']:>9,} rows/s  "
        f"{result['cpu_us_per_row']:6.1f} µs CPU/row"
    )
    return result


async def bench_asyncpg(url: str) -> list[dict[str, Any]]:
    print("asyncpg", asyncpg.__version__)
    pool = await asyncpg.create_pool(url, min_size=_TASKS, max_size=_TASKS)
    assert pool is not None
    out = []
    async with pool.acquire() as conn:
        await conn.execute(_DDL)
    sql = _values(_ROWS, True)
    counter = iter(range(10**9))

    async def group_worker() -> None:
        for _ in range(_TOTAL // _ROWS // _TASKS):
            params = [v for _ in range(_ROWS) for v in _row(next(counter))]
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(sql, *params)

    async def groups() -> None:
        await asyncio.gather(*(group_worker() for _ in range(_TASKS)))

    out.append(await _measure("group commit: 64-row VALUES, 8 in flight", _TOTAL, groups))
    single = "INSERT INTO bench VALUES (" + ", ".join(f"${i + 1}" for i in range(_COLS)) + ")"

    async def single_worker() -> None:
        # One connection per task, as psycopg's side holds them.
        async with pool.acquire() as conn:
            for _ in range(4000 // _TASKS):
                await conn.execute(single, *_row(next(counter)))

    async def singles() -> None:
        await asyncio.gather(*(single_worker() for _ in range(_TASKS)))

    out.append(await _measure("single-row autocommit, 8 in flight", 4000, singles))
    ids = [f"tkt_{i:012d}" for i in range(2000)]

    async def update() -> None:
        for _ in range(10):
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    "UPDATE bench SET status = v.s, updated = v.u FROM unnest($1::text[], "
                    "$2::text[], $3::bigint[]) AS v(id, s, u) WHERE bench.id = v.id",
                    ids, ["completed"] * len(ids), list(range(len(ids))),
                )  # fmt: skip

    out.append(await _measure("ingest chunk: 2,000-row UPDATE FROM unnest", 20_000, update))
    await pool.close()
    return out


async def bench_psycopg(url: str) -> list[dict[str, Any]]:
    print("psycopg", psycopg.__version__, psycopg.pq.__impl__)
    conns = [await psycopg.AsyncConnection.connect(url) for _ in range(_TASKS)]
    out = []
    async with conns[0].cursor() as cur:
        await cur.execute(_DDL)
    await conns[0].commit()
    sql = _values(_ROWS, False)
    counter = iter(range(10**9))

    async def group_worker(conn: psycopg.AsyncConnection[Any]) -> None:
        for _ in range(_TOTAL // _ROWS // _TASKS):
            params = [v for _ in range(_ROWS) for v in _row(next(counter))]
            async with conn.transaction():
                await conn.execute(sql, params)

    async def groups() -> None:
        await asyncio.gather(*(group_worker(c) for c in conns))

    out.append(await _measure("group commit: 64-row VALUES, 8 in flight", _TOTAL, groups))
    single = "INSERT INTO bench VALUES (" + ", ".join(["%s"] * _COLS) + ")"
    for conn in conns:
        await conn.set_autocommit(True)

    async def single_worker(conn: psycopg.AsyncConnection[Any]) -> None:
        for _ in range(4000 // _TASKS):
            await conn.execute(single, _row(next(counter)))

    async def singles() -> None:
        await asyncio.gather(*(single_worker(c) for c in conns))

    out.append(await _measure("single-row autocommit, 8 in flight", 4000, singles))
    ids = [f"tkt_{i:012d}" for i in range(2000)]

    async def update() -> None:
        for _ in range(10):
            await conns[0].execute(
                "UPDATE bench SET status = v.s, updated = v.u FROM unnest(%s::text[], "
                "%s::text[], %s::bigint[]) AS v(id, s, u) WHERE bench.id = v.id",
                (ids, ["completed"] * len(ids), list(range(len(ids)))),
            )

    out.append(await _measure("ingest chunk: 2,000-row UPDATE FROM unnest", 20_000, update))
    for conn in conns:
        await conn.close()
    return out


async def run(url: str) -> dict[str, list[dict[str, Any]]]:
    return {"asyncpg": await bench_asyncpg(url), "psycopg": await bench_psycopg(url)}


def main(argv: list[str]) -> int:
    if argv:
        asyncio.run(run(argv[0]))
        return 0
    with tempfile.TemporaryDirectory(prefix="costroute-pgbench-") as tmp:
        url = pgcluster.start(Path(tmp) / "pg")
        try:
            asyncio.run(run(url))
        finally:
            pgcluster.stop(Path(tmp) / "pg")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
