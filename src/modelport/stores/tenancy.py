"""Tenants and their API keys, in SQL. Keys are stored as a SHA-256 hash and a public prefix."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from modelport.errors import Conflict
from modelport.stores.sql.schema import api_keys, tenants
from modelport.stores.sql.timestamps import as_utc

QUOTA_FIELDS = (
    "rate_limit_rps",
    "rate_limit_burst",
    "max_concurrency",
    "max_rows",
    "max_body_bytes",
)


@dataclass(frozen=True, slots=True)
class TenantRecord:
    name: str
    status: str
    created_at: dt.datetime
    overrides: dict[str, float | int | None] = field(default_factory=dict)
    """Per-tenant quotas; a missing or None entry means the server default."""

    @property
    def active(self) -> bool:
        return self.status == "active"


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: int
    tenant: str
    prefix: str
    key_hash: str
    name: str
    scopes: tuple[str, ...]
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None

    def valid_at(self, now: dt.datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


class TenancyStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create_tenant(self, name: str) -> TenantRecord:
        now = dt.datetime.now(dt.UTC)
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    insert(tenants).values(name=name, status="active", created_at=now)
                )
        except IntegrityError:
            raise Conflict(f"tenant '{name}' already exists") from None
        return TenantRecord(name, "active", now)

    async def get_tenant(self, name: str) -> TenantRecord | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(tenants).where(tenants.c.name == name))).first()
        return None if row is None else _tenant(row)

    async def list_tenants(self) -> list[TenantRecord]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(tenants).order_by(tenants.c.name))).all()
        return [_tenant(r) for r in rows]

    async def set_status(self, name: str, status: str) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(tenants).where(tenants.c.name == name).values(status=status)
            )
        return bool(result.rowcount)

    async def set_quotas(self, name: str, overrides: dict[str, float | int | None]) -> bool:
        values = {k: v for k, v in overrides.items() if k in QUOTA_FIELDS}
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(tenants).where(tenants.c.name == name).values(**values)
            )
        return bool(result.rowcount)

    async def add_key(
        self,
        tenant: str,
        *,
        prefix: str,
        key_hash: str,
        name: str,
        scopes: tuple[str, ...],
        expires_at: dt.datetime | None,
    ) -> KeyRecord:
        now = dt.datetime.now(dt.UTC)
        async with self._engine.begin() as conn:
            result = await conn.execute(
                insert(api_keys).values(
                    tenant=tenant,
                    prefix=prefix,
                    key_hash=key_hash,
                    name=name,
                    scopes=list(scopes),
                    created_at=now,
                    expires_at=expires_at,
                )
            )
            inserted = result.inserted_primary_key
            assert inserted is not None  # noqa: S101 - an INSERT always has one
            key_id = int(inserted[0])
        return KeyRecord(key_id, tenant, prefix, key_hash, name, scopes, now, expires_at, None)

    async def key_by_prefix(self, prefix: str) -> KeyRecord | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(api_keys).where(api_keys.c.prefix == prefix))).first()
        return None if row is None else _key(row)

    async def list_keys(self, tenant: str) -> list[KeyRecord]:
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(api_keys).where(api_keys.c.tenant == tenant).order_by(api_keys.c.id)
                )
            ).all()
        return [_key(r) for r in rows]

    async def revoke_key(self, tenant: str, prefix: str, at: dt.datetime) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(api_keys)
                .where(
                    api_keys.c.tenant == tenant,
                    api_keys.c.prefix == prefix,
                    api_keys.c.revoked_at.is_(None),
                )
                .values(revoked_at=at)
            )
        return bool(result.rowcount)

    async def expire_key(self, tenant: str, prefix: str, at: dt.datetime) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(api_keys)
                .where(api_keys.c.tenant == tenant, api_keys.c.prefix == prefix)
                .values(expires_at=at)
            )
        return bool(result.rowcount)


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    return None if value is None else as_utc(value)


def _tenant(row: Any) -> TenantRecord:
    overrides = {k: getattr(row, k) for k in QUOTA_FIELDS}
    return TenantRecord(row.name, row.status, as_utc(row.created_at), overrides)


def _key(row: Any) -> KeyRecord:
    return KeyRecord(
        id=row.id,
        tenant=row.tenant,
        prefix=row.prefix,
        key_hash=row.key_hash,
        name=row.name,
        scopes=tuple(row.scopes),
        created_at=as_utc(row.created_at),
        expires_at=_utc(row.expires_at),
        revoked_at=_utc(row.revoked_at),
    )
