"""SQL for Responses API ids: who owns each id passed through to a provider, and which
deferred responses (tickets seen as responses) their owner deleted."""

from __future__ import annotations

from proxy.store.db import Database


async def remember(
    db: Database, response_id: str, *, key_name: str, provider: str, created_ms: int
) -> None:
    async with db.transaction() as conn:
        await conn.execute(
            "INSERT INTO response_owners (id, key_name, provider, created_ms) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
            (response_id, key_name, provider, created_ms),
        )


async def provider_of(db: Database, response_id: str, *, key_name: str) -> str | None:
    """The provider holding ``response_id`` when ``key_name`` owns it; None otherwise (a
    response another key created is as absent as one never made)."""
    row = await db.fetchone(
        "SELECT provider FROM response_owners WHERE id = ? AND key_name = ?",
        (response_id, key_name),
    )
    return None if row is None else str(row[0])


async def forget(db: Database, response_id: str) -> None:
    async with db.transaction() as conn:
        await conn.execute("DELETE FROM response_owners WHERE id = ?", (response_id,))


async def mark_deleted(db: Database, response_id: str, *, key_name: str, now_ms: int) -> None:
    async with db.transaction() as conn:
        await conn.execute(
            "INSERT INTO deleted_responses (id, key_name, deleted_ms) VALUES (?, ?, ?) "
            "ON CONFLICT (id) DO NOTHING",
            (response_id, key_name, now_ms),
        )


async def is_deleted(db: Database, response_id: str) -> bool:
    row = await db.fetchone("SELECT 1 FROM deleted_responses WHERE id = ?", (response_id,))
    return row is not None
