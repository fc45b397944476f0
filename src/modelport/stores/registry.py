"""The registry store: models and their immutable versions, in SQL, scoped by tenant.

Every query takes the tenant: a model is identified by ``(tenant, name)``, and nothing here can
read or write across tenants.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from modelport.errors import Conflict, ModelNotFound
from modelport.stores.sql.schema import model_versions, models
from modelport.stores.sql.timestamps import as_utc

_VERSION = re.compile(r"[1-9][0-9]{0,8}")


def is_version_number(version: str) -> bool:
    """Versions are written canonically ("7", never "07"), so one version has one name."""
    return _VERSION.fullmatch(version) is not None


@dataclass(frozen=True, slots=True)
class ModelRecord:
    tenant: str
    name: str
    required: bool
    created_at: dt.datetime
    interface: dict[str, Any] | None = None
    """The signature every new version must stay compatible with (unless pushed as breaking)."""
    golden: list[dict[str, Any]] | None = None
    """Golden examples a new version must reproduce before it may receive traffic."""


@dataclass(frozen=True, slots=True)
class VersionRecord:
    tenant: str
    model: str
    version: str
    artifact_uri: str
    sha256: str
    signature: dict[str, Any]
    config: dict[str, Any]
    created_at: dt.datetime
    created_by: str


class RegistryStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def ensure_model(
        self, tenant: str, name: str, required: bool | None = None
    ) -> ModelRecord:
        """Create the model if it does not exist; update ``required`` when given."""
        now = dt.datetime.now(dt.UTC)
        where = (models.c.tenant == tenant, models.c.name == name)
        async with self._engine.begin() as conn:
            row = (await conn.execute(select(models).where(*where))).first()
            if row is None:
                try:
                    # A savepoint: PostgreSQL aborts the whole transaction on a failed insert.
                    async with conn.begin_nested():
                        await conn.execute(
                            insert(models).values(
                                tenant=tenant,
                                name=name,
                                required=True if required is None else required,
                                created_at=now,
                            )
                        )
                except IntegrityError:
                    pass  # created concurrently: read it below
            elif required is not None and row.required != required:
                await conn.execute(update(models).where(*where).values(required=required))
            row = (await conn.execute(select(models).where(*where))).one()
        return _model(row)

    async def set_interface(self, tenant: str, name: str, interface: dict[str, Any]) -> None:
        await self._update_model(tenant, name, interface=interface)

    async def set_golden(self, tenant: str, name: str, golden: list[dict[str, Any]] | None) -> None:
        await self._update_model(tenant, name, golden=golden)

    async def _update_model(self, tenant: str, name: str, **values: Any) -> None:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(models)
                .where(models.c.tenant == tenant, models.c.name == name)
                .values(**values)
            )
        if result.rowcount != 1:
            raise ModelNotFound(name)

    async def get_model(self, tenant: str, name: str) -> ModelRecord | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(models).where(models.c.tenant == tenant, models.c.name == name)
                )
            ).first()
        return None if row is None else _model(row)

    async def list_models(self, tenant: str | None) -> list[ModelRecord]:
        """The tenant's models; every tenant's when ``tenant`` is None (server start-up)."""
        query = select(models).order_by(models.c.tenant, models.c.name)
        if tenant is not None:
            query = query.where(models.c.tenant == tenant)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_model(r) for r in rows]

    async def add_version(
        self,
        tenant: str,
        model: str,
        *,
        artifact_uri: str,
        sha256: str,
        signature: dict[str, Any],
        config: dict[str, Any],
        created_by: str,
        attempts: int = 20,
    ) -> VersionRecord:
        """Append the next version number of ``model``; versions are never rewritten."""
        for _ in range(attempts):
            now = dt.datetime.now(dt.UTC)
            try:
                async with self._engine.begin() as conn:
                    model_id = await _model_id(conn, tenant, model)
                    # The highest number ever given, not the highest that exists: a deleted
                    # version's number is never handed out again.
                    given = (
                        await conn.execute(
                            select(models.c.last_version).where(models.c.id == model_id)
                        )
                    ).scalar()
                    number = (given or 0) + 1
                    await conn.execute(
                        insert(model_versions).values(
                            model_id=model_id,
                            version=number,
                            artifact_uri=artifact_uri,
                            sha256=sha256,
                            signature=signature,
                            config=config,
                            created_at=now,
                            created_by=created_by,
                        )
                    )
                    await conn.execute(
                        update(models).where(models.c.id == model_id).values(last_version=number)
                    )
            except IntegrityError:
                # Another push took this number: back off a little and take the next one.
                await asyncio.sleep(random.uniform(0.005, 0.05))  # noqa: S311 - jitter only
                continue
            return VersionRecord(
                tenant,
                model,
                str(number),
                artifact_uri,
                sha256,
                signature,
                config,
                now,
                created_by,
            )
        raise Conflict(f"could not allocate a version number for model '{model}'; retry the push")

    async def get_version(self, tenant: str, model: str, version: str) -> VersionRecord | None:
        if not is_version_number(version):
            return None
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    _versions_query(tenant, model).where(model_versions.c.version == int(version))
                )
            ).first()
        return None if row is None else _version(tenant, model, row)

    async def list_versions(self, tenant: str, model: str) -> list[VersionRecord]:
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    _versions_query(tenant, model).order_by(model_versions.c.version)
                )
            ).all()
        return [_version(tenant, model, r) for r in rows]

    async def latest_version(self, tenant: str, model: str) -> VersionRecord | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    _versions_query(tenant, model)
                    .order_by(model_versions.c.version.desc())
                    .limit(1)
                )
            ).first()
        return None if row is None else _version(tenant, model, row)


async def _model_id(conn: AsyncConnection, tenant: str, model: str) -> int:
    model_id = (
        await conn.execute(
            select(models.c.id).where(models.c.tenant == tenant, models.c.name == model)
        )
    ).scalar()
    if model_id is None:
        raise ModelNotFound(model)
    return int(model_id)


def _versions_query(tenant: str, model: str) -> Any:
    return (
        select(model_versions)
        .join(models, models.c.id == model_versions.c.model_id)
        .where(models.c.tenant == tenant, models.c.name == model)
    )


def _model(row: Any) -> ModelRecord:
    return ModelRecord(
        row.tenant, row.name, row.required, as_utc(row.created_at), row.interface, row.golden
    )


def _version(tenant: str, model: str, row: Any) -> VersionRecord:
    return VersionRecord(
        tenant=tenant,
        model=model,
        version=str(row.version),
        artifact_uri=row.artifact_uri,
        sha256=row.sha256,
        signature=row.signature,
        config=row.config,
        created_at=as_utc(row.created_at),
        created_by=row.created_by,
    )
