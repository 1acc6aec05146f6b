"""The routing log writer: one row per request, written off the request path.

``record`` only appends to a buffer; a background group commit writes buffered rows in
one transaction every ``linger`` seconds, so a request never waits for SQLite.
``record_later`` defers even building the row (usage, pricing, metrics) to that batch:
a request then costs one closure and one append, and the work runs while the event
loop would otherwise wait on upstreams.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias

from proxy.store.db import Conn, Database, GroupCommit
from proxy.store.route_rows import route_row
from proxy.store.routes import COLUMNS, insert_routes

log = logging.getLogger(__name__)

Row: TypeAlias = tuple[Any, ...]
# A row, or what builds its fields when the batch is written (``None``: no row).
Item: TypeAlias = Row | Callable[[], Mapping[str, Any] | None] | None


async def _apply(conn: Conn, items: list[Item]) -> list[None]:
    # ``_built`` has already turned every builder into its row.
    await insert_routes(conn, [item for item in items if isinstance(item, tuple)])
    return [None] * len(items)


def _built(items: list[Item]) -> list[Item]:
    """Every builder replaced by its row, or by ``None`` (one item per item, as
    ``GroupCommit`` pairs results with submissions)."""
    return [item if isinstance(item, tuple) or item is None else _build(item) for item in items]


def _build(build: Callable[[], Mapping[str, Any] | None]) -> Row | None:
    try:
        fields = build()
        return None if fields is None else _row(fields)
    except Exception:
        # One bad row must not cost the batch its other rows.
        log.exception("routing-log row could not be built; it is skipped")
        return None


def _row(fields: Mapping[str, Any]) -> Row:
    """``route_row``, with an unknown column reported as the caller's mistake."""
    try:
        return route_row(**fields)
    except KeyError as exc:
        raise TypeError(f"unknown routing-log column: {exc}") from None


class RouteLog:
    def __init__(self, db: Database, *, linger: float = 0.05) -> None:
        self._writer: GroupCommit[Item, None] = GroupCommit(
            db, _apply, max_items=5000, linger=linger, name="routelog", prepare=_built
        )

    def start(self) -> None:
        self._writer.start()

    async def stop(self) -> None:
        await self._writer.stop()

    async def flush(self) -> None:
        await self._writer.drain()

    def record(self, **fields: Any) -> None:
        """Queue one row; unknown column names are a programming error."""
        self._writer.submit_nowait(_row(fields))

    def record_later(self, build: Callable[[], Mapping[str, Any] | None]) -> None:
        """Queue a row whose fields ``build()`` gives when the batch is written."""
        self._writer.submit_nowait(build)

    @staticmethod
    def columns() -> Sequence[str]:
        return COLUMNS
