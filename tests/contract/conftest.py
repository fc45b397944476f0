"""Fresh, migrated registry databases for the contract suites: SQLite in a temp folder, or a
database of its own on the real PostgreSQL (dropped afterwards)."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy.engine import make_url

from modelport.stores.sql import migrate
from required_services import service_missing

POSTGRES_URL = os.environ.get(
    "MODELPORT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)

BACKENDS = [
    "sqlite",
    pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.integration]),
]


async def _postgres_execute(url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def sqlite_database(tmp_path_factory: pytest.TempPathFactory, label: str) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp(label) / 'registry.db'}"
    asyncio.run(migrate(url))
    return url


@contextmanager
def postgres_database(label: str) -> Iterator[str]:
    """A migrated database of its own on PostgreSQL (when it is unreachable: a skip, or a
    failure in CI)."""
    try:
        asyncio.run(_postgres_execute(POSTGRES_URL, "SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - whatever the failure, the service is missing
        service_missing("PostgreSQL", POSTGRES_URL, f"{type(exc).__name__}: {exc}")
    name = f"modelport_{label}_{secrets.token_hex(6)}"
    asyncio.run(_postgres_execute(POSTGRES_URL, f'CREATE DATABASE "{name}"'))
    try:
        url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
        asyncio.run(migrate(url))
        yield url
    finally:
        asyncio.run(
            _postgres_execute(POSTGRES_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        )


@pytest.fixture(scope="module", params=BACKENDS)
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A fresh, migrated database for the module on each backend."""
    label = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    if request.param == "sqlite":
        yield sqlite_database(tmp_path_factory, label)
        return
    with postgres_database(label) as url:
        yield url
