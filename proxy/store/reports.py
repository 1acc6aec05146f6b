"""SQL for reports and for the gauges read at each /metrics scrape.

A request is counted once. The routing log is the record of every answered request: a
real-time call's row, or a deferred request's final row (written when its ticket ends,
carrying the ``ticket_id``, tokens and cost). The ``202`` row written when a ticket is
accepted (``ticket_id`` set, status 202) is the same request again and is not counted.
A ticket that has not ended yet has no final row: it is counted from ``tickets``, by its
``created_ms``, as *pending*.

Failed: HTTP status 400 or more, except 499 (cancelled by the caller). Unpriced: a
request that succeeded and has no cost (its model has no price, or no usage came back).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proxy.store.db import Database, Dialect

# Whitelisted: the only SQL that reaches the GROUP BY (``day`` is the UTC date).
GROUP_EXPRESSIONS = {
    "lane": "lane",
    "model": "model",
    "provider": "provider",
    "key": "key_name",
    "day": "strftime('%Y-%m-%d', ts_ms / 1000, 'unixepoch')",
}
_PG_DAY = "to_char(to_timestamp(ts_ms / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"


def group_expression(by: str, dialect: Dialect) -> str:
    if by == "day" and dialect.postgres:
        return _PG_DAY
    return GROUP_EXPRESSIONS[by]


_TICKET_FINAL = "('completed', 'failed', 'cancelled')"
_BATCH_FINAL = "('completed', 'failed', 'expired', 'cancelled')"

_REQUESTS = f"""
    SELECT ts_ms, key_name, model, provider, lane,
           CASE WHEN status >= 400 AND status != 499 THEN 1 ELSE 0 END AS failed,
           0 AS pending,
           CASE WHEN status < 400 AND cost_usd IS NULL THEN 1 ELSE 0 END AS unpriced,
           prompt_tokens, completion_tokens, cached_tokens, cost_usd, baseline_usd, saved_usd
    FROM routes
    WHERE (ticket_id IS NULL OR status != 202) AND ts_ms >= ? AND ts_ms <= ?
    UNION ALL
    SELECT created_ms, key_name, model, provider, lane, 0, 1, 0,
           NULL, NULL, NULL, NULL, NULL, NULL
    FROM tickets
    WHERE status NOT IN {_TICKET_FINAL} AND created_ms >= ? AND created_ms <= ?
"""

_AGGREGATES = """
    COUNT(*) AS requests,
    SUM(failed) AS failed,
    SUM(pending) AS pending,
    SUM(unpriced) AS unpriced,
    CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT) AS prompt_tokens,
    CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT) AS completion_tokens,
    CAST(COALESCE(SUM(cached_tokens), 0) AS BIGINT) AS cached_tokens,
    COALESCE(SUM(cost_usd), 0.0) AS cost,
    COALESCE(SUM(baseline_usd), 0.0) AS baseline,
    COALESCE(SUM(saved_usd), 0.0) AS savings
"""


async def report_groups(
    db: Database, *, since_ms: int, until_ms: int, by: str
) -> list[dict[str, Any]]:
    """One dict per group (``group`` is None for rows without a value), ordered by group."""
    expression = group_expression(by, db.dialect)
    rows = await db.fetchall(
        f"WITH requests AS ({_REQUESTS}) SELECT * FROM ("
        f"SELECT {expression} AS grp, {_AGGREGATES} FROM requests GROUP BY grp) AS g "
        # Rows without a value first on both engines (PostgreSQL puts NULLs last).
        "ORDER BY CASE WHEN grp IS NULL THEN 0 ELSE 1 END, grp",
        (since_ms, until_ms, since_ms, until_ms),
    )
    groups = [dict(row) for row in rows]
    for group in groups:
        group["group"] = group.pop("grp")
    return groups


@dataclass(frozen=True, slots=True)
class QueueGauges:
    depth: dict[str, int]  # unfinished tickets by status
    oldest_queued_ms: int | None  # created_ms of the oldest ticket still queued
    active_batches: dict[str, int]  # unfinished batches by provider


async def queue_gauges(db: Database) -> QueueGauges:
    depth = await db.fetchall(
        f"SELECT status, COUNT(*) AS n FROM tickets WHERE status NOT IN {_TICKET_FINAL} "
        "GROUP BY status"
    )
    oldest = await db.fetchone("SELECT MIN(created_ms) AS ms FROM tickets WHERE status = 'queued'")
    batches = await db.fetchall(
        f"SELECT provider, COUNT(*) AS n FROM batches WHERE status NOT IN {_BATCH_FINAL} "
        "GROUP BY provider"
    )
    return QueueGauges(
        depth={row["status"]: row["n"] for row in depth},
        oldest_queued_ms=None if oldest is None else oldest["ms"],
        active_batches={row["provider"]: row["n"] for row in batches},
    )
