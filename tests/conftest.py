"""Fixtures shared by every tier: the store engines.

``db`` (and ``db_target``) are parametrised over ``sqlite`` and ``postgres``: a store test
that takes them runs once per engine. PostgreSQL comes from ``COSTROUTE_TEST_DATABASE_URL``
(``.ci/run`` starts a throwaway cluster and exports it) or, when that is unset, from a
cluster this session starts itself (``tests/pgcluster.py``) if the server binaries are
installed. Each test gets its own schema, dropped afterwards. When neither is possible
the ``postgres`` cases are skipped with the reason, unless ``COSTROUTE_REQUIRE_POSTGRES=1``
(set by ``.ci/run``), which makes that an error instead.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from proxy.store.db import Database
from tests import pgcluster

ENGINES = ("sqlite", "postgres")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """The URL of a PostgreSQL database for this session."""
    given = os.environ.get("COSTROUTE_TEST_DATABASE_URL")
    if given:
        yield given
        return
    if pgcluster.bindir() is None:
        if os.environ.get("COSTROUTE_REQUIRE_POSTGRES") == "1":
            pytest.fail("PostgreSQL is required (COSTROUTE_REQUIRE_POSTGRES=1) but not installed")
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql)")
    with tempfile.TemporaryDirectory(prefix="costroute-pg-") as tmp:
        directory = Path(tmp) / "pg"
        url = pgcluster.start(directory, fast=True)
        try:
            yield url
        finally:
            pgcluster.stop(directory)


def with_schema(url: str, schema: str) -> str:
    joiner = "&" if "?" in url else "?"
    return f"{url}{joiner}search_path={schema}"


def _sql(url: str, statement: str) -> None:
    """One statement on its own connection, in a thread with its own event loop (the
    sync fixtures below run outside the test's loop and must not touch it)."""

    async def run() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


@pytest.fixture
def pg_schema_url(pg_url: str) -> Iterator[str]:
    """A fresh, empty schema in the session's database (its URL selects it)."""
    schema = "t_" + secrets.token_hex(6)
    _sql(pg_url, f"CREATE SCHEMA {schema}")
    try:
        yield with_schema(pg_url, schema)
    finally:
        _sql(pg_url, f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_target(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """Where a fresh store lives: a SQLite path or a PostgreSQL URL (own schema)."""
    if engine == "sqlite":
        return str(tmp_path / "costroute.db")
    url: str = request.getfixturevalue("pg_schema_url")
    return url


@pytest.fixture
async def db(db_target: str) -> AsyncIterator[Database]:
    """A fresh, migrated store on each engine."""
    database = await Database.open(db_target)
    try:
        yield database
    finally:
        await database.close()
