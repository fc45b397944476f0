"""Canary rollouts: their plan, step, state, the statistics each step started from, why they
were started and the rollout guard's latest verdict."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from modelport.errors import Conflict
from modelport.stores import aliases, audit
from modelport.stores.audit import Change
from modelport.stores.model_rows import model_id, now, require_version
from modelport.stores.sql.schema import models, rollouts
from modelport.stores.sql.timestamps import as_utc

ACTIVE_STATES = ("running", "paused")


@dataclass(frozen=True, slots=True)
class RolloutRecord:
    id: int
    tenant: str
    model: str
    baseline: str
    candidate: str
    plan: dict[str, Any]
    step: int
    state: str
    reason: str
    """Why the rollout was started; it never changes."""
    snapshot: dict[str, Any]
    started_at: dt.datetime
    step_started_at: dt.datetime
    updated_at: dt.datetime
    started_by: str
    verdict: dict[str, Any] | None = None
    """The rollout guard's latest judgement (action, reason, figures, at), if it judged yet."""

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


class RolloutStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def of_model(self, tenant: str, model: str, limit: int = 20) -> list[RolloutRecord]:
        query = (
            query_rollouts()
            .where(models.c.tenant == tenant, models.c.name == model)
            .order_by(rollouts.c.id.desc())
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            return [record_of(r) for r in (await conn.execute(query)).all()]

    async def active(self) -> list[RolloutRecord]:
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(query_rollouts().where(rollouts.c.state.in_(ACTIVE_STATES)))
            ).all()
        return [record_of(r) for r in rows]

    async def get(self, rollout_id: int) -> RolloutRecord | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(query_rollouts().where(rollouts.c.id == rollout_id))).first()
        return None if row is None else record_of(row)

    async def start(
        self,
        tenant: str,
        model: str,
        baseline: str,
        candidate: str,
        plan: dict[str, Any],
        snapshot: dict[str, Any],
        change: Change,
    ) -> RolloutRecord:
        """A new running rollout; refused while the model has another one active."""
        started = now()
        async with self._engine.begin() as conn:
            found = await model_id(conn, tenant, model)
            await require_version(conn, found, model, baseline)
            await require_version(conn, found, model, candidate)
            active = await active_for(conn, found)
            if active is not None:
                raise Conflict(
                    f"model '{model}' already has rollout {active.id} in progress; "
                    "abort or finish it first"
                )
            result = await conn.execute(
                insert(rollouts).values(
                    model_id=found,
                    baseline=int(baseline),
                    candidate=int(candidate),
                    plan=plan,
                    step=0,
                    state="running",
                    reason=change.reason,
                    snapshot=snapshot,
                    started_at=started,
                    step_started_at=started,
                    updated_at=started,
                    started_by=change.actor,
                )
            )
            rollout_id = int(result.inserted_primary_key[0])  # type: ignore[index]
            await audit.write(
                conn,
                tenant,
                model,
                change.with_refs(baseline, candidate, rollout=rollout_id),
                bump=True,
            )
            row = (await conn.execute(query_rollouts().where(rollouts.c.id == rollout_id))).one()
        return record_of(row)

    async def transition(
        self,
        rollout: RolloutRecord,
        change: Change,
        *,
        state: str | None = None,
        step: int | None = None,
        snapshot: dict[str, Any] | None = None,
        verdict: dict[str, Any] | None = None,
        move_alias: str | None = None,
    ) -> RolloutRecord:
        """Move an active rollout on, atomically with its audit entry (and with pointing
        ``move_alias`` at the candidate). Refuses if someone else moved it first."""
        values: dict[str, Any] = {"updated_at": now()}
        if state is not None:
            values["state"] = state
        if step is not None:
            values["step"] = step
            values["step_started_at"] = values["updated_at"]
        if snapshot is not None:
            values["snapshot"] = snapshot
        if verdict is not None:
            values["verdict"] = verdict
        async with self._engine.begin() as conn:
            await _update_unchanged(conn, rollout, values)
            if move_alias is not None:
                found = await model_id(conn, rollout.tenant, rollout.model)
                await aliases.write(conn, found, move_alias, int(rollout.candidate), change.actor)
            await audit.write(conn, rollout.tenant, rollout.model, change, bump=True)
            row = (await conn.execute(query_rollouts().where(rollouts.c.id == rollout.id))).one()
        return record_of(row)

    async def set_verdict(self, rollout: RolloutRecord, verdict: dict[str, Any]) -> None:
        """Note the guard's judgement of a step that holds: nothing routes differently, so
        neither the release clock nor the audit log moves."""
        async with self._engine.begin() as conn:
            await _update_unchanged(conn, rollout, {"verdict": verdict})


async def _update_unchanged(
    conn: AsyncConnection, rollout: RolloutRecord, values: dict[str, Any]
) -> None:
    result = await conn.execute(
        update(rollouts)
        .where(
            rollouts.c.id == rollout.id,
            rollouts.c.state == rollout.state,
            rollouts.c.step == rollout.step,
        )
        .values(**values)
    )
    if result.rowcount != 1:
        raise Conflict(
            f"rollout {rollout.id} of model '{rollout.model}' changed meanwhile; read it again"
        )


async def active_for(conn: AsyncConnection, model_id: int) -> RolloutRecord | None:
    row = (
        await conn.execute(
            query_rollouts().where(
                rollouts.c.model_id == model_id, rollouts.c.state.in_(ACTIVE_STATES)
            )
        )
    ).first()
    return None if row is None else record_of(row)


def query_rollouts() -> Any:
    return select(models.c.tenant, models.c.name.label("model"), rollouts).join(
        models, models.c.id == rollouts.c.model_id
    )


def record_of(row: Any) -> RolloutRecord:
    return RolloutRecord(
        id=row.id,
        tenant=row.tenant,
        model=row.model,
        baseline=str(row.baseline),
        candidate=str(row.candidate),
        plan=row.plan,
        step=row.step,
        state=row.state,
        reason=row.reason,
        snapshot=row.snapshot,
        started_at=as_utc(row.started_at),
        step_started_at=as_utc(row.step_started_at),
        updated_at=as_utc(row.updated_at),
        started_by=row.started_by,
        verdict=row.verdict,
    )
