"""The one-row release clock: every release change moves it in the same transaction, so a
replica knows it is current by reading one integer. On PostgreSQL a move also sends a
``NOTIFY`` on :data:`CHANNEL`, delivered on commit."""

from __future__ import annotations

from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from modelport.stores.sql.schema import release_clock

#: PostgreSQL channel a release change is announced on.
CHANNEL = "modelport_releases"


async def read(conn: AsyncConnection) -> int:
    value = (
        await conn.execute(select(release_clock.c.generation).where(release_clock.c.id == 1))
    ).scalar()
    return int(value or 0)


async def tick(conn: AsyncConnection) -> None:
    await conn.execute(
        update(release_clock)
        .where(release_clock.c.id == 1)
        .values(generation=release_clock.c.generation + 1)
    )
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})
