"""The store's engine seam: ``Database`` (opened from a path for SQLite or a
``postgresql://`` URL for PostgreSQL) and ``Conn``, the connection a write transaction
hands out. Every function in ``proxy.store`` takes one of these and works on both
engines; see the package docstring for how to write one.

Writes go through ``Database.transaction`` or through a ``GroupCommit``, which gathers
concurrent writes into one transaction so that many callers share one commit: a
caller's ``submit`` returns only after its row is durable.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeAlias, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# A result row: ``sqlite3.Row`` or ``asyncpg.Record``. Both index by position and by
# column name, and ``dict(row)`` gives {column: value} on both.
Row: TypeAlias = Any


def now_ms() -> int:
    return int(time.time() * 1000)


def _max_params() -> int:
    import sqlite3

    with contextlib.closing(sqlite3.connect(":memory:")) as conn:
        return int(conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))


# Host parameters per statement: the SQLite library's limit (999 before SQLite 3.32),
# capped so that one statement binds a bounded amount; PostgreSQL allows 32,767.
MAX_PARAMS = min(_max_params(), 32766)


async def insert_values(
    conn: Conn, head: str, rows: Sequence[Sequence[Any]], *, tail: str = ""
) -> None:
    """``head VALUES (?, ...), (?, ...) ... tail`` for all ``rows`` (all of one width) in
    as few statements as the parameter limit allows. Unlike ``executemany``, which
    steps once per row and takes the GIL back after each step, a whole statement runs
    without the GIL: the writer thread no longer waits on a busy event loop between
    rows."""
    for sql, params in values_statements(f"{head} VALUES ", rows, f" {tail}"):
        await conn.execute(sql, params)


async def update_values(
    conn: Conn,
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


@dataclass(frozen=True, slots=True)
class Dialect:
    """The SQL that differs between the engines, as fragments a store function splices
    into otherwise shared statements (all statements use ``?`` placeholders; the
    PostgreSQL engine numbers them). Whole statements that differ branch on
    ``dialect.postgres`` inside ``proxy.store`` and nowhere else."""

    name: str
    # Appended to a SELECT that reads rows the same transaction then changes: on
    # PostgreSQL it locks them (and re-checks the WHERE after waiting for another
    # writer), so "the rows that really changed" stays exact across replicas. SQLite
    # has one writer at a time and no row locks.
    lock: str
    # A claim: rows another transaction holds are skipped instead of waited for.
    skip_locked: str
    max_params: int

    @property
    def postgres(self) -> bool:
        return self.name == "postgres"

    def greatest(self, *exprs: str) -> str:
        """The larger of several values (SQLite's two-argument ``MAX`` is scalar)."""
        return f"{'GREATEST' if self.postgres else 'MAX'}({', '.join(exprs)})"

    def clock_ms(self, now_ms: int) -> tuple[str, list[Any]]:
        """(SQL, params) for "now" in Unix ms where leases compare times: PostgreSQL
        uses the database server's clock (one clock for every replica, so a replica's
        skewed clock can neither steal a lease nor keep one); SQLite, one process on one
        box, uses the caller's clock (which tests drive)."""
        if self.postgres:
            return "(CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT))", []
        return "?", [now_ms]


SQLITE = Dialect("sqlite", lock="", skip_locked="", max_params=32766)
POSTGRES = Dialect(
    "postgres", lock=" FOR UPDATE", skip_locked=" FOR UPDATE SKIP LOCKED", max_params=32767
)


class Conn(Protocol):
    """One connection inside a write transaction (``Database.transaction``)."""

    dialect: Dialect

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; the number of rows it changed."""

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None: ...


class Database(abc.ABC):
    """A store engine. ``Database.open(target)`` picks one: a ``postgresql://`` URL
    opens ``proxy.store.postgres.PgDatabase``, anything else is a SQLite file path
    (``proxy.store.sqlite.SqliteDatabase``). Opening applies pending migrations."""

    dialect: Dialect
    # Human-readable target without credentials (logs, check-config).
    where: str

    @staticmethod
    async def open(target: str | Path, *, pool_size: int = 8) -> Database:
        text = str(target)
        if is_postgres_url(text):
            from proxy.store.postgres import PgDatabase

            return await PgDatabase.open(text, pool_size=pool_size)
        from proxy.store.sqlite import SqliteDatabase

        return await SqliteDatabase.open(text)

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    def transaction(self) -> contextlib.AbstractAsyncContextManager[Conn]:
        """An exclusive write transaction; commits on success, rolls back on error."""

    @abc.abstractmethod
    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """A read outside any transaction; sees everything committed before it began."""

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    def bulk(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Around a batch-sized job (an ingest, a flush's claim): engine tuning for it."""
        return contextlib.nullcontext()

    async def server_version(self) -> str:
        """The engine and its version (``costroute check-config``)."""
        raise NotImplementedError

    # --- cross-process wake-ups ----------------------------------------------------------

    @property
    def shared(self) -> bool:
        """True when other processes may write the same database (PostgreSQL):
        in-process wake-ups then need ``notify``/``listen`` to reach the others."""
        return False

    async def notify(self, channel: str, payload: str) -> None:  # noqa: B027 (optional)
        """Tell every process listening on ``channel`` (no-op on a single-process engine)."""

    async def listen(  # noqa: B027 (optional)
        self, channel: str, callback: Callable[[str], None]
    ) -> None:
        """Call ``callback(payload)`` for each notification on ``channel`` (from any
        process, this one included). A single-process engine has nobody to hear from."""

    @property
    def listening(self) -> bool:
        """Whether notifications arrive right now (False while reconnecting); callers
        then fall back to polling more often."""
        return not self.shared


def is_postgres_url(target: str) -> bool:
    return target.startswith(("postgresql://", "postgres://"))


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
        apply: Callable[[Conn, list[T]], Awaitable[list[R]]],
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
