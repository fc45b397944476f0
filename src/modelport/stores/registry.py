"""The registry store: models and their immutable versions, in SQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from modelport.errors import Conflict, ModelNotFound
from modelport.stores.sql.schema import model_versions, models

_VERSION = re.compile(r"[1-9][0-9]{0,8}")


def is_version_number(version: str) -> bool:
    """Versions are written canonically ("7", never "07"), so one version has one name."""
    return _VERSION.fullmatch(version) is not None


@dataclass(frozen=True, slots=True)
class ModelRecord:
    name: str
    required: bool
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class VersionRecord:
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

    async def ensure_model(self, name: str, required: bool | None = None) -> ModelRecord:
        """Create the model if it does not exist; update ``required`` when given."""
        now = dt.datetime.now(dt.UTC)
        async with self._engine.begin() as conn:
            row = (await conn.execute(select(models).where(models.c.name == name))).first()
            if row is None:
                try:
                    # A savepoint: PostgreSQL aborts the whole transaction on a failed insert.
                    async with conn.begin_nested():
                        await conn.execute(
                            insert(models).values(
                                name=name,
                                required=True if required is None else required,
                                created_at=now,
                            )
                        )
                except IntegrityError:
                    pass  # created concurrently: read it below
            elif required is not None and row.required != required:
                await conn.execute(
                    update(models).where(models.c.name == name).values(required=required)
                )
            row = (await conn.execute(select(models).where(models.c.name == name))).one()
        return ModelRecord(row.name, row.required, _utc(row.created_at))

    async def get_model(self, name: str) -> ModelRecord | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(models).where(models.c.name == name))).first()
        return None if row is None else ModelRecord(row.name, row.required, _utc(row.created_at))

    async def list_models(self) -> list[ModelRecord]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(models).order_by(models.c.name))).all()
        return [ModelRecord(r.name, r.required, _utc(r.created_at)) for r in rows]

    async def add_version(
        self,
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
                    model_id = await self._model_id(conn, model)
                    latest = (
                        await conn.execute(
                            select(func.max(model_versions.c.version)).where(
                                model_versions.c.model_id == model_id
                            )
                        )
                    ).scalar()
                    number = (latest or 0) + 1
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
            except IntegrityError:
                # Another push took this number: back off a little and take the next one.
                await asyncio.sleep(random.uniform(0.005, 0.05))  # noqa: S311 - jitter only
                continue
            return VersionRecord(
                model, str(number), artifact_uri, sha256, signature, config, now, created_by
            )
        raise Conflict(f"could not allocate a version number for model '{model}'; retry the push")

    async def get_version(self, model: str, version: str) -> VersionRecord | None:
        if not is_version_number(version):
            return None
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    _versions_query(model).where(model_versions.c.version == int(version))
                )
            ).first()
        return None if row is None else _version(model, row)

    async def list_versions(self, model: str) -> list[VersionRecord]:
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(_versions_query(model).order_by(model_versions.c.version))
            ).all()
        return [_version(model, r) for r in rows]

    async def latest_version(self, model: str) -> VersionRecord | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    _versions_query(model).order_by(model_versions.c.version.desc()).limit(1)
                )
            ).first()
        return None if row is None else _version(model, row)

    @staticmethod
    async def _model_id(conn: Any, model: str) -> int:
        model_id = (await conn.execute(select(models.c.id).where(models.c.name == model))).scalar()
        if model_id is None:
            raise ModelNotFound(model)
        return int(model_id)


def _versions_query(model: str) -> Any:
    return (
        select(model_versions)
        .join(models, models.c.id == model_versions.c.model_id)
        .where(models.c.name == model)
    )


def _version(model: str, row: Any) -> VersionRecord:
    return VersionRecord(
        model=model,
        version=str(row.version),
        artifact_uri=row.artifact_uri,
        sha256=row.sha256,
        signature=row.signature,
        config=row.config,
        created_at=_utc(row.created_at),
        created_by=row.created_by,
    )


def _utc(value: dt.datetime) -> dt.datetime:
    # SQLite hands back naive datetimes; every timestamp we write is UTC.
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
