"""SQL for costroute's own Files and Batch API: file records (their bytes live on disk
under ``[files] dir``), user batches, and which ticket runs each line of a batch.

Every read takes the caller's key: a file or batch of another key is as absent as one
never made.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from proxy.store.db import Conn, Database, insert_values
from proxy.store.jobs import NewTicket, TicketStatus
from proxy.store.route_rows import accepted
from proxy.store.tickets import insert_tickets


@dataclass(frozen=True, slots=True)
class FileRecord:
    id: str
    key_name: str
    purpose: str
    filename: str
    bytes: int
    created_ms: int
    expires_ms: int | None


@dataclass(frozen=True, slots=True)
class UserBatch:
    id: str
    key_name: str
    endpoint: str
    model: str | None
    input_file_id: str
    completion_window: str
    status: str
    created_ms: int
    expires_ms: int
    times: dict[str, int]  # status -> when it was entered (ms)
    output_file_id: str | None
    error_file_id: str | None
    errors: list[dict[str, Any]] | None
    metadata: dict[str, str] | None
    output_expires_s: int | None
    total: int
    usage: dict[str, Any] | None


_FILE_COLUMNS = "id, key_name, purpose, filename, bytes, created_ms, expires_ms"
_BATCH_COLUMNS = (
    "id, key_name, endpoint, model, input_file_id, completion_window, status, created_ms, "
    "expires_ms, times, output_file_id, error_file_id, errors, metadata, output_expires_s, "
    "total, usage"
)


def _file(row: Sequence[Any]) -> FileRecord:
    return FileRecord(*row)


def _batch(row: Sequence[Any]) -> UserBatch:
    values = list(row)
    for index in (9, 12, 13, 16):  # JSON columns
        values[index] = orjson.loads(values[index]) if values[index] is not None else None
    values[9] = values[9] or {}
    return UserBatch(*values)


# --- files -------------------------------------------------------------------------------


async def add_file(db: Database, record: FileRecord) -> None:
    async with db.transaction() as conn:
        await conn.execute(
            f"INSERT INTO files ({_FILE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (record.id, record.key_name, record.purpose, record.filename, record.bytes,
             record.created_ms, record.expires_ms),
        )  # fmt: skip


async def get_file(db: Database, file_id: str, key_name: str, now_ms: int) -> FileRecord | None:
    row = await db.fetchone(
        f"SELECT {_FILE_COLUMNS} FROM files WHERE id = ? AND key_name = ? AND deleted = 0 "
        "AND (expires_ms IS NULL OR expires_ms > ?)",
        (file_id, key_name, now_ms),
    )
    return None if row is None else _file(row)


async def list_files(
    db: Database,
    key_name: str,
    now_ms: int,
    *,
    purpose: str | None,
    limit: int,
    ascending: bool,
    after: str | None,
) -> list[FileRecord]:
    order = "ASC" if ascending else "DESC"
    compare = ">" if ascending else "<"
    sql = (
        f"SELECT {_FILE_COLUMNS} FROM files WHERE key_name = ? AND deleted = 0 "
        "AND (expires_ms IS NULL OR expires_ms > ?)"
    )
    params: list[Any] = [key_name, now_ms]
    if purpose is not None:
        sql += " AND purpose = ?"
        params.append(purpose)
    if after is not None:
        sql += (
            f" AND (created_ms, id) {compare} (SELECT created_ms, id FROM files WHERE id = ? "
            "AND key_name = ?)"
        )
        params += [after, key_name]
    sql += f" ORDER BY created_ms {order}, id {order} LIMIT ?"
    params.append(limit)
    return [_file(row) for row in await db.fetchall(sql, params)]


async def delete_file(db: Database, file_id: str, key_name: str) -> bool:
    async with db.transaction() as conn:
        changed = await conn.execute(
            "UPDATE files SET deleted = 1 WHERE id = ? AND key_name = ? AND deleted = 0",
            (file_id, key_name),
        )
        return changed == 1


# --- batches -----------------------------------------------------------------------------


async def create_batch(db: Database, batch: UserBatch) -> None:
    async with db.transaction() as conn:
        await _insert_batch(conn, batch)


async def _insert_batch(conn: Conn, batch: UserBatch) -> None:
    await conn.execute(
        f"INSERT INTO user_batches ({_BATCH_COLUMNS}) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            batch.id, batch.key_name, batch.endpoint, batch.model, batch.input_file_id,
            batch.completion_window, batch.status, batch.created_ms, batch.expires_ms,
            orjson.dumps(batch.times).decode(), batch.output_file_id, batch.error_file_id,
            _json(batch.errors), _json(batch.metadata), batch.output_expires_s, batch.total,
            _json(batch.usage),
        ),
    )  # fmt: skip


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


async def queue_lines(
    db: Database, batch: UserBatch, chunks: Iterable[Sequence[tuple[int, str, NewTicket]]]
) -> None:
    """The batch, its tickets (with their accepted routing-log rows) and its line map, in
    one transaction: a crash leaves either the whole batch queued or none of it. ``chunks``
    is consumed as it goes, so a large file is never held whole."""
    async with db.bulk(), db.transaction() as conn:
        await _insert_batch(conn, batch)
        for lines in chunks:
            await insert_tickets(conn, [ticket for _, _, ticket in lines], route=accepted)
            await insert_values(
                conn,
                "INSERT INTO user_batch_lines (batch_id, line, custom_id, ticket_id)",
                [(batch.id, line, custom_id, ticket.id) for line, custom_id, ticket in lines],
            )


async def get_batch(db: Database, batch_id: str, key_name: str) -> UserBatch | None:
    row = await db.fetchone(
        f"SELECT {_BATCH_COLUMNS} FROM user_batches WHERE id = ? AND key_name = ?",
        (batch_id, key_name),
    )
    return None if row is None else _batch(row)


async def list_batches(
    db: Database, key_name: str | None, *, limit: int, after: str | None
) -> list[UserBatch]:
    """Newest first; ``key_name`` None lists every key's (admin)."""
    sql = f"SELECT {_BATCH_COLUMNS} FROM user_batches WHERE 1 = 1"
    params: list[Any] = []
    if key_name is not None:
        sql += " AND key_name = ?"
        params.append(key_name)
    if after is not None:
        sql += " AND (created_ms, id) < (SELECT created_ms, id FROM user_batches WHERE id = ?)"
        params.append(after)
    sql += " ORDER BY created_ms DESC, id DESC LIMIT ?"
    params.append(limit)
    return [_batch(row) for row in await db.fetchall(sql, params)]


async def move_batch(
    db: Database, batch_id: str, old: Sequence[str], new: str, now_ms: int, **fields: Any
) -> bool:
    """``old`` -> ``new`` (recording when), with ``fields`` set; False if the batch was no
    longer in ``old`` (another request or replica moved it first)."""
    if db.dialect.postgres:
        times = (
            "CAST(CAST(times AS jsonb) || "
            "jsonb_build_object(CAST(? AS text), CAST(? AS BIGINT)) AS text)"
        )
        params: list[Any] = [new, new, now_ms]
    else:
        times = "json_set(times, ?, ?)"
        params = [new, f"$.{new}", now_ms]
    sets = ["status = ?", f"times = {times}"]
    for name, value in fields.items():
        sets.append(f"{name} = ?")
        params.append(_json(value) if name in ("errors", "usage") else value)
    marks = ", ".join("?" for _ in old)
    params += [batch_id, *old]
    async with db.transaction() as conn:
        changed = await conn.execute(
            f"UPDATE user_batches SET {', '.join(sets)} WHERE id = ? AND status IN ({marks})",
            params,
        )
        return changed == 1


async def line_counts(db: Database, batch_id: str) -> dict[str, int]:
    """Tickets of the batch by status."""
    rows = await db.fetchall(
        "SELECT t.status, count(*) FROM user_batch_lines l JOIN tickets t ON t.id = l.ticket_id "
        "WHERE l.batch_id = ? GROUP BY t.status",
        (batch_id,),
    )
    return {str(row[0]): int(row[1]) for row in rows}


async def unfinished_tickets(db: Database, batch_id: str) -> list[str]:
    rows = await db.fetchall(
        "SELECT t.id FROM user_batch_lines l JOIN tickets t ON t.id = l.ticket_id "
        "WHERE l.batch_id = ? AND t.status IN (?, ?, ?)",
        (batch_id, TicketStatus.QUEUED.value, TicketStatus.SUBMITTED.value,
         TicketStatus.REALTIME.value),
    )  # fmt: skip
    return [str(row[0]) for row in rows]


async def line_outcomes(
    db: Database, batch_id: str, *, after_line: int, limit: int
) -> list[tuple[int, str, str, str, str, bytes | None, str | None, int | None, int | None]]:
    """(line, custom_id, ticket id, request id, status, result, error, prompt, completion)
    for the lines after ``after_line``, in line order: output files are written in pages."""
    rows = await db.fetchall(
        "SELECT l.line, l.custom_id, t.id, t.request_id, t.status, r.result, t.error, "
        "t.prompt_tokens, t.completion_tokens FROM user_batch_lines l "
        "JOIN tickets t ON t.id = l.ticket_id LEFT JOIN ticket_results r ON r.ticket_id = t.id "
        "WHERE l.batch_id = ? AND l.line > ? ORDER BY l.line LIMIT ?",
        (batch_id, after_line, limit),
    )
    return [
        (int(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]),
         None if r[5] is None else bytes(r[5]), r[6], r[7], r[8])
        for r in rows
    ]  # fmt: skip
