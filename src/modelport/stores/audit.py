"""The audit log: who did what to which model, from what to what, and why."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from modelport.stores import release_clock
from modelport.stores.model_rows import now
from modelport.stores.sql.schema import audit_log
from modelport.stores.sql.timestamps import as_utc


@dataclass(frozen=True, slots=True)
class Change:
    """One audit entry: who did what to which model, from what to what, and why."""

    action: str
    actor: str
    reason: str
    from_ref: str | None = None
    to_ref: str | None = None
    details: dict[str, Any] | None = None

    def with_refs(self, from_ref: str | None, to_ref: str | None, **details: Any) -> Change:
        merged = {**(self.details or {}), **details} or None
        return Change(self.action, self.actor, self.reason, from_ref, to_ref, merged)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int
    tenant: str
    model: str
    action: str
    actor: str
    from_ref: str | None
    to_ref: str | None
    reason: str
    details: dict[str, Any] | None
    at: dt.datetime


async def write(
    conn: AsyncConnection, tenant: str, model: str, change: Change, *, bump: bool
) -> None:
    """Append ``change`` inside the caller's transaction; ``bump`` moves the release clock."""
    await conn.execute(
        insert(audit_log).values(
            tenant=tenant,
            model=model,
            action=change.action,
            actor=change.actor,
            from_ref=change.from_ref,
            to_ref=change.to_ref,
            reason=change.reason,
            details=change.details,
            at=now(),
        )
    )
    if bump:
        await release_clock.tick(conn)


class AuditLog:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def history(
        self, tenant: str, model: str, limit: int = 100, before: int | None = None
    ) -> list[AuditRecord]:
        query = (
            select(audit_log)
            .where(audit_log.c.tenant == tenant, audit_log.c.model == model)
            .order_by(audit_log.c.id.desc())
            .limit(limit)
        )
        if before is not None:
            query = query.where(audit_log.c.id < before)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_record(r) for r in rows]

    async def record(self, tenant: str, model: str, change: Change, *, bump: bool = False) -> None:
        """An audit entry on its own (a refused alias move, a push, an interface change)."""
        async with self._engine.begin() as conn:
            await write(conn, tenant, model, change, bump=bump)


def _record(row: Any) -> AuditRecord:
    return AuditRecord(
        id=row.id,
        tenant=row.tenant,
        model=row.model,
        action=row.action,
        actor=row.actor,
        from_ref=row.from_ref,
        to_ref=row.to_ref,
        reason=row.reason,
        details=row.details,
        at=as_utc(row.at),
    )
