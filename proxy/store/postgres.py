"""The PostgreSQL engine: several costroute replicas on one shared database.

asyncpg (measured against psycopg 3 on costroute's own write shapes; README,
dependencies) with a small pool per process, plus one dedicated connection that LISTENs
for cross-replica wake-ups. Statements are the store's shared SQL with ``?``
placeholders, numbered ``$1, $2 ...`` here once per statement text.

Durability: a commit returns after the WAL is flushed on the server
(``synchronous_commit`` is left at its default, ``on``), so a 202 is sent only for a
ticket the database has made durable. Across a failover of the database itself that
holds only with a synchronous standby (README, "Running several replicas").

The pool's connections must be real sessions, not a transaction-mode pooler: migrations
hold a session advisory lock and LISTEN needs its own session (both would silently
break behind PgBouncer in transaction mode).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from proxy.store.db import POSTGRES, Conn, Database, Dialect, Row, now_ms
from proxy.store.migrations import MIGRATIONS, postgres_script

log = logging.getLogger(__name__)

# Two replicas starting together take this session lock in turn, so each migration
# step is applied once (the second finds it recorded).
_MIGRATE_LOCK = "SELECT pg_advisory_lock(hashtext('costroute-migrate'))"
_MIGRATE_UNLOCK = "SELECT pg_advisory_unlock(hashtext('costroute-migrate'))"
_RECONNECT_S = 1.0


@functools.lru_cache(maxsize=8192)
def numbered(sql: str) -> str:
    """``?`` placeholders as ``$1, $2 ...``; a ``?`` inside a quoted literal stays."""
    out: list[str] = []
    n = 0
    quoted = False
    for char in sql:
        if char == "'":
            quoted = not quoted
        elif char == "?" and not quoted:
            n += 1
            out.append(f"${n}")
            continue
        out.append(char)
    return "".join(out)


def _count(status: str) -> int:
    """Rows changed, from a command tag such as ``UPDATE 3`` or ``INSERT 0 5``."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


def redacted(url: str) -> str:
    """The URL without its password (for logs and ``check-config``)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[-1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


class PgConn:
    """``Conn`` over one pooled connection inside its transaction."""

    dialect: Dialect = POSTGRES

    def __init__(self, raw: asyncpg.Connection) -> None:
        self.raw = raw

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return _count(await self.raw.execute(numbered(sql), *params))

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if rows:
            await self.raw.executemany(numbered(sql), rows)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return list(await self.raw.fetch(numbered(sql), *params))

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        return await self.raw.fetchrow(numbered(sql), *params)


class PgDatabase(Database):
    dialect = POSTGRES

    def __init__(self, url: str, pool: asyncpg.Pool) -> None:
        self._url = url
        self.where = redacted(url)
        self._pool = pool
        self._listeners: dict[str, list[Callable[[str], None]]] = {}
        self._listen_task: asyncio.Task[None] | None = None
        self._listen_conn: asyncpg.Connection | None = None
        self._connected = asyncio.Event()
        self._closed = False

    @classmethod
    async def open(cls, url: str | Path, *, pool_size: int = 8) -> PgDatabase:
        url = str(url)
        pool = await asyncpg.create_pool(
            url,
            min_size=1,
            max_size=max(2, pool_size),
            # A connection that sat idle this long is closed (a replica's pool shrinks back
            # after a burst instead of holding the server's connection slots).
            max_inactive_connection_lifetime=60.0,
            command_timeout=300,
            reset=_keep_session,
        )
        assert pool is not None
        try:
            await _migrate(url)
        except BaseException:
            await pool.close()
            raise
        return cls(url, pool)

    @staticmethod
    async def version_of(url: str) -> str:
        """Connect once, without migrating: the server's version (``check-config``)."""
        conn = await asyncpg.connect(url, timeout=10)
        try:
            version = str(await conn.fetchval("SELECT version()"))
        finally:
            await conn.close()
        return f"{version.split(' on ')[0]} at {redacted(url)}"

    async def close(self) -> None:
        self._closed = True
        if self._listen_task is not None:
            self._listen_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listen_task
            self._listen_task = None
        await self._pool.close()

    async def server_version(self) -> str:
        row = await self.fetchone("SELECT version()")
        version = str(row[0]) if row is not None else "unknown"
        return f"{version.split(' on ')[0]} ({self.where})"

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Conn]:
        async with self._pool.acquire() as raw, raw.transaction():
            yield PgConn(raw)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return list(await self._pool.fetch(numbered(sql), *params))

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        return await self._pool.fetchrow(numbered(sql), *params)

    # --- cross-process wake-ups ----------------------------------------------------------

    @property
    def shared(self) -> bool:
        return True

    @property
    def listening(self) -> bool:
        return self._connected.is_set()

    async def notify(self, channel: str, payload: str) -> None:
        # Sent after the commit it announces (a listener that wakes re-reads the rows).
        await self._pool.execute("SELECT pg_notify($1, $2)", channel, payload)

    async def listen(self, channel: str, callback: Callable[[str], None]) -> None:
        first = channel not in self._listeners
        self._listeners.setdefault(channel, []).append(callback)
        if self._listen_task is None:
            self._listen_task = asyncio.create_task(self._listen_loop(), name="pg-listen")
        elif first and self._listen_conn is not None:
            with contextlib.suppress(Exception):
                await self._listen_conn.add_listener(channel, self._dispatch)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), 5.0)

    def _dispatch(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        for callback in self._listeners.get(channel, ()):
            try:
                callback(payload)
            except Exception:
                log.exception("listener on %s failed", channel)

    async def _listen_loop(self) -> None:
        """One dedicated session (LISTEN must not share a pooled connection: it stays
        registered only on its own session); reconnect when it drops. While it is down,
        ``listening`` is False and waiters poll more often; after a reconnect every
        callback gets an empty payload ("something may have been missed")."""
        while not self._closed:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self._url)
                lost = asyncio.Event()
                conn.add_termination_listener(functools.partial(_set, lost))
                for channel in list(self._listeners):
                    await conn.add_listener(channel, self._dispatch)
                self._listen_conn = conn
                self._connected.set()
                for channel in list(self._listeners):
                    self._dispatch(conn, 0, channel, "")
                await lost.wait()
                log.warning("the LISTEN connection dropped; reconnecting")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("LISTEN connection failed (%s); retrying", exc)
            finally:
                self._connected.clear()
                self._listen_conn = None
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await asyncio.shield(conn.close(timeout=2))
            await asyncio.sleep(_RECONNECT_S)


def _set(event: asyncio.Event, _: object) -> None:
    event.set()


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What the pool does to a connection given back, besides what asyncpg always does
    (roll back an open transaction, drop callbacks): nothing. asyncpg's default sends
    ``RESET ALL; UNLISTEN *; SELECT pg_advisory_unlock_all(); CLOSE ALL`` first: one
    more round trip after every transaction and every read. No store function leaves
    session state on a pooled connection: LISTEN and the migration lock have
    connections of their own."""


async def _migrate(url: str) -> None:
    # Its own session: the advisory lock goes with it when it closes, whatever happens.
    conn = await asyncpg.connect(url, timeout=60)
    try:
        await conn.execute(_MIGRATE_LOCK)
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_ms BIGINT)"
            )
            done = {row[0] for row in await conn.fetch("SELECT name FROM _migrations")}
            known = {name for name, _ in MIGRATIONS}
            newer = sorted(done - known)
            if newer:
                log.warning(
                    "the database has migrations this version does not know (%s): a newer "
                    "costroute ran against it",
                    ", ".join(newer),
                )
            for name, step in MIGRATIONS:
                if name in done:
                    continue
                async with conn.transaction():
                    # Without parameters asyncpg sends the script as one simple query.
                    await conn.execute(postgres_script(step))
                    await conn.execute(
                        "INSERT INTO _migrations (name, applied_ms) VALUES ($1, $2)",
                        name,
                        now_ms(),
                    )
                log.info("applied migration %s", name)
        finally:
            await conn.execute(_MIGRATE_UNLOCK)
    finally:
        await conn.close()
