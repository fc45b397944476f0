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

from sqlalchemy import and_, delete, false, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from modelport.errors import Conflict, ModelNotFound, VersionNotFound
from modelport.stores.sql.schema import (
    aliases,
    audit_log,
    model_versions,
    models,
    release_clock,
    rollouts,
    routing,
    version_stats,
)
from modelport.stores.sql.timestamps import as_utc

_VERSION = re.compile(r"[1-9][0-9]{0,8}")

#: The audit action of a model's deletion; its details keep the last version number given.
MODEL_DELETED = "model_deleted"
#: Rollout states that still move traffic (kept equal to the release store's).
_ACTIVE_ROLLOUTS = ("running", "paused")
#: PostgreSQL channel replicas listen on for release changes (the release store's).
_RELEASES_CHANNEL = "modelport_releases"


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
                # A name that was deleted goes on from its last number: an answer cached for
                # an old version (keyed by number) is never served for a new one.
                given = await _last_deleted_version(conn, tenant, name)
                try:
                    # A savepoint: PostgreSQL aborts the whole transaction on a failed insert.
                    async with conn.begin_nested():
                        await conn.execute(
                            insert(models).values(
                                tenant=tenant,
                                name=name,
                                required=True if required is None else required,
                                created_at=now,
                                last_version=given,
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

    async def resolve_version(
        self, tenant: str, model: str, version: str | None = None
    ) -> VersionRecord:
        """The one place a model name and an optional version become a version record: the
        given version, or the newest when ``version`` is None, read in one query. Raises
        ``ModelNotFound`` when the tenant has no such model, ``VersionNotFound`` when the model
        has no such version (or none at all)."""
        joined = model_versions.c.model_id == models.c.id
        if version is not None:
            # A non-canonical number ("07") names no version; the model may still exist.
            wanted = (
                model_versions.c.version == int(version) if is_version_number(version) else false()
            )
            joined = and_(joined, wanted)
        query = (
            select(models.c.id.label("model_row"), model_versions)
            .select_from(models.outerjoin(model_versions, joined))
            .where(models.c.tenant == tenant, models.c.name == model)
            .order_by(model_versions.c.version.desc())
            .limit(1)
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            raise ModelNotFound(model)
        if row.version is None:
            raise VersionNotFound(model, version or "latest")
        return _version(tenant, model, row)

    async def models_with_versions(
        self, tenant: str
    ) -> list[tuple[ModelRecord, list[VersionRecord]]]:
        """Every model of the tenant with its versions (oldest first), in two queries however
        many models there are."""
        async with self._engine.connect() as conn:
            model_rows = (
                await conn.execute(
                    select(models).where(models.c.tenant == tenant).order_by(models.c.name)
                )
            ).all()
            version_rows = (
                await conn.execute(
                    select(models.c.name.label("model_name"), model_versions)
                    .join(models, models.c.id == model_versions.c.model_id)
                    .where(models.c.tenant == tenant)
                    .order_by(models.c.name, model_versions.c.version)
                )
            ).all()
        versions: dict[str, list[VersionRecord]] = {}
        for row in version_rows:
            versions.setdefault(row.model_name, []).append(_version(tenant, row.model_name, row))
        return [(_model(row), versions.get(row.name, [])) for row in model_rows]

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

    async def delete_model(
        self, tenant: str, name: str, actor: str, reason: str, *, refuse: list[str] | None = None
    ) -> list[VersionRecord]:
        """Delete the model, its versions, aliases, routing, rollouts and statistics in one
        transaction, audited and announced to replicas like any release change; refuses while
        a rollout is in progress, or when ``refuse`` names other dependents. Returns the
        versions it deleted (their artifacts are the caller's to remove)."""
        async with self._engine.begin() as conn:
            row = (
                await conn.execute(
                    select(models.c.id, models.c.last_version).where(
                        models.c.tenant == tenant, models.c.name == name
                    )
                )
            ).first()
            if row is None:
                raise ModelNotFound(name)
            model_id = int(row.id)
            users = list(refuse or [])
            rollout = (
                await conn.execute(
                    select(rollouts.c.id, rollouts.c.state).where(
                        rollouts.c.model_id == model_id, rollouts.c.state.in_(_ACTIVE_ROLLOUTS)
                    )
                )
            ).first()
            if rollout is not None:
                users.insert(0, f"rollout {rollout.id} ({rollout.state}; abort or finish it)")
            if users:
                raise Conflict(
                    f"model '{name}' cannot be deleted while {'; '.join(users)} depends on it"
                )
            deleted = [
                _version(tenant, name, r)
                for r in (
                    await conn.execute(
                        select(model_versions)
                        .where(model_versions.c.model_id == model_id)
                        .order_by(model_versions.c.version)
                    )
                ).all()
            ]
            for table in (aliases, routing, rollouts, model_versions):
                await conn.execute(delete(table).where(table.c.model_id == model_id))
            await conn.execute(
                delete(version_stats).where(
                    version_stats.c.tenant == tenant, version_stats.c.model == name
                )
            )
            await conn.execute(delete(models).where(models.c.id == model_id))
            last = max([int(row.last_version or 0), *(int(v.version) for v in deleted)])
            await conn.execute(
                insert(audit_log).values(
                    tenant=tenant,
                    model=name,
                    action=MODEL_DELETED,
                    actor=actor,
                    from_ref=",".join(v.version for v in deleted) or None,
                    to_ref=None,
                    reason=reason,
                    details={"versions": [v.version for v in deleted], "last_version": last},
                    at=dt.datetime.now(dt.UTC),
                )
            )
            # Replicas follow the release clock: the bump makes them drop the model's routes
            # and unload its versions.
            await conn.execute(
                update(release_clock)
                .where(release_clock.c.id == 1)
                .values(generation=release_clock.c.generation + 1)
            )
            if conn.dialect.name == "postgresql":
                await conn.execute(
                    text("SELECT pg_notify(:channel, '')"), {"channel": _RELEASES_CHANNEL}
                )
        return deleted

    async def artifact_in_use(self, uri: str) -> bool:
        """Whether any version (of any model) still points at ``uri``."""
        async with self._engine.connect() as conn:
            found = (
                await conn.execute(
                    select(model_versions.c.id).where(model_versions.c.artifact_uri == uri).limit(1)
                )
            ).first()
        return found is not None


async def _last_deleted_version(conn: AsyncConnection, tenant: str, name: str) -> int:
    """The highest version number a deleted model of this name had given (0 if none)."""
    rows = (
        await conn.execute(
            select(audit_log.c.details).where(
                audit_log.c.tenant == tenant,
                audit_log.c.model == name,
                audit_log.c.action == MODEL_DELETED,
            )
        )
    ).all()
    numbers = [
        int(r.details["last_version"])
        for r in rows
        if isinstance(r.details, dict) and isinstance(r.details.get("last_version"), int)
    ]
    return max(numbers, default=0)


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
