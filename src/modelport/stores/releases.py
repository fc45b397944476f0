"""The release store: aliases, routing policies, rollouts, the audit log, leases and the
per-replica statistics the rollout guard reads. SQL, scoped by tenant.

Every change bumps the one-row release clock in the same transaction (and on PostgreSQL sends a
``NOTIFY`` that is delivered on commit), so a replica knows it is current by reading one integer.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, insert, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from modelport.errors import Conflict, ModelNotFound, VersionNotFound
from modelport.routing.policy import RoutingPolicy, resolve_target
from modelport.routing.window import Window
from modelport.stores.sql.schema import (
    aliases,
    audit_log,
    leases,
    model_versions,
    models,
    release_clock,
    rollouts,
    routing,
    version_stats,
)
from modelport.stores.sql.timestamps import as_utc

#: PostgreSQL channel a release change is announced on.
CHANNEL = "modelport_releases"

ACTIVE_STATES = ("running", "paused")

#: Key in a rollout's snapshot holding the baseline's window of the last well-fed step.
REFERENCE = "reference"


@dataclass(frozen=True, slots=True)
class Change:
    """One audit entry: who did what to which model, from what to what, and why."""

    action: str
    actor: str
    reason: str
    from_ref: str | None = None
    to_ref: str | None = None
    details: dict[str, Any] | None = None


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
    snapshot: dict[str, Any]
    started_at: dt.datetime
    step_started_at: dt.datetime
    updated_at: dt.datetime
    started_by: str

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


@dataclass(frozen=True, slots=True)
class ModelReleases:
    """Everything that decides where one model's traffic goes."""

    tenant: str
    model: str
    aliases: dict[str, str]
    policy: RoutingPolicy | None
    rollout: RolloutRecord | None


@dataclass(frozen=True, slots=True)
class ReleaseSnapshot:
    generation: int
    models: dict[tuple[str, str], ModelReleases]


class ReleaseStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    # ------------------------------------------------------------------ reading

    async def generation(self) -> int:
        async with self._engine.connect() as conn:
            value = (
                await conn.execute(
                    select(release_clock.c.generation).where(release_clock.c.id == 1)
                )
            ).scalar()
        return int(value or 0)

    async def snapshot(self) -> ReleaseSnapshot:
        """Every model that has an alias, a policy or an active rollout, in one read."""
        async with self._engine.connect() as conn:
            generation = (
                await conn.execute(
                    select(release_clock.c.generation).where(release_clock.c.id == 1)
                )
            ).scalar()
            alias_rows = (
                await conn.execute(
                    select(models.c.tenant, models.c.name.label("model"), aliases).join(
                        models, models.c.id == aliases.c.model_id
                    )
                )
            ).all()
            policy_rows = (
                await conn.execute(
                    select(models.c.tenant, models.c.name.label("model"), routing.c.policy).join(
                        models, models.c.id == routing.c.model_id
                    )
                )
            ).all()
            rollout_rows = (
                await conn.execute(_rollouts_query().where(rollouts.c.state.in_(ACTIVE_STATES)))
            ).all()
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for row in alias_rows:
            entry = found.setdefault((row.tenant, row.model), {"aliases": {}})
            entry["aliases"][row.name] = str(row.version)
        for row in policy_rows:
            found.setdefault((row.tenant, row.model), {"aliases": {}})["policy"] = (
                RoutingPolicy.from_dict(row.policy)
            )
        for row in rollout_rows:
            found.setdefault((row.tenant, row.model), {"aliases": {}})["rollout"] = _rollout(row)
        return ReleaseSnapshot(
            int(generation or 0),
            {
                key: ModelReleases(key[0], key[1], v["aliases"], v.get("policy"), v.get("rollout"))
                for key, v in found.items()
            },
        )

    async def model_releases(self, tenant: str, model: str) -> ModelReleases:
        async with self._engine.connect() as conn:
            model_id = await _model_id(conn, tenant, model)
            return await _model_releases(conn, tenant, model, model_id)

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
        return [_audit(r) for r in rows]

    async def rollouts(self, tenant: str, model: str, limit: int = 20) -> list[RolloutRecord]:
        query = (
            _rollouts_query()
            .where(models.c.tenant == tenant, models.c.name == model)
            .order_by(rollouts.c.id.desc())
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            return [_rollout(r) for r in (await conn.execute(query)).all()]

    async def active_rollouts(self) -> list[RolloutRecord]:
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(_rollouts_query().where(rollouts.c.state.in_(ACTIVE_STATES)))
            ).all()
        return [_rollout(r) for r in rows]

    async def get_rollout(self, rollout_id: int) -> RolloutRecord | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(_rollouts_query().where(rollouts.c.id == rollout_id))).first()
        return None if row is None else _rollout(row)

    # ------------------------------------------------------------------ writing

    async def set_alias(
        self, tenant: str, model: str, alias: str, version: str, change: Change
    ) -> str | None:
        """Point ``alias`` at ``version``; returns the version it pointed at before."""
        async with self._engine.begin() as conn:
            model_id = await _model_id(conn, tenant, model)
            await _require_version(conn, model_id, model, version)
            previous = await _alias_version(conn, model_id, alias)
            await _write_alias(conn, model_id, alias, int(version), change.actor)
            await _audit_write(
                conn, tenant, model, _with_refs(change, previous, version), bump=True
            )
        return previous

    async def delete_alias(self, tenant: str, model: str, alias: str, change: Change) -> str:
        async with self._engine.begin() as conn:
            model_id = await _model_id(conn, tenant, model)
            previous = await _alias_version(conn, model_id, alias)
            if previous is None:
                raise Conflict(f"model '{model}' has no alias '{alias}'")
            releases = await _model_releases(conn, tenant, model, model_id)
            if releases.policy is not None and alias in releases.policy.targets():
                raise Conflict(
                    f"alias '{alias}' is used by the routing policy of model '{model}'; "
                    "change the policy first"
                )
            await conn.execute(
                delete(aliases).where(aliases.c.model_id == model_id, aliases.c.name == alias)
            )
            await _audit_write(conn, tenant, model, _with_refs(change, previous, None), bump=True)
        return previous

    async def set_policy(
        self, tenant: str, model: str, policy: RoutingPolicy | None, change: Change
    ) -> None:
        async with self._engine.begin() as conn:
            model_id = await _model_id(conn, tenant, model)
            current = await _model_releases(conn, tenant, model, model_id)
            if policy is not None:
                for target in policy.targets():
                    version = resolve_target(target, current.aliases)
                    if version is None:
                        raise Conflict(
                            f"routing target '{target}' is neither a version nor an alias of "
                            f"model '{model}'"
                        )
                    await _require_version(conn, model_id, model, version)
            await conn.execute(delete(routing).where(routing.c.model_id == model_id))
            if policy is not None:
                await conn.execute(
                    insert(routing).values(
                        model_id=model_id,
                        policy=policy.to_dict(),
                        updated_at=_now(),
                        updated_by=change.actor,
                    )
                )
            details = {"policy": None if policy is None else policy.to_dict()}
            await _audit_write(
                conn,
                tenant,
                model,
                Change(change.action, change.actor, change.reason, details=details),
                bump=True,
            )

    async def start_rollout(
        self,
        tenant: str,
        model: str,
        baseline: str,
        candidate: str,
        plan: dict[str, Any],
        snapshot: dict[str, Any],
        change: Change,
    ) -> RolloutRecord:
        now = _now()
        async with self._engine.begin() as conn:
            model_id = await _model_id(conn, tenant, model)
            await _require_version(conn, model_id, model, baseline)
            await _require_version(conn, model_id, model, candidate)
            active = (
                await conn.execute(
                    select(rollouts.c.id).where(
                        rollouts.c.model_id == model_id, rollouts.c.state.in_(ACTIVE_STATES)
                    )
                )
            ).scalar()
            if active is not None:
                raise Conflict(
                    f"model '{model}' already has rollout {active} in progress; "
                    "abort or finish it first"
                )
            result = await conn.execute(
                insert(rollouts).values(
                    model_id=model_id,
                    baseline=int(baseline),
                    candidate=int(candidate),
                    plan=plan,
                    step=0,
                    state="running",
                    reason=change.reason,
                    snapshot=snapshot,
                    started_at=now,
                    step_started_at=now,
                    updated_at=now,
                    started_by=change.actor,
                )
            )
            rollout_id = int(result.inserted_primary_key[0])  # type: ignore[index]
            await _audit_write(
                conn,
                tenant,
                model,
                _with_refs(change, baseline, candidate, rollout=rollout_id),
                bump=True,
            )
            row = (await conn.execute(_rollouts_query().where(rollouts.c.id == rollout_id))).one()
        return _rollout(row)

    async def transition_rollout(
        self,
        rollout: RolloutRecord,
        change: Change,
        *,
        state: str | None = None,
        step: int | None = None,
        snapshot: dict[str, Any] | None = None,
        promote: bool = False,
    ) -> RolloutRecord:
        """Move an active rollout on, atomically with its audit entry (and, on promotion, with
        moving ``production`` to the candidate). Refuses if someone else moved it first."""
        now = _now()
        values: dict[str, Any] = {"updated_at": now, "reason": change.reason}
        if state is not None:
            values["state"] = state
        if step is not None:
            values["step"] = step
            values["step_started_at"] = now
        if snapshot is not None:
            values["snapshot"] = snapshot
        async with self._engine.begin() as conn:
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
                    f"rollout {rollout.id} of model '{rollout.model}' changed meanwhile; "
                    "read it again"
                )
            if promote:
                model_id = await _model_id(conn, rollout.tenant, rollout.model)
                await _write_alias(
                    conn, model_id, "production", int(rollout.candidate), change.actor
                )
            await _audit_write(conn, rollout.tenant, rollout.model, change, bump=True)
            row = (await conn.execute(_rollouts_query().where(rollouts.c.id == rollout.id))).one()
        return _rollout(row)

    async def delete_version(self, tenant: str, model: str, version: str, change: Change) -> None:
        """Delete a version nothing points at; refuses (naming what does) otherwise."""
        async with self._engine.begin() as conn:
            model_id = await _model_id(conn, tenant, model)
            await _require_version(conn, model_id, model, version)
            releases = await _model_releases(conn, tenant, model, model_id)
            users = [f"alias '{a}'" for a, v in sorted(releases.aliases.items()) if v == version]
            if releases.policy is not None:
                for target in sorted(releases.policy.targets()):
                    if resolve_target(target, releases.aliases) == version and target.isdigit():
                        users.append("the routing policy")
            if releases.rollout is not None and version in (
                releases.rollout.baseline,
                releases.rollout.candidate,
            ):
                users.append(f"rollout {releases.rollout.id}")
            if (
                releases.rollout is None
                and (releases.policy is None or not releases.policy.splits)
                and "production" not in releases.aliases
            ):
                # Nothing routes the model, so its newest version serves all unpinned traffic.
                newest = (
                    await conn.execute(
                        select(model_versions.c.version)
                        .where(model_versions.c.model_id == model_id)
                        .order_by(model_versions.c.version.desc())
                        .limit(1)
                    )
                ).scalar()
                if newest == int(version):
                    users.append(
                        "unpinned traffic (the newest version serves it while no 'production' "
                        "alias or routing split chooses another)"
                    )
            if users:
                raise Conflict(
                    f"version {version} of model '{model}' is in use by {', '.join(users)}; "
                    "move those off it first"
                )
            await conn.execute(
                delete(model_versions).where(
                    model_versions.c.model_id == model_id,
                    model_versions.c.version == int(version),
                )
            )
            await _audit_write(conn, tenant, model, _with_refs(change, version, None), bump=True)

    async def record(self, tenant: str, model: str, change: Change, *, bump: bool = False) -> None:
        """An audit entry on its own (a refused alias move, a push, an interface change)."""
        async with self._engine.begin() as conn:
            await _audit_write(conn, tenant, model, change, bump=bump)

    # ------------------------------------------------------------------ leases

    async def acquire_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        """Take or renew ``name`` for ``ttl_s``; False while another holder's lease is live."""
        now = _now()
        expires = now + dt.timedelta(seconds=ttl_s)
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(leases)
                .where(
                    leases.c.name == name,
                    or_(leases.c.holder == holder, leases.c.expires_at < now),
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

    async def release_lease(self, name: str, holder: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                delete(leases).where(leases.c.name == name, leases.c.holder == holder)
            )

    async def lease_holder(self, name: str) -> tuple[str, dt.datetime] | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(leases).where(leases.c.name == name))).first()
        return None if row is None else (row.holder, as_utc(row.expires_at))

    # ------------------------------------------------------------------ statistics

    async def publish_stats(
        self, replica: str, rows: Iterable[tuple[str, str, str, Window]]
    ) -> None:
        """Write this replica's cumulative windows (one row per version, replaced)."""
        values = [
            {
                "replica": replica,
                "tenant": tenant,
                "model": model,
                "version": int(version),
                "requests": window.requests,
                "errors": window.errors,
                "latency": window.latency,
                "updated_at": _now(),
            }
            for tenant, model, version, window in rows
        ]
        if not values:
            return
        async with self._engine.begin() as conn:
            dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
            stmt = dialect.insert(version_stats).values(values)
            stmt = stmt.on_conflict_do_update(
                index_elements=["replica", "tenant", "model", "version"],
                set_={
                    "requests": stmt.excluded.requests,
                    "errors": stmt.excluded.errors,
                    "latency": stmt.excluded.latency,
                    "updated_at": stmt.excluded.updated_at,
                },
            )
            await conn.execute(stmt)

    async def summed_stats(
        self, tenant: str, model: str, versions: Sequence[str]
    ) -> dict[str, Window]:
        """Each version's window summed over every replica that ever served it."""
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(version_stats).where(
                        version_stats.c.tenant == tenant,
                        version_stats.c.model == model,
                        version_stats.c.version.in_([int(v) for v in versions]),
                    )
                )
            ).all()
        out = {v: Window() for v in versions}
        for row in rows:
            key = str(row.version)
            out[key] = out[key].add(Window.from_dict(row._asdict()))
        return out

    async def prune_stats(self, older_than: dt.timedelta) -> int:
        """Forget rows of replicas that stopped writing long ago and serve no rollout."""
        cutoff = _now() - older_than
        async with self._engine.begin() as conn:
            result = await conn.execute(
                delete(version_stats).where(version_stats.c.updated_at < cutoff)
            )
        return int(result.rowcount or 0)


# ---------------------------------------------------------------------- helpers


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _with_refs(change: Change, from_ref: str | None, to_ref: str | None, **details: Any) -> Change:
    merged = {**(change.details or {}), **details} or None
    return Change(change.action, change.actor, change.reason, from_ref, to_ref, merged)


async def _model_id(conn: AsyncConnection, tenant: str, model: str) -> int:
    model_id = (
        await conn.execute(
            select(models.c.id).where(models.c.tenant == tenant, models.c.name == model)
        )
    ).scalar()
    if model_id is None:
        raise ModelNotFound(model)
    return int(model_id)


async def _require_version(conn: AsyncConnection, model_id: int, model: str, version: str) -> None:
    if not version.isdigit():
        raise VersionNotFound(model, version)
    found = (
        await conn.execute(
            select(model_versions.c.id).where(
                and_(
                    model_versions.c.model_id == model_id, model_versions.c.version == int(version)
                )
            )
        )
    ).first()
    if found is None:
        raise VersionNotFound(model, version)


async def _alias_version(conn: AsyncConnection, model_id: int, alias: str) -> str | None:
    value = (
        await conn.execute(
            select(aliases.c.version).where(aliases.c.model_id == model_id, aliases.c.name == alias)
        )
    ).scalar()
    return None if value is None else str(value)


async def _write_alias(
    conn: AsyncConnection, model_id: int, alias: str, version: int, actor: str
) -> None:
    await conn.execute(
        delete(aliases).where(aliases.c.model_id == model_id, aliases.c.name == alias)
    )
    await conn.execute(
        insert(aliases).values(
            model_id=model_id, name=alias, version=version, updated_at=_now(), updated_by=actor
        )
    )


async def _model_releases(
    conn: AsyncConnection, tenant: str, model: str, model_id: int
) -> ModelReleases:
    alias_rows = (await conn.execute(select(aliases).where(aliases.c.model_id == model_id))).all()
    policy = (
        await conn.execute(select(routing.c.policy).where(routing.c.model_id == model_id))
    ).scalar()
    rollout = (
        await conn.execute(
            _rollouts_query().where(
                rollouts.c.model_id == model_id, rollouts.c.state.in_(ACTIVE_STATES)
            )
        )
    ).first()
    return ModelReleases(
        tenant,
        model,
        {r.name: str(r.version) for r in alias_rows},
        None if policy is None else RoutingPolicy.from_dict(policy),
        None if rollout is None else _rollout(rollout),
    )


async def _audit_write(
    conn: AsyncConnection, tenant: str, model: str, change: Change, *, bump: bool
) -> None:
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
            at=_now(),
        )
    )
    if bump:
        await conn.execute(
            update(release_clock)
            .where(release_clock.c.id == 1)
            .values(generation=release_clock.c.generation + 1)
        )
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})


def _rollouts_query() -> Any:
    return select(models.c.tenant, models.c.name.label("model"), rollouts).join(
        models, models.c.id == rollouts.c.model_id
    )


def _rollout(row: Any) -> RolloutRecord:
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
    )


def _audit(row: Any) -> AuditRecord:
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
