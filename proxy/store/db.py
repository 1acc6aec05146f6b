"""The SQLite database: one writer connection, one reader connection, WAL.

Writes go through ``Database.transaction`` (serialised, ``BEGIN IMMEDIATE``) or through
a ``GroupCommit``, which gathers concurrent writes into one transaction so that many
callers share one commit: a caller's ``submit`` returns only after its row is durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

import aiosqlite

from proxy.store.migrations import MIGRATIONS

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

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


def now_ms() -> int:
    return int(time.time() * 1000)


def _max_params() -> int:
    with contextlib.closing(sqlite3.connect(":memory:")) as conn:
        return int(conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))


# Host parameters per statement: the library's limit (999 before SQLite 3.32), capped
# so that one statement binds a bounded amount.
MAX_PARAMS = min(_max_params(), 32766)


async def insert_values(
    conn: aiosqlite.Connection, head: str, rows: Sequence[Sequence[Any]], *, tail: str = ""
) -> None:
    """``head VALUES (?, ...), (?, ...) ... tail`` for all ``rows`` (all of one width) in
    as few statements as the parameter limit allows. Unlike ``executemany``, which
    steps once per row and takes the GIL back after each step, a whole statement runs
    without the GIL: the writer thread no longer waits on a busy event loop between
    rows."""
    for sql, params in values_statements(f"{head} VALUES ", rows, f" {tail}"):
        await conn.execute(sql, params)


async def update_values(
    conn: aiosqlite.Connection,
    head: str,
    rows: Sequence[Sequence[Any]],
    tail: str,
    *,
    before: Sequence[Any] = (),
    after: Sequence[Any] = (),
) -> None:
    """``head (VALUES (?, ...), ...) tail``: an ``UPDATE ... FROM`` (SQLite 3.33+) over
    many rows in as few statements as the parameter limit allows, for the same reason
    as ``insert_values``. ``before`` and ``after`` are the parameters of ``head`` and
    ``tail``, repeated in each statement."""
    statements = values_statements(
        f"{head} (VALUES ", rows, f") {tail}", reserved=len(before) + len(after)
    )
    for sql, params in statements:
        await conn.execute(sql, [*before, *params, *after])


# Rows per statement: a power of two at most this. Each distinct statement text is
# compiled and kept in sqlite3's statement cache (128 per connection), and the text
# depends on the row count: with any count up to the parameter limit allowed, a
# routing-log writer that saw many group sizes kept ever more multi-megabyte programs
# (the memory benchmark's RSS rose 1-5 MB a round without settling). Up to SMALL_ROWS
# rows go as one statement (small programs; one thread hop for an enqueue group of 64);
# more are cut into power-of-two parts, so large shapes stay few.
MAX_ROWS = 256
SMALL_ROWS = 64


def _parts(count: int, size: int) -> Iterator[tuple[int, int]]:
    """``[start, stop)`` ranges covering ``count`` rows: all at once up to
    ``SMALL_ROWS``, else full parts of ``size`` and then the rest as its binary digits
    (a rest of 37 rows -> 32, 4, 1)."""
    if count <= min(SMALL_ROWS, size):
        yield 0, count
        return
    start = 0
    while count - start >= size:
        yield start, start + size
        start += size
    while start < count:
        step = 1 << ((count - start).bit_length() - 1)
        yield start, start + step
        start += step


def values_statements(
    head: str, rows: Sequence[Sequence[Any]], tail: str, *, reserved: int = 0
) -> Iterator[tuple[str, list[Any]]]:
    """``head (?, ...), (?, ...) tail`` with the flattened parameters, splitting ``rows``
    so that no statement binds more than ``MAX_PARAMS`` (``reserved`` of them are
    the caller's own).

    A column that is NULL in every row of a statement is written as the literal
    ``NULL`` instead of being bound: CPython's sqlite3 (3.11) binds ``None`` through
    its adapter lookup, ~0.7 µs a value against ~0.06 µs for an int, holding the GIL,
    and routing-log rows carry half a dozen such columns. The statement's text then
    depends only on which columns those are, so the statement cache still hits."""
    if not rows:
        return
    width = len(rows[0])
    limit = max(1, min(MAX_ROWS, (MAX_PARAMS - reserved) // width))
    for start, stop in _parts(len(rows), 1 << (limit.bit_length() - 1)):
        part = rows[start:stop]
        bound = [column.count(None) != len(column) for column in zip(*part, strict=True)]
        one = "(" + ", ".join("?" if keep else "NULL" for keep in bound) + ")"
        sql = f"{head}{', '.join([one] * len(part))}{tail}"
        if all(bound):
            yield sql, [v for row in part for v in row]
        else:
            kept = [i for i, keep in enumerate(bound) if keep]
            yield sql, [row[i] for row in part for i in kept]


class Database:
    def __init__(self, path: str, writer: aiosqlite.Connection, reader: aiosqlite.Connection):
        self.path = path
        self._writer = writer
        self._reader = reader
        self._write_lock = asyncio.Lock()
        self._read_lock = asyncio.Lock()
        self._bulk_jobs = 0

    @classmethod
    async def open(cls, path: str | Path) -> Database:
        path = str(path)
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        writer = await _connect(path, _WRITER_PRAGMAS)
        await _migrate(writer)
        reader = await _connect(path)
        return cls(path, writer, reader)

    async def close(self) -> None:
        async with self._write_lock:
            await self._writer.close()
        await self._reader.close()

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
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """An exclusive write transaction; commits on success, rolls back on error."""
        async with self._write_lock:
            await self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield self._writer
            except BaseException:
                await self._writer.rollback()
                raise
            else:
                await self._writer.commit()

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[aiosqlite.Row]:
        # One query at a time on the reader, each run to completion: a half-read cursor
        # keeps its snapshot open, and another coroutine's query on the same connection
        # would then miss a row committed meanwhile (seen under load as a 202 that could
        # not re-read its own ticket).
        async with self._read_lock, self._reader.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> aiosqlite.Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None


async def _connect(path: str, extra: Sequence[str] = ()) -> aiosqlite.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves.
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
    for name, sql in MIGRATIONS:
        if name in done:
            continue
        await conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(sql):
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


class GroupCommit(Generic[T, R]):
    """Batch concurrent writes into shared transactions.

    ``apply(conn, items)`` runs inside one ``BEGIN IMMEDIATE`` transaction and returns one
    result per item; ``submit`` resolves after the commit. ``submit_nowait`` is for writes
    nobody waits on (the routing log); ``drain`` flushes everything pending.
    ``prepare(items)``, if given, runs on each batch just before its transaction (work
    the submitters left for later, done once per batch instead of on their path); it
    returns one item per item.
    """

    def __init__(
        self,
        db: Database,
        apply: Callable[[aiosqlite.Connection, list[T]], Awaitable[list[R]]],
        *,
        max_items: int = 2048,
        linger: float = 0.0,
        name: str = "group-commit",
        prepare: Callable[[list[T]], list[T]] | None = None,
    ) -> None:
        self._db = db
        self._apply = apply
        self._prepare = prepare
        self._max_items = max_items
        self._linger = linger
        self._name = name
        self._pending: list[tuple[T, asyncio.Future[R] | None]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        await self.drain()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._enqueue(item, future)
        return await future

    def submit_nowait(self, item: T) -> None:
        self._enqueue(item, None)

    async def drain(self) -> None:
        while self._pending or not self._idle.is_set():
            if self._task is None:
                await self._flush()
            else:
                self._wakeup.set()
                await asyncio.sleep(0.001)

    def _enqueue(self, item: T, future: asyncio.Future[R] | None) -> None:
        self._pending.append((item, future))
        self._idle.clear()
        self._wakeup.set()

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if self._linger:
                await asyncio.sleep(self._linger)
            while self._pending:
                await self._flush()

    async def _flush(self) -> None:
        batch, self._pending = self._pending[: self._max_items], self._pending[self._max_items :]
        if not batch:
            self._idle.set()
            return
        items = [item for item, _ in batch]
        try:
            if self._prepare is not None:
                items = self._prepare(items)
            async with self._db.transaction() as conn:
                results = await self._apply(conn, items)
        except Exception as exc:
            log.exception("%s: write of %d items failed", self._name, len(batch))
            for _, future in batch:
                if future is not None and not future.done():
                    future.set_exception(exc)
        else:
            for (_, future), result in zip(batch, results, strict=True):
                if future is not None and not future.done():
                    future.set_result(result)
        if not self._pending:
            self._idle.set()
