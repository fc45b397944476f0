"""Lookups of a model's row and its versions inside a release transaction."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from modelport.errors import ModelNotFound, VersionNotFound
from modelport.stores.sql.schema import model_versions, models


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def model_id(conn: AsyncConnection, tenant: str, model: str) -> int:
    found = (
        await conn.execute(
            select(models.c.id).where(models.c.tenant == tenant, models.c.name == model)
        )
    ).scalar()
    if found is None:
        raise ModelNotFound(model)
    return int(found)


async def require_version(conn: AsyncConnection, model_id: int, model: str, version: str) -> None:
    if not version.isdigit():
        raise VersionNotFound(model, version)
    found = (
        await conn.execute(
            select(model_versions.c.id).where(
                model_versions.c.model_id == model_id, model_versions.c.version == int(version)
            )
        )
    ).first()
    if found is None:
        raise VersionNotFound(model, version)


async def newest_version(conn: AsyncConnection, model_id: int) -> str | None:
    value = (
        await conn.execute(
            select(model_versions.c.version)
            .where(model_versions.c.model_id == model_id)
            .order_by(model_versions.c.version.desc())
            .limit(1)
        )
    ).scalar()
    return None if value is None else str(value)
