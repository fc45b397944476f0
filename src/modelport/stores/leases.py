"""Named leases in the registry database: one holder at a time, until its lease lapses."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from modelport.stores.model_rows import now
from modelport.stores.sql.schema import leases
from modelport.stores.sql.timestamps import as_utc


class LeaseStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def acquire(self, name: str, holder: str, ttl_s: float) -> bool:
        """Take or renew ``name`` for ``ttl_s``; False while another holder's lease is live."""
        started = now()
        expires = started + dt.timedelta(seconds=ttl_s)
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(leases)
                .where(
                    leases.c.name == name,
                    or_(leases.c.holder == holder, leases.c.expires_at < started),
                )
                .values(holder=holder, expires_at=expires)
            )
            if result.rowcount == 1:
                return True
            exists = (
                await conn.execute(select(leases.c.name).where(leases.c.name == name))
            ).first()
            if exists is not None:
                return False
            try:
                async with conn.begin_nested():
                    await conn.execute(
                        insert(leases).values(name=name, holder=holder, expires_at=expires)
                    )
            except IntegrityError:
                return False
        return True

    async def release(self, name: str, holder: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                delete(leases).where(leases.c.name == name, leases.c.holder == holder)
            )

    async def holder(self, name: str) -> tuple[str, dt.datetime] | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(leases).where(leases.c.name == name))).first()
        return None if row is None else (row.holder, as_utc(row.expires_at))
