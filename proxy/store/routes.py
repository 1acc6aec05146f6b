"""SQL for the routing log: one row per request (see migrations ``0001_routes``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from proxy.store.db import Conn, Database, insert_values

COLUMNS: tuple[str, ...] = (
    "ts_ms",
    "request_id",
    "key_name",
    "endpoint",
    "model",
    "provider",
    "lane",
    "reason",
    "status",
    "error_code",
    "stream",
    "latency_ms",
    "upstream_ms",
    "attempts",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost_usd",
    "baseline_usd",
    "saved_usd",
    "ticket_id",
    "cache_name",
    # The caller's latency tolerance in seconds (None: none given), so the theoretical
    # best can be worked out from the log alone (``proxy.costs.best``).
    "tolerance_s",
)
_INSERT = f"INSERT INTO routes ({', '.join(COLUMNS)})"


async def insert_routes(conn: Conn, rows: Sequence[Sequence[Any]]) -> None:
    await insert_values(conn, _INSERT, rows)


async def recent_routes(
    db: Database,
    *,
    since_ms: int = 0,
    limit: int = 100,
    before_id: int | None = None,
    key_name: str | None = None,
    lane: str | None = None,
    model: str | None = None,
    status: int | None = None,
) -> list[dict[str, Any]]:
    """Newest first; ``before_id`` is the cursor for the next page."""
    where = ["ts_ms >= ?"]
    params: list[Any] = [since_ms]
    for column, value in (
        ("key_name", key_name),
        ("lane", lane),
        ("model", model),
        ("status", status),
    ):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if before_id is not None:
        where.append("id < ?")
        params.append(before_id)
    params.append(limit)
    rows = await db.fetchall(
        f"SELECT id, {', '.join(COLUMNS)} FROM routes WHERE {' AND '.join(where)} "
        "ORDER BY id DESC LIMIT ?",
        params,
    )
    return [dict(row) for row in rows]
