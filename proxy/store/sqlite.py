"""The SQLite engine: one writer connection, one reader connection, WAL. The embedded
default for one process on one box.

``inline=True`` (``costroute simulate`` only) runs each statement on the event loop's
own thread instead of aiosqlite's worker thread. The statements, transactions and locks
are the same; what goes is the hand-off to the thread and back (a queue put, a wake-up of
the loop through its self-pipe), which cost more than the statements themselves: in a
simulated day it was over half the run's time. A live proxy must not block its loop on
a disk write, so ``serve`` never uses it; a simulation has nothing else to run meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Generator, Iterable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from proxy.store.db import SQLITE, Conn, Database, Dialect, Row, now_ms
from proxy.store.migrations import MIGRATIONS, sqlite_script

log = logging.getLogger(__name__)

_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA busy_timeout=10000",
    "PRAGMA foreign_keys=ON",
    "PRAGMA temp_store=MEMORY",
)
# Checkpoints run every ~40 MB of WAL rather than every 4 MB: each one fsyncs and
# copies hot pages (ticket rows, status indexes) that the next ingest chunk rewrites
# anyway; after one, the WAL file is truncated back to 64 MB.
_WRITER_PRAGMAS = (
    "PRAGMA wal_autocheckpoint=10000",
    "PRAGMA journal_size_limit=67108864",
)
# An ingest chunk dirties more pages than the default 2 MB cache holds, and SQLite then
# spills them into the WAL before the commit, so batch-sized jobs get 32 MB on the
# writer for their duration (``Database.bulk``). Only then: kept all the time, the
# cache filled up with routing-log pages under real-time traffic and the resident size
# grew by ~18 MB between two equal rounds of the memory benchmark.
_BULK_CACHE = "PRAGMA cache_size=-32768"
_DEFAULT_CACHE = "PRAGMA cache_size=-2000"


class SqliteConn:
    """``Conn`` over the writer connection, inside its transaction."""

    dialect: Dialect = SQLITE

    def __init__(self, raw: aiosqlite.Connection) -> None:
        self.raw = raw

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        cursor = await self.raw.execute(sql, params)
        count = cursor.rowcount
        await cursor.close()
        return count

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self.raw.executemany(sql, rows)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return list(await self.raw.execute_fetchall(sql, params))

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None


class SqliteDatabase(Database):
    dialect = SQLITE

    def __init__(self, path: str, writer: aiosqlite.Connection, reader: aiosqlite.Connection):
        self.path = path
        self.where = path
        self._writer = writer
        self._conn = SqliteConn(writer)
        self._reader = reader
        self._write_lock = asyncio.Lock()
        self._read_lock = asyncio.Lock()
        self._bulk_jobs = 0

    @classmethod
    async def open(
        cls, path: str | Path, *, pool_size: int = 1, inline: bool = False
    ) -> SqliteDatabase:
        path = str(path)
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # A simulation's store is thrown away after the run: no fsync at checkpoints.
        extra = (*_WRITER_PRAGMAS, "PRAGMA synchronous=OFF") if inline else _WRITER_PRAGMAS
        writer = await _connect(path, extra, inline=inline)
        await _migrate(writer)
        reader = await _connect(path, inline=inline)
        return cls(path, writer, reader)

    async def close(self) -> None:
        async with self._write_lock:
            await self._writer.close()
        await self._reader.close()

    async def server_version(self) -> str:
        return f"SQLite {sqlite3.sqlite_version} ({self.path})"

    @contextlib.asynccontextmanager
    async def bulk(self) -> AsyncIterator[None]:
        """The writer's big page cache while a batch-sized job (an ingest, a flush's
        claim) runs; back to the default once the last such job ends."""
        self._bulk_jobs += 1
        if self._bulk_jobs == 1:
            async with self._write_lock:
                await self._writer.execute(_BULK_CACHE)
        try:
            yield
        finally:
            self._bulk_jobs -= 1
            if self._bulk_jobs == 0:
                async with self._write_lock:
                    await self._writer.execute(_DEFAULT_CACHE)

    async def writer_cache_kib(self) -> int:
        """The writer's page-cache limit in KiB (for tests of ``bulk``)."""
        async with self._write_lock, self._writer.execute("PRAGMA cache_size") as cursor:
            row = await cursor.fetchone()
        return -int(row[0]) if row is not None else 0

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Conn]:
        async with self._write_lock:
            await self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                await self._writer.rollback()
                raise
            else:
                await self._writer.commit()

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        # One query at a time on the reader, each run to completion: a half-read cursor
        # keeps its snapshot open, and another coroutine's query on the same connection
        # would then miss a row committed meanwhile (seen under load as a 202 that could
        # not re-read its own ticket).
        async with self._read_lock, self._reader.execute(sql, params) as cursor:
            return list(await cursor.fetchall())


class InlineConnection(aiosqlite.Connection):
    """aiosqlite's connection with every call run at once on the calling thread (see
    the module docstring): its cursors and helpers all go through ``_execute``."""

    def __init__(self, path: str) -> None:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves.
        super().__init__(lambda: sqlite3.connect(path, isolation_level=None), 64)

    async def _execute(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if not self._running or self._connection is None:
            raise ValueError("Connection closed")
        return fn(*args, **kwargs)

    async def _connect(self) -> InlineConnection:
        if self._connection is None:
            self._connection = self._connector()
        return self

    def __await__(self) -> Generator[Any, None, InlineConnection]:
        return self._connect().__await__()  # no worker thread to start

    def stop(self) -> None:
        self._running = False
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    async def close(self) -> None:
        self.stop()


async def _connect(
    path: str, extra: Sequence[str] = (), *, inline: bool = False
) -> aiosqlite.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves.
    if inline:
        conn: aiosqlite.Connection = await InlineConnection(path)
    else:
        conn = await aiosqlite.connect(path, isolation_level=None)
    conn.row_factory = aiosqlite.Row
    for pragma in (*_PRAGMAS, *extra):
        await conn.execute(pragma)
    return conn


async def _migrate(conn: aiosqlite.Connection) -> None:
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_ms INTEGER)"
    )
    async with conn.execute("SELECT name FROM _migrations") as cursor:
        done = {row[0] for row in await cursor.fetchall()}
    for name, step in MIGRATIONS:
        if name in done:
            continue
        # BEGIN IMMEDIATE takes the write lock, and the step is checked again under it:
        # two processes opening one file together apply each step once.
        await conn.execute("BEGIN IMMEDIATE")
        try:
            async with conn.execute("SELECT 1 FROM _migrations WHERE name = ?", (name,)) as c:
                if await c.fetchone() is not None:
                    await conn.rollback()
                    continue
            for statement in _statements(sqlite_script(step)):
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO _migrations (name, applied_ms) VALUES (?, ?)", (name, now_ms())
            )
        except BaseException:
            await conn.rollback()
            raise
        await conn.commit()
        log.info("applied migration %s", name)


def _statements(script: str) -> Iterable[str]:
    return (part.strip() for part in script.split(";") if part.strip())
