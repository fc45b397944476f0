"""Where a model's traffic goes, as stored: its aliases, its routing policy and its active
rollout, read in one go and changed atomically with the audit entry and the release clock.

The store applies no routing rule. A change that is only allowed in some states (removing an
alias a policy routes to, deleting a version something serves) takes a ``check`` from the
caller, run on the model's state read inside the same transaction: the rule lives above, the
atomicity here. The other release tables have stores of their own, reached from this one:
``rollouts``, ``audit``, ``leases`` and ``stats``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from modelport.errors import Conflict
from modelport.stores import aliases, audit, release_clock, routing_policies
from modelport.stores.audit import AuditLog, Change
from modelport.stores.leases import LeaseStore
from modelport.stores.model_rows import model_id, newest_version, require_version
from modelport.stores.release_clock import CHANNEL
from modelport.stores.rollouts import (
    ACTIVE_STATES,
    RolloutRecord,
    RolloutStore,
    active_for,
    query_rollouts,
    record_of,
)
from modelport.stores.sql.schema import model_versions, models, rollouts
from modelport.stores.version_stats import VersionStatsStore

__all__ = ["CHANNEL", "ModelReleases", "ReleaseSnapshot", "ReleaseStore"]


@dataclass(frozen=True, slots=True)
class ModelReleases:
    """Everything that decides where one model's traffic goes, as stored."""

    tenant: str
    model: str
    aliases: dict[str, str]
    policy: dict[str, Any] | None
    rollout: RolloutRecord | None


@dataclass(frozen=True, slots=True)
class ReleaseSnapshot:
    generation: int
    models: dict[tuple[str, str], ModelReleases]


#: Raises (a domain error) when the change it guards is not allowed in this state.
Check = Callable[[ModelReleases], None]
#: Like ``Check``, and names the versions the new state will send traffic to.
TargetsCheck = Callable[[ModelReleases], Iterable[str]]
#: Like ``Check``, also given the model's newest version.
VersionCheck = Callable[[ModelReleases, str | None], None]


class ReleaseStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self.rollouts = RolloutStore(engine)
        self.audit = AuditLog(engine)
        self.leases = LeaseStore(engine)
        self.stats = VersionStatsStore(engine)

    # ------------------------------------------------------------------ reading

    async def generation(self) -> int:
        async with self._engine.connect() as conn:
            return await release_clock.read(conn)

    async def snapshot(self) -> ReleaseSnapshot:
        """Every model that has an alias, a policy or an active rollout, in one read."""
        async with self._engine.connect() as conn:
            generation = await release_clock.read(conn)
            found = await _releases_of(conn, None)
        return ReleaseSnapshot(generation, found)

    async def tenant_releases(self, tenant: str) -> dict[str, ModelReleases]:
        """The release state of each of the tenant's models that has an alias, a policy or an
        active rollout, by model name, in three queries however many models there are."""
        async with self._engine.connect() as conn:
            found = await _releases_of(conn, tenant)
        return {model: releases for (_, model), releases in found.items()}

    async def model_releases(self, tenant: str, model: str) -> ModelReleases:
        async with self._engine.connect() as conn:
            return await _model_releases(conn, tenant, model, await model_id(conn, tenant, model))

    # ------------------------------------------------------------------ writing

    async def set_alias(
        self, tenant: str, model: str, alias: str, version: str, change: Change
    ) -> str | None:
        """Point ``alias`` at ``version``; returns the version it pointed at before."""
        async with self._engine.begin() as conn:
            found = await model_id(conn, tenant, model)
            await require_version(conn, found, model, version)
            previous = await aliases.version_of(conn, found, alias)
            await aliases.write(conn, found, alias, int(version), change.actor)
            await audit.write(conn, tenant, model, change.with_refs(previous, version), bump=True)
        return previous

    async def delete_alias(
        self, tenant: str, model: str, alias: str, change: Change, check: Check | None = None
    ) -> str:
        """Remove ``alias`` (after ``check`` allowed it); returns the version it pointed at."""
        async with self._engine.begin() as conn:
            found = await model_id(conn, tenant, model)
            previous = await aliases.version_of(conn, found, alias)
            if previous is None:
                raise Conflict(f"model '{model}' has no alias '{alias}'")
            if check is not None:
                check(await _model_releases(conn, tenant, model, found))
            await aliases.remove(conn, found, alias)
            await audit.write(conn, tenant, model, change.with_refs(previous, None), bump=True)
        return previous

    async def set_policy(
        self,
        tenant: str,
        model: str,
        policy: dict[str, Any] | None,
        change: Change,
        check: TargetsCheck | None = None,
    ) -> None:
        """Store ``policy`` (None removes it). ``check`` names the versions it routes to given
        the current aliases; each must exist."""
        async with self._engine.begin() as conn:
            found = await model_id(conn, tenant, model)
            if check is not None:
                for version in check(await _model_releases(conn, tenant, model, found)):
                    await require_version(conn, found, model, version)
            await routing_policies.write(conn, found, policy, change.actor)
            details = {"policy": policy}
            await audit.write(
                conn,
                tenant,
                model,
                Change(change.action, change.actor, change.reason, details=details),
                bump=True,
            )

    async def delete_version(
        self,
        tenant: str,
        model: str,
        version: str,
        change: Change,
        check: VersionCheck | None = None,
    ) -> None:
        """Delete ``version`` once ``check`` (given the model's state and its newest version)
        allowed it."""
        async with self._engine.begin() as conn:
            found = await model_id(conn, tenant, model)
            await require_version(conn, found, model, version)
            if check is not None:
                releases = await _model_releases(conn, tenant, model, found)
                check(releases, await newest_version(conn, found))
            await conn.execute(
                delete(model_versions).where(
                    model_versions.c.model_id == found,
                    model_versions.c.version == int(version),
                )
            )
            await audit.write(conn, tenant, model, change.with_refs(version, None), bump=True)


async def _releases_of(
    conn: AsyncConnection, tenant: str | None
) -> dict[tuple[str, str], ModelReleases]:
    """Every model (of ``tenant``, or of every tenant) with an alias, a policy or an active
    rollout, by (tenant, model)."""
    alias_rows = await aliases.read_all(conn, tenant)
    policy_rows = await routing_policies.read_all(conn, tenant)
    active = query_rollouts().where(rollouts.c.state.in_(ACTIVE_STATES))
    if tenant is not None:
        active = active.where(models.c.tenant == tenant)
    rollout_rows = (await conn.execute(active)).all()
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for row in alias_rows:
        entry = found.setdefault((row.tenant, row.model), {"aliases": {}})
        entry["aliases"][row.name] = str(row.version)
    for row in policy_rows:
        found.setdefault((row.tenant, row.model), {"aliases": {}})["policy"] = dict(row.policy)
    for row in rollout_rows:
        found.setdefault((row.tenant, row.model), {"aliases": {}})["rollout"] = record_of(row)
    return {
        key: ModelReleases(key[0], key[1], v["aliases"], v.get("policy"), v.get("rollout"))
        for key, v in found.items()
    }


async def _model_releases(
    conn: AsyncConnection, tenant: str, model: str, found: int
) -> ModelReleases:
    return ModelReleases(
        tenant,
        model,
        await aliases.read(conn, found),
        await routing_policies.read(conn, found),
        await active_for(conn, found),
    )
