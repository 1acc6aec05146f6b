"""The routing log writer: one row per request, written off the request path.

``record`` only appends to a buffer; a background group commit writes buffered rows in
one transaction every ``linger`` seconds, so a request never waits for SQLite.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiosqlite

from proxy.store.db import Database, GroupCommit
from proxy.store.routes import COLUMNS, insert_routes


async def _apply(conn: aiosqlite.Connection, rows: list[tuple[Any, ...]]) -> list[None]:
    await insert_routes(conn, rows)
    return [None] * len(rows)


class RouteLog:
    def __init__(self, db: Database, *, linger: float = 0.05) -> None:
        self._writer: GroupCommit[tuple[Any, ...], None] = GroupCommit(
            db, _apply, max_items=5000, linger=linger, name="routelog"
        )

    def start(self) -> None:
        self._writer.start()

    async def stop(self) -> None:
        await self._writer.stop()

    async def flush(self) -> None:
        await self._writer.drain()

    def record(self, **fields: Any) -> None:
        """Queue one row; unknown column names are a programming error."""
        unknown = fields.keys() - _COLUMN_SET
        if unknown:
            raise TypeError(f"unknown routing-log columns: {sorted(unknown)}")
        row = _DEFAULTS | fields
        self._writer.submit_nowait(tuple(row.get(column) for column in COLUMNS))

    @staticmethod
    def columns() -> Sequence[str]:
        return COLUMNS


_COLUMN_SET = frozenset(COLUMNS)
_DEFAULTS: dict[str, Any] = {"stream": 0, "attempts": 1}
