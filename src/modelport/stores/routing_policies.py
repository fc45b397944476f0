"""Each model's stored routing policy, kept as the JSON document the service gave; what it
means is decided above the store."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from modelport.stores.model_rows import now
from modelport.stores.sql.schema import models, routing


async def read(conn: AsyncConnection, model_id: int) -> dict[str, Any] | None:
    value = (
        await conn.execute(select(routing.c.policy).where(routing.c.model_id == model_id))
    ).scalar()
    return None if value is None else dict(value)


async def read_all(conn: AsyncConnection, tenant: str | None = None) -> list[Any]:
    """Every stored policy (of ``tenant``'s models when given): rows of (tenant, model,
    policy)."""
    query = select(models.c.tenant, models.c.name.label("model"), routing.c.policy).join(
        models, models.c.id == routing.c.model_id
    )
    if tenant is not None:
        query = query.where(models.c.tenant == tenant)
    return list((await conn.execute(query)).all())


async def write(
    conn: AsyncConnection, model_id: int, policy: dict[str, Any] | None, actor: str
) -> None:
    await conn.execute(delete(routing).where(routing.c.model_id == model_id))
    if policy is not None:
        await conn.execute(
            insert(routing).values(
                model_id=model_id, policy=policy, updated_at=now(), updated_by=actor
            )
        )
