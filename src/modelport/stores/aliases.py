"""A model's aliases: names that point at one of its versions."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from modelport.stores.model_rows import now
from modelport.stores.sql.schema import aliases, models


async def read(conn: AsyncConnection, model_id: int) -> dict[str, str]:
    rows = (await conn.execute(select(aliases).where(aliases.c.model_id == model_id))).all()
    return {r.name: str(r.version) for r in rows}


async def read_all(conn: AsyncConnection, tenant: str | None = None) -> list[Any]:
    """Every alias of every model (of ``tenant`` when given): rows of (tenant, model, name,
    version)."""
    query = select(models.c.tenant, models.c.name.label("model"), aliases).join(
        models, models.c.id == aliases.c.model_id
    )
    if tenant is not None:
        query = query.where(models.c.tenant == tenant)
    return list((await conn.execute(query)).all())


async def version_of(conn: AsyncConnection, model_id: int, alias: str) -> str | None:
    value = (
        await conn.execute(
            select(aliases.c.version).where(aliases.c.model_id == model_id, aliases.c.name == alias)
        )
    ).scalar()
    return None if value is None else str(value)


async def write(conn: AsyncConnection, model_id: int, alias: str, version: int, actor: str) -> None:
    await remove(conn, model_id, alias)
    await conn.execute(
        insert(aliases).values(
            model_id=model_id, name=alias, version=version, updated_at=now(), updated_by=actor
        )
    )


async def remove(conn: AsyncConnection, model_id: int, alias: str) -> None:
    await conn.execute(
        delete(aliases).where(aliases.c.model_id == model_id, aliases.c.name == alias)
    )
