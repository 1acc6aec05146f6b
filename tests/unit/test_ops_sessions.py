"""Ops-page sessions in the store (proxy.ops.signin.Sessions), on each engine: any replica
serves any signed-in browser, sessions are bounded, and no token is ever stored."""

from __future__ import annotations

from proxy.auth import Authenticator
from proxy.ops.signin import Sessions
from proxy.settings import AuthKey
from proxy.store.db import Database


def auth(admin: bool = True) -> Authenticator:
    return Authenticator({"digest-ops": AuthKey(name="ops", key_env="OPS_KEY", admin=admin)})


async def test_sessions_are_bounded_and_keep_no_token(db: Database) -> None:
    sessions = Sessions(db, ttl_s=60, limit=3)
    caller = auth().by_name("ops")
    assert caller is not None
    tokens = [(await sessions.create(caller, now_ms=i))[0] for i in range(4)]
    rows = await db.fetchall("SELECT * FROM ops_sessions")
    assert len(rows) == 3
    assert await sessions.get(tokens[0], 10, auth()) is None  # the oldest went first
    for token in tokens[1:]:
        found = await sessions.get(token, 10, auth())
        assert found is not None
        assert found.caller == caller
    stored = repr([dict(row) for row in rows])
    assert not any(token in stored for token in tokens)
    assert await sessions.get(tokens[1], 60_001, auth()) is None  # expired
    await sessions.end(tokens[2])
    assert await sessions.get(tokens[2], 10, auth()) is None


async def test_a_session_started_on_one_replica_works_on_another(db_target: str) -> None:
    first, second = await Database.open(db_target), await Database.open(db_target)
    try:
        token, started = await Sessions(first).create(auth().by_name("ops"), 0)  # type: ignore[arg-type]
        found = await Sessions(second).get(token, 1_000, auth())
        assert found is not None
        assert found.csrf == started.csrf
        # The key lost its admin flag (or was removed): its sessions sign nobody in.
        demoted = await Sessions(second).get(token, 1_000, auth(admin=False))
        assert demoted is not None
        assert not demoted.caller.admin
        assert await Sessions(second).get(token, 1_000, Authenticator({})) is None
        await Sessions(second).end(token)
        assert await Sessions(first).get(token, 1_000, auth()) is None
    finally:
        await first.close()
        await second.close()
