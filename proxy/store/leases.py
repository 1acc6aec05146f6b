"""SQL for named leases, ticket send leases, the replicas table and ops sessions: the
pieces that let several processes share one database (``proxy/store/README.md`` says
which background loop uses which).

A named lease (``leases`` table) is a job that one process at a time may run. It is
held until ``expires_ms`` on the database's clock (``Dialect.clock_ms``) and carries an
``epoch`` that grows whenever the holder changes, or the same holder comes back after
letting it lapse: a holder's writes are checked against (owner, epoch), so a process
that stalled past its expiry and was replaced changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from proxy.store.db import Conn, Database
from proxy.store.jobs import Ticket
from proxy.store.tickets import COLUMNS, chunks, marks, ticket_from_row


@dataclass(frozen=True, slots=True)
class Held:
    """A named lease as its holder sees it."""

    name: str
    owner: str
    epoch: int


async def acquire(db: Database, name: str, owner: str, *, now_ms: int, ttl_ms: int) -> Held | None:
    """Take the lease ``name`` if it is free or expired, or extend it if ``owner`` holds
    it; None if another process holds it. One statement (an upsert guarded by its own
    ``WHERE``), so two processes racing for a free lease cannot both win."""
    async with db.transaction() as conn:
        clock, params = conn.dialect.clock_ms(now_ms)
        row = await conn.fetchone(
            "INSERT INTO leases (name, owner, epoch, expires_ms) "
            f"VALUES (?, ?, 1, {clock} + ?) "
            "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, "
            "epoch = CASE WHEN leases.owner = excluded.owner "
            f"AND leases.expires_ms > {clock} THEN leases.epoch ELSE leases.epoch + 1 END, "
            "expires_ms = excluded.expires_ms "
            f"WHERE leases.owner = excluded.owner OR leases.expires_ms <= {clock} "
            "RETURNING epoch",
            (name, owner, *params, ttl_ms, *params, *params),
        )
    return None if row is None else Held(name, owner, int(row[0]))


async def renew(db: Database, held: Held, *, now_ms: int, ttl_ms: int) -> bool:
    """Extend a lease still held under the same epoch; False if it was lost."""
    async with db.transaction() as conn:
        clock, params = conn.dialect.clock_ms(now_ms)
        changed = await conn.execute(
            f"UPDATE leases SET expires_ms = {clock} + ? WHERE name = ? AND owner = ? "
            f"AND epoch = ? AND expires_ms > {clock}",
            (*params, ttl_ms, held.name, held.owner, held.epoch, *params),
        )
    return changed == 1


async def give_up(db: Database, held: Held) -> None:
    """Let another process take the lease at once. The row stays (expired), so the
    epoch keeps growing across holders."""
    async with db.transaction() as conn:
        await conn.execute(
            "UPDATE leases SET expires_ms = 0 WHERE name = ? AND owner = ? AND epoch = ?",
            (held.name, held.owner, held.epoch),
        )


async def still_held(conn: Conn, held: Held, *, now_ms: int) -> bool:
    """Inside a write transaction: whether ``held`` is still current. On PostgreSQL the
    row is share-locked until the commit, so no take-over can commit in between: the
    transaction's writes happen under the lease or not at all."""
    clock, params = conn.dialect.clock_ms(now_ms)
    share = " FOR SHARE" if conn.dialect.postgres else ""
    row = await conn.fetchone(
        "SELECT 1 FROM leases WHERE name = ? AND owner = ? AND epoch = ? "
        f"AND expires_ms > {clock}{share}",
        (held.name, held.owner, held.epoch, *params),
    )
    return row is not None


async def lease_holders(db: Database) -> list[tuple[str, str, int, int]]:
    """(name, owner, epoch, expires_ms) of every named lease (ops, tests)."""
    rows = await db.fetchall("SELECT name, owner, epoch, expires_ms FROM leases ORDER BY name")
    return [(row[0], row[1], int(row[2]), int(row[3])) for row in rows]


# --- tickets sent directly -----------------------------------------------------------


async def claim_realtime(
    db: Database, owner: str, *, now_ms: int, ttl_ms: int, limit: int
) -> list[tuple[Ticket, bytes]]:
    """Lease ``realtime`` tickets nobody is sending (or whose sender's lease ran out)
    to ``owner``, most urgent first, with their bodies. On PostgreSQL replicas claiming
    together skip each other's rows, so each ticket is sent by one process at a time."""
    clock, params = db.dialect.clock_ms(now_ms)
    # One read first: most guard ticks find nothing to send, and then take no write lock.
    waiting = await db.fetchone(
        f"SELECT 1 FROM tickets WHERE status = 'realtime' AND lease_ms <= {clock} LIMIT 1",
        params,
    )
    if waiting is None:
        return []
    async with db.transaction() as conn:
        rows = await conn.fetchall(
            f"UPDATE tickets SET lease_owner = ?, lease_ms = {clock} + ? "
            "WHERE id IN (SELECT id FROM tickets WHERE status = 'realtime' "
            f"AND lease_ms <= {clock} ORDER BY deadline_ms LIMIT ?{conn.dialect.skip_locked}) "
            "RETURNING id",
            (owner, *params, ttl_ms, *params, limit),
        )
        ids = [row[0] for row in rows]
        found: list[tuple[Ticket, bytes]] = []
        for part in chunks(ids):
            got = await conn.fetchall(
                f"SELECT {COLUMNS}, (SELECT body FROM ticket_bodies WHERE ticket_id = tickets.id) "
                f"FROM tickets WHERE id IN ({marks(len(part))})",
                list(part),
            )
            found.extend((ticket_from_row(row), bytes(row[25])) for row in got)
    found.sort(key=lambda pair: pair[0].deadline_ms)
    return found


async def renew_realtime(
    db: Database, owner: str, ids: Sequence[str], *, now_ms: int, ttl_ms: int
) -> None:
    """Keep the leases of the tickets ``owner`` is still sending."""
    if not ids:
        return
    async with db.transaction() as conn:
        clock, params = conn.dialect.clock_ms(now_ms)
        for part in chunks(ids):
            await conn.execute(
                f"UPDATE tickets SET lease_ms = {clock} + ? WHERE lease_owner = ? "
                f"AND status = 'realtime' AND id IN ({marks(len(part))})",
                (*params, ttl_ms, owner, *part),
            )


async def unclaim_realtime(db: Database, owner: str, ids: Sequence[str]) -> None:
    """Give up sending these tickets (a send that crashed): the next claim retries them."""
    async with db.transaction() as conn:
        for part in chunks(ids):
            await conn.execute(
                "UPDATE tickets SET lease_ms = 0 WHERE lease_owner = ? "
                f"AND id IN ({marks(len(part))})",
                (owner, *part),
            )


async def forget_leases(db: Database) -> None:
    """At start-up of the only process on a database (SQLite): nobody else can be
    sending, so tickets a killed predecessor held go out again at once."""
    async with db.transaction() as conn:
        await conn.execute("UPDATE tickets SET lease_ms = 0 WHERE status = 'realtime'")
        await conn.execute(
            "UPDATE batches SET lease_ms = 0 WHERE status IN ('created', 'submitted')"
        )


# --- replicas ------------------------------------------------------------------------


async def heartbeat(db: Database, replica: str, *, now_ms: int, started_ms: int) -> None:
    async with db.transaction() as conn:
        clock, params = conn.dialect.clock_ms(now_ms)
        await conn.execute(
            f"INSERT INTO replicas (id, started_ms, seen_ms) VALUES (?, ?, {clock}) "
            "ON CONFLICT (id) DO UPDATE SET seen_ms = excluded.seen_ms",
            (replica, started_ms, *params),
        )


async def live_replicas(db: Database, *, now_ms: int, within_ms: int) -> list[str]:
    """Replicas that reported within ``within_ms`` (database clock)."""
    clock, params = db.dialect.clock_ms(now_ms)
    rows = await db.fetchall(
        f"SELECT id FROM replicas WHERE seen_ms + ? >= {clock} ORDER BY id",
        (within_ms, *params),
    )
    return [row[0] for row in rows]


async def leave(db: Database, replica: str) -> None:
    async with db.transaction() as conn:
        await conn.execute("DELETE FROM replicas WHERE id = ?", (replica,))


async def prune_replicas(db: Database, *, now_ms: int, older_than_ms: int) -> None:
    async with db.transaction() as conn:
        clock, params = conn.dialect.clock_ms(now_ms)
        await conn.execute(
            f"DELETE FROM replicas WHERE seen_ms + ? < {clock}", (older_than_ms, *params)
        )


# --- ops-page sessions ---------------------------------------------------------------


async def add_session(
    db: Database, digest: str, *, key_name: str, csrf: str, expires_ms: int, limit: int
) -> None:
    """A session by the sha256 of its token (never the token); the oldest sessions
    beyond ``limit`` go, as do expired ones."""
    async with db.transaction() as conn:
        await conn.execute(
            "INSERT INTO ops_sessions (digest, key_name, csrf, expires_ms) VALUES (?, ?, ?, ?)",
            (digest, key_name, csrf, expires_ms),
        )
        await conn.execute(
            "DELETE FROM ops_sessions WHERE digest IN (SELECT digest FROM ops_sessions "
            "ORDER BY expires_ms DESC LIMIT -1 OFFSET ?)"
            if not conn.dialect.postgres
            else "DELETE FROM ops_sessions WHERE digest IN (SELECT digest FROM ops_sessions "
            "ORDER BY expires_ms DESC OFFSET ?)",
            (limit,),
        )


async def get_session(db: Database, digest: str, *, now_ms: int) -> tuple[str, str, int] | None:
    """(key name, csrf token, expires_ms) of a live session."""
    row = await db.fetchone(
        "SELECT key_name, csrf, expires_ms FROM ops_sessions WHERE digest = ? AND expires_ms > ?",
        (digest, now_ms),
    )
    return None if row is None else (str(row[0]), str(row[1]), int(row[2]))


async def end_session(db: Database, digest: str) -> None:
    async with db.transaction() as conn:
        await conn.execute("DELETE FROM ops_sessions WHERE digest = ?", (digest,))


async def prune_sessions(db: Database, *, now_ms: int) -> None:
    async with db.transaction() as conn:
        await conn.execute("DELETE FROM ops_sessions WHERE expires_ms <= ?", (now_ms,))
