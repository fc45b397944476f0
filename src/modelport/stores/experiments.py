"""Experiments and the exposures served under them.

An experiment is one row; every write names the version it read and bumps it, so an edit and
a guardrail stop racing each other never overwrite one another (the loser reads again). Its
history (created, started, stopped and by whom, new runs) is a JSON list on the row: short,
and read with it.

Exposures are one row per answer served under an experiment, keyed by (tenant, experiment,
request id) so that a retried write stores it once. The analysis counts them per variant and
joins behavioural events (``events.request_id``) to attribute clicks and purchases.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, case, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from modelport.errors import Conflict
from modelport.stores.sql.schema import events, experiment_exposures, experiments
from modelport.stores.sql.timestamps import as_utc

DRAFT, RUNNING, STOPPED = "draft", "running", "stopped"


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    weight: float
    target: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "weight": self.weight, "target": self.target}


@dataclass(frozen=True, slots=True)
class Experiment:
    tenant: str
    id: str
    name: str
    description: str
    surface: str
    unit: str
    unit_key: str | None
    status: str
    run: int
    salt: str
    variants: tuple[Variant, ...]
    control: str
    layer: str | None
    layer_start: int
    layer_end: int
    guardrail: dict[str, Any] | None
    history: tuple[dict[str, Any], ...]
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime

    @property
    def weights(self) -> list[float]:
        return [v.weight for v in self.variants]

    def variant(self, name: str) -> Variant | None:
        return next((v for v in self.variants if v.name == name), None)


@dataclass(frozen=True, slots=True)
class Exposure:
    tenant: str
    experiment_id: str
    request_id: str
    run: int
    variant: str
    unit: str
    outcome: str
    latency_ms: float | None
    exposed_at: dt.datetime


@dataclass(slots=True)
class Tally:
    """One variant's counts in one run."""

    exposures: int = 0
    units: int = 0
    errors: int = 0
    timed: int = 0
    """Exposures with a latency."""
    clicked_units: int = 0
    converted_units: int = 0
    clicked_requests: int = 0
    p99_ms: float | None = field(default=None)


def _row(e: Experiment) -> dict[str, Any]:
    return {
        "tenant": e.tenant,
        "id": e.id,
        "name": e.name,
        "description": e.description,
        "surface": e.surface,
        "unit": e.unit,
        "unit_key": e.unit_key,
        "status": e.status,
        "run": e.run,
        "salt": e.salt,
        "variants": [v.to_json() for v in e.variants],
        "control": e.control,
        "layer": e.layer,
        "layer_start": e.layer_start,
        "layer_end": e.layer_end,
        "guardrail": e.guardrail,
        "history": list(e.history),
        "version": e.version,
        "created_at": e.created_at,
        "updated_at": e.updated_at,
    }


def _experiment(row: Any) -> Experiment:
    return Experiment(
        tenant=row.tenant,
        id=row.id,
        name=row.name,
        description=row.description,
        surface=row.surface,
        unit=row.unit,
        unit_key=row.unit_key,
        status=row.status,
        run=row.run,
        salt=row.salt,
        variants=tuple(Variant(v["name"], v["weight"], v["target"]) for v in row.variants),
        control=row.control,
        layer=row.layer,
        layer_start=row.layer_start,
        layer_end=row.layer_end,
        guardrail=row.guardrail,
        history=tuple(row.history),
        version=row.version,
        created_at=as_utc(row.created_at),
        updated_at=as_utc(row.updated_at),
    )


class ExperimentStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(self, experiment: Experiment) -> None:
        try:
            async with self._engine.begin() as conn:
                await conn.execute(insert(experiments).values(**_row(experiment)))
        except IntegrityError:
            raise Conflict(
                f"experiment '{experiment.id}' already exists; choose another id, or start "
                f"a new run of it (POST /v1/experiments/{experiment.id}/runs)"
            ) from None

    async def get(self, tenant: str, experiment_id: str) -> Experiment | None:
        query = select(experiments).where(
            experiments.c.tenant == tenant, experiments.c.id == experiment_id
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _experiment(row)

    async def list(self, tenant: str, status: str | None = None) -> list[Experiment]:
        query = select(experiments).where(experiments.c.tenant == tenant)
        if status is not None:
            query = query.where(experiments.c.status == status)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query.order_by(experiments.c.id))).all()
        return [_experiment(row) for row in rows]

    async def replace(self, experiment: Experiment, read_version: int) -> bool:
        """Write ``experiment`` if the stored one is still at ``read_version``."""
        values = _row(experiment)
        for key in ("tenant", "id", "created_at"):
            values.pop(key)
        query = (
            update(experiments)
            .where(
                experiments.c.tenant == experiment.tenant,
                experiments.c.id == experiment.id,
                experiments.c.version == read_version,
            )
            .values(**values)
        )
        async with self._engine.begin() as conn:
            result = await conn.execute(query)
        return bool(result.rowcount)

    async def delete(self, tenant: str, experiment_id: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                delete(experiments).where(
                    experiments.c.tenant == tenant, experiments.c.id == experiment_id
                )
            )
            await conn.execute(
                delete(experiment_exposures).where(
                    experiment_exposures.c.tenant == tenant,
                    experiment_exposures.c.experiment_id == experiment_id,
                )
            )


class ExposureStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._dialect = postgresql if engine.dialect.name == "postgresql" else sqlite

    async def insert(self, exposures: Sequence[Exposure]) -> None:
        """Store ``exposures`` in one transaction; one already stored is left alone."""
        if not exposures:
            return
        rows = [
            {
                "tenant": x.tenant,
                "experiment_id": x.experiment_id,
                "request_id": x.request_id,
                "run": x.run,
                "variant": x.variant,
                "unit": x.unit,
                "outcome": x.outcome,
                "latency_ms": x.latency_ms,
                "exposed_at": x.exposed_at,
            }
            for x in exposures
        ]
        statement = self._dialect.insert(experiment_exposures).on_conflict_do_nothing()
        async with self._engine.begin() as conn:
            await conn.execute(statement, rows)

    async def tallies(self, tenant: str, experiment_id: str, run: int) -> dict[str, Tally]:
        x = experiment_exposures
        mine = and_(x.c.tenant == tenant, x.c.experiment_id == experiment_id, x.c.run == run)
        counts = (
            select(
                x.c.variant,
                func.count(),
                func.count(func.distinct(x.c.unit)),
                func.sum(case((x.c.outcome == "error", 1), else_=0)),
                func.count(x.c.latency_ms),
            )
            .where(mine)
            .group_by(x.c.variant)
        )
        attributed = (
            select(
                x.c.variant,
                events.c.type,
                func.count(func.distinct(x.c.unit)),
                func.count(func.distinct(x.c.request_id)),
            )
            .select_from(
                x.join(
                    events,
                    and_(events.c.tenant == x.c.tenant, events.c.request_id == x.c.request_id),
                )
            )
            .where(mine, events.c.type.in_(("click", "purchase")))
            .group_by(x.c.variant, events.c.type)
        )
        found: dict[str, Tally] = {}
        async with self._engine.connect() as conn:
            for variant, exposures, units, errors, timed in await conn.execute(counts):
                found[variant] = Tally(int(exposures), int(units), int(errors or 0), int(timed))
            for variant, kind, units, requests in await conn.execute(attributed):
                tally = found.setdefault(variant, Tally())
                if kind == "click":
                    tally.clicked_units, tally.clicked_requests = int(units), int(requests)
                else:
                    tally.converted_units = int(units)
            for variant, tally in found.items():
                if tally.timed:
                    # The nearest-rank p99: the ceil(0.99 n)-th smallest latency.
                    rank = math.ceil(0.99 * tally.timed) - 1
                    tally.p99_ms = (
                        await conn.execute(
                            select(x.c.latency_ms)
                            .where(mine, x.c.variant == variant, x.c.latency_ms.is_not(None))
                            .order_by(x.c.latency_ms)
                            .offset(rank)
                            .limit(1)
                        )
                    ).scalar_one()
        return found
