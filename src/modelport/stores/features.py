"""Feature views in SQL: immutable, numbered versions of a definition, scoped by tenant.

Applying a definition adds version 1, or the next version when it differs from the latest;
applying the latest definition again adds nothing. Values are checked against a view's dtypes
here too (:func:`check_value`), so defaults and pushed values follow one rule.
"""

from __future__ import annotations

import builtins
import datetime as dt
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, get_args

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from modelport.errors import Conflict, FeatureViewNotFound, InvalidInput
from modelport.stores.online import FeatureSpec, FeatureType, FeatureView
from modelport.stores.sql.schema import feature_views

NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
DTYPES: tuple[str, ...] = get_args(FeatureType)
MAX_FEATURES = 1000
MAX_TTL_S = 10 * 365 * 86_400.0
MAX_STRING_CHARS = 65_536
_INT64 = (-(2**63), 2**63 - 1)


@dataclass(frozen=True, slots=True)
class AppliedView:
    view: FeatureView
    created: bool
    """False when the definition equalled the latest version (nothing was added)."""


def check_name(kind: str, name: object) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise InvalidInput(
            f"{kind} name {name!r} is not allowed: use 1-63 lowercase letters, digits or '_', "
            "starting with a letter"
        )
    return name


def check_value(dtype: FeatureType, value: object, where: str) -> Any:
    """``value`` as the Python type of ``dtype``; raises ``InvalidInput`` naming ``where``."""
    if dtype == "float":
        if isinstance(value, int | float) and not isinstance(value, bool):
            result = float(value)
            if math.isfinite(result):
                return result
            raise InvalidInput(f"{where}: a float feature must be finite, got {value!r}")
    elif dtype == "int":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            if _INT64[0] <= value <= _INT64[1]:
                return value
            raise InvalidInput(f"{where}: {value} does not fit a signed 64-bit int")
    elif dtype == "bool":
        if isinstance(value, bool):
            return value
    elif isinstance(value, str):
        if len(value) > MAX_STRING_CHARS:
            raise InvalidInput(f"{where}: strings are limited to {MAX_STRING_CHARS} characters")
        return check_unicode(value, where)
    raise InvalidInput(f"{where}: expected {dtype}, got {_describe(value)}")


def check_unicode(text: str, where: str) -> str:
    """``text`` if it is valid Unicode: JSON's escapes can carry lone surrogates, which no
    UTF-8 encoder (orjson, Redis, the database) accepts."""
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            raise InvalidInput(f"{where}: not valid Unicode (a lone surrogate escape)") from None
    return text


def check_definition(
    name: str, entity: str, features: Sequence[FeatureSpec], ttl_s: float
) -> tuple[FeatureSpec, ...]:
    """The features of a valid definition, defaults converted to their dtypes."""
    check_name("feature view", name)
    check_name("entity", entity)
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float):
        raise InvalidInput(f"ttl_s must be a number of seconds, got {_describe(ttl_s)}")
    if not (math.isfinite(ttl_s) and 0 < ttl_s <= MAX_TTL_S):
        raise InvalidInput(f"ttl_s must be > 0 and at most {MAX_TTL_S:.0f} s, got {ttl_s!r}")
    if not features:
        raise InvalidInput(f"feature view '{name}' needs at least one feature")
    if len(features) > MAX_FEATURES:
        raise InvalidInput(f"a feature view holds at most {MAX_FEATURES} features")
    seen: set[str] = set()
    checked = []
    for spec in features:
        check_name("feature", spec.name)
        if spec.name in seen:
            raise InvalidInput(f"feature '{spec.name}' appears twice in view '{name}'")
        seen.add(spec.name)
        if spec.dtype not in DTYPES:
            raise InvalidInput(
                f"feature '{spec.name}': dtype {spec.dtype!r} is not one of {', '.join(DTYPES)}"
            )
        default = (
            None
            if spec.default is None
            else check_value(spec.dtype, spec.default, f"default of feature '{spec.name}'")
        )
        checked.append(FeatureSpec(spec.name, spec.dtype, default))
    return tuple(checked)


class FeatureViewStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def apply(
        self,
        tenant: str,
        name: str,
        entity: str,
        features: Sequence[FeatureSpec],
        ttl_s: float,
        actor: str,
    ) -> AppliedView:
        """Version 1, a new version if the definition changed, or the latest one unchanged."""
        specs = check_definition(name, entity, features, ttl_s)
        ttl = float(ttl_s)
        async with self._engine.begin() as conn:
            latest = await _latest(conn, tenant, name)
            if latest is not None and _same(latest, entity, specs, ttl):
                return AppliedView(latest, created=False)
            version = 1 if latest is None else latest.version + 1
            try:
                # A savepoint: PostgreSQL aborts the whole transaction on a failed insert.
                async with conn.begin_nested():
                    await conn.execute(
                        insert(feature_views).values(
                            tenant=tenant,
                            name=name,
                            version=version,
                            entity=entity,
                            features=[_spec_json(s) for s in specs],
                            ttl_s=ttl,
                            created_at=dt.datetime.now(dt.UTC),
                            created_by=actor,
                        )
                    )
            except IntegrityError:
                concurrent = await _latest(conn, tenant, name)
                if concurrent is not None and _same(concurrent, entity, specs, ttl):
                    return AppliedView(concurrent, created=False)
                raise Conflict(
                    f"feature view '{name}' was changed by someone else meanwhile; apply again"
                ) from None
        return AppliedView(FeatureView(tenant, name, version, entity, specs, ttl), created=True)

    async def get(self, tenant: str, name: str, version: int | None = None) -> FeatureView:
        """The given version, or the latest; ``FeatureViewNotFound`` if there is none."""
        async with self._engine.connect() as conn:
            if version is None:
                view = await _latest(conn, tenant, name)
            else:
                row = (
                    await conn.execute(
                        select(feature_views).where(
                            feature_views.c.tenant == tenant,
                            feature_views.c.name == name,
                            feature_views.c.version == version,
                        )
                    )
                ).first()
                view = None if row is None else _view(row)
        if view is None:
            raise FeatureViewNotFound(name, version)
        return view

    async def list(self, tenant: str) -> builtins.list[FeatureView]:
        """The latest version of every view of ``tenant``, by name."""
        newest = (
            select(feature_views.c.name, func.max(feature_views.c.version).label("version"))
            .where(feature_views.c.tenant == tenant)
            .group_by(feature_views.c.name)
            .subquery()
        )
        query = (
            select(feature_views)
            .join(
                newest,
                (feature_views.c.name == newest.c.name)
                & (feature_views.c.version == newest.c.version),
            )
            .where(feature_views.c.tenant == tenant)
            .order_by(feature_views.c.name)
        )
        async with self._engine.connect() as conn:
            return [_view(r) for r in (await conn.execute(query)).all()]


async def _latest(conn: AsyncConnection, tenant: str, name: str) -> FeatureView | None:
    row = (
        await conn.execute(
            select(feature_views)
            .where(feature_views.c.tenant == tenant, feature_views.c.name == name)
            .order_by(feature_views.c.version.desc())
            .limit(1)
        )
    ).first()
    return None if row is None else _view(row)


def _same(view: FeatureView, entity: str, specs: tuple[FeatureSpec, ...], ttl_s: float) -> bool:
    return view.entity == entity and view.features == specs and view.ttl_s == ttl_s


def _spec_json(spec: FeatureSpec) -> dict[str, Any]:
    return {"name": spec.name, "dtype": spec.dtype, "default": spec.default}


def _view(row: Any) -> FeatureView:
    return FeatureView(
        tenant=row.tenant,
        name=row.name,
        version=int(row.version),
        entity=row.entity,
        features=tuple(FeatureSpec(f["name"], f["dtype"], f.get("default")) for f in row.features),
        ttl_s=float(row.ttl_s),
    )


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, list | dict):
        return "a JSON " + ("list" if isinstance(value, list) else "object")
    kind = {bool: "bool", int: "int", float: "float", str: "string"}.get(type(value))
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    return shown if kind is None else f"{kind} {shown}"
