"""Releases: aliases, routing policies, canary rollouts, version deletion and the audit trail.

Every change is checked before it is written: a version an alias or a policy will send traffic
to must first load (checksum, runtime, warmup) in this process; a failed load leaves the state as
it was and is recorded in the audit log with its error. Written changes reach every replica
through :class:`~modelport.services.release_follower.ReleaseFollower`.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

import structlog

from modelport.errors import Conflict, InvalidInput, ModelNotFound, NotFound
from modelport.routing import release_rules
from modelport.routing.guard import RolloutPlan, Verdict
from modelport.routing.policy import PRODUCTION, RoutingPolicy
from modelport.routing.request_stats import RequestStats
from modelport.services.release_follower import ReleaseFollower
from modelport.serving.pool import ModelPool, VersionState
from modelport.stores.audit import AuditRecord, Change
from modelport.stores.registry import ModelRecord, RegistryStore, VersionRecord
from modelport.stores.releases import (
    Check,
    ModelReleases,
    ReleaseStore,
    TargetsCheck,
    VersionCheck,
)
from modelport.stores.rollouts import RolloutRecord

log = structlog.get_logger("modelport.releases")

_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")


def check_alias_name(alias: str) -> None:
    if not _ALIAS.match(alias) or alias.isdigit():
        raise InvalidInput(
            f"alias {alias!r} is not allowed: use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter"
        )


#: Key in a rollout's snapshot holding the baseline's window of the last well-fed step.
REFERENCE = "reference"


@dataclass(frozen=True, slots=True)
class ReleaseState:
    """Everything that decides where one model's traffic goes."""

    tenant: str
    model: str
    aliases: dict[str, str]
    policy: RoutingPolicy | None
    rollout: RolloutRecord | None


def routing_of(stored: ModelReleases) -> ReleaseState:
    policy = None if stored.policy is None else RoutingPolicy.from_dict(stored.policy)
    return ReleaseState(stored.tenant, stored.model, stored.aliases, policy, stored.rollout)


def verdict_record(verdict: Verdict) -> dict[str, Any]:
    """A guard verdict as the rollout keeps it."""
    return {
        "action": verdict.action.value,
        "reason": verdict.reason,
        "figures": verdict.figures,
        "at": dt.datetime.now(dt.UTC).isoformat(),
    }


def alias_removable(model: str, alias: str) -> Check:
    """The store-side check of removing ``alias``: no routing policy may still name it."""

    def check(state: ModelReleases) -> None:
        release_rules.check_alias_removable(model, alias, routing_of(state).policy)

    return check


def policy_targets(model: str, policy: RoutingPolicy | None) -> TargetsCheck:
    """The store-side check of storing ``policy``: its targets resolve, to these versions."""

    def check(state: ModelReleases) -> list[str]:
        if policy is None:
            return []
        return release_rules.policy_versions(model, policy, state.aliases)

    return check


def version_unused(model: str, version: str) -> VersionCheck:
    """The store-side check of deleting ``version``: nothing sends traffic to it."""

    def check(state: ModelReleases, newest: str | None) -> None:
        rollout = state.rollout
        users = release_rules.version_users(
            version,
            state.aliases,
            routing_of(state).policy,
            None if rollout is None else (rollout.id, rollout.baseline, rollout.candidate),
            newest,
        )
        if users:
            raise Conflict(
                f"version {version} of model '{model}' is in use by {', '.join(users)}; "
                "move those off it first"
            )

    return check


@dataclass(frozen=True, slots=True)
class VersionOverview:
    """One version as an operator sees it: what it is, which aliases point at it, and its
    state in this replica (see ``ReleaseService.version_state``)."""

    record: VersionRecord
    aliases: list[str]
    state: str
    error: str | None


@dataclass(frozen=True, slots=True)
class ModelOverview:
    """One model as an operator sees it: its registry entry, where its traffic goes, its
    versions and what this replica serves of it (None outside a server)."""

    model: ModelRecord
    releases: ReleaseState
    versions: list[VersionOverview]
    serving: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class AliasMove:
    alias: str
    previous: str | None
    version: str


class ReleaseService:
    def __init__(
        self,
        store: ReleaseStore,
        registry: RegistryStore,
        pool: ModelPool,
        sync: ReleaseFollower | None = None,
        *,
        settle_timeout_s: float = 30.0,
    ) -> None:
        """``sync`` is given in a server: loads stay in the pool and a change
        returns once this replica serves it. Without it (the CLI), a version is loaded only
        to check it, then unloaded."""
        self._store = store
        self._registry = registry
        self._pool = pool
        self._sync = sync
        self._settle_timeout_s = settle_timeout_s

    # ------------------------------------------------------------------ reading

    async def releases(self, tenant: str, model: str) -> ReleaseState:
        return routing_of(await self._store.model_releases(tenant, model))

    async def overviews(self, tenant: str) -> list[ModelOverview]:
        """Every model of the tenant with its versions and release state, in a fixed number of
        queries however many models the tenant has."""
        registered = await self._registry.models_with_versions(tenant)
        stored = await self._store.tenant_releases(tenant)
        return [
            self._overview(
                record,
                versions,
                routing_of(
                    stored.get(record.name) or ModelReleases(tenant, record.name, {}, None, None)
                ),
            )
            for record, versions in registered
        ]

    async def overview(self, tenant: str, model: str) -> ModelOverview:
        """One model with its versions and release state."""
        record = await self._registry.get_model(tenant, model)
        if record is None:
            raise ModelNotFound(model)
        versions = await self._registry.list_versions(tenant, model)
        return self._overview(record, versions, await self.releases(tenant, model))

    async def version_overview(self, tenant: str, model: str, version: str) -> VersionOverview:
        record = await self._registry.resolve_version(tenant, model, version)
        releases = await self.releases(tenant, model)
        return self._version_overview(record, releases.aliases)

    def _overview(
        self, record: ModelRecord, versions: list[VersionRecord], releases: ReleaseState
    ) -> ModelOverview:
        return ModelOverview(
            record,
            releases,
            [self._version_overview(v, releases.aliases) for v in versions],
            self.serving_status(record.tenant, record.name),
        )

    def _version_overview(self, record: VersionRecord, aliases: dict[str, str]) -> VersionOverview:
        state, error = self.version_state(record.tenant, record.model, record.version)
        return VersionOverview(
            record,
            sorted(a for a, v in aliases.items() if v == record.version),
            state,
            error,
        )

    async def history(
        self, tenant: str, model: str, limit: int = 100, before: int | None = None
    ) -> list[AuditRecord]:
        if await self._registry.get_model(tenant, model) is None:
            raise ModelNotFound(model)
        return await self._store.audit.history(tenant, model, limit, before)

    async def rollouts(self, tenant: str, model: str) -> list[RolloutRecord]:
        if await self._registry.get_model(tenant, model) is None:
            raise ModelNotFound(model)
        return await self._store.rollouts.of_model(tenant, model)

    def serving_status(self, tenant: str, model: str) -> dict[str, Any] | None:
        if self._sync is None:
            return None
        status = self._sync.status(tenant, model)
        return {
            "installed": status.installed,
            "waiting_for": status.waiting_for,
            "error": status.error,
        }

    def version_state(self, tenant: str, model: str, version: str) -> tuple[str, str | None]:
        """A version's state in this replica (READY, LOADING, UNHEALTHY, FAILED, UNLOADING,
        or UNAVAILABLE when not loaded) and why: what made it unhealthy or is being reloaded, or
        why its last load failed."""
        entry = self._pool.get(tenant, model, version)
        if entry is not None and entry.state is not VersionState.FAILED:
            return entry.state.value, entry.error
        state = "UNAVAILABLE" if entry is None else entry.state.value
        return state, self._pool.load_error(tenant, model, version)

    # ------------------------------------------------------------------ aliases

    async def set_alias(
        self, tenant: str, model: str, alias: str, version: str, actor: str, reason: str
    ) -> AliasMove:
        check_alias_name(alias)
        await self._require_version(tenant, model, version)
        releases = await self._store.model_releases(tenant, model)
        previous = releases.aliases.get(alias)
        if previous == version:
            return AliasMove(alias, previous, version)
        await self._prepare(tenant, model, version, f"alias '{alias}'", previous, actor, reason)
        previous = await self._store.set_alias(
            tenant,
            model,
            alias,
            version,
            Change("alias_moved", actor, reason or "", details={"alias": alias}),
        )
        log.info(
            "alias_moved", tenant=tenant, model=model, alias=alias, previous=previous, to=version
        )
        await self._settle(tenant, model)
        return AliasMove(alias, previous, version)

    async def delete_alias(
        self, tenant: str, model: str, alias: str, actor: str, reason: str
    ) -> str:
        check_alias_name(alias)
        previous = await self._store.delete_alias(
            tenant,
            model,
            alias,
            Change("alias_deleted", actor, reason or "", details={"alias": alias}),
            alias_removable(model, alias),
        )
        await self._settle(tenant, model)
        return previous

    # ------------------------------------------------------------------ routing

    async def set_policy(
        self, tenant: str, model: str, policy: RoutingPolicy | None, actor: str, reason: str
    ) -> None:
        releases = await self._store.model_releases(tenant, model)
        if policy is not None:
            if policy.sticky_key is not None and not policy.sticky_key:
                raise InvalidInput("sticky_key must be a non-empty parameter name")
            for version in release_rules.policy_versions(model, policy, releases.aliases):
                await self._require_version(tenant, model, version)
                await self._prepare(
                    tenant, model, version, "the routing policy", None, actor, reason
                )
        await self._store.set_policy(
            tenant,
            model,
            None if policy is None else policy.to_dict(),
            Change("routing_changed", actor, reason or ""),
            policy_targets(model, policy),
        )
        await self._settle(tenant, model)

    # ------------------------------------------------------------------ versions

    async def delete_version(
        self, tenant: str, model: str, version: str, actor: str, reason: str
    ) -> None:
        await self._store.delete_version(
            tenant,
            model,
            version,
            Change("version_deleted", actor, reason or ""),
            version_unused(model, version),
        )
        await self._pool.unload(tenant, model, version)

    # ------------------------------------------------------------------ rollouts

    async def start_rollout(
        self,
        tenant: str,
        model: str,
        candidate: str,
        plan: RolloutPlan,
        actor: str,
        reason: str,
        baseline: str | None = None,
    ) -> RolloutRecord:
        releases = await self._store.model_releases(tenant, model)
        if baseline is None:
            baseline = releases.aliases.get(PRODUCTION)
            if baseline is None:
                raise Conflict(
                    f"model '{model}' has no '{PRODUCTION}' alias to roll out from; set it "
                    "first or name the baseline version"
                )
        if baseline == candidate:
            raise Conflict(f"the candidate is already the baseline (version {baseline})")
        await self._require_version(tenant, model, baseline)
        await self._require_version(tenant, model, candidate)
        for version in (baseline, candidate):
            await self._prepare(tenant, model, version, "the rollout", None, actor, reason)
        stats = await self._store.stats.summed(tenant, model, [baseline, candidate])
        rollout = await self._store.rollouts.start(
            tenant,
            model,
            baseline,
            candidate,
            plan.model_dump(mode="json"),
            {v: w.to_dict() for v, w in stats.items()},
            Change(
                "rollout_started",
                actor,
                reason or "",
                details={"plan": plan.model_dump(mode="json")},
            ),
        )
        await self._settle(tenant, model)
        return rollout

    async def current_rollout(self, tenant: str, model: str) -> RolloutRecord:
        releases = await self._store.model_releases(tenant, model)
        if releases.rollout is None:
            raise NotFound(f"model '{model}' has no rollout in progress")
        return releases.rollout

    async def pause(self, tenant: str, model: str, actor: str, reason: str) -> RolloutRecord:
        rollout = await self.current_rollout(tenant, model)
        if rollout.state != "running":
            raise Conflict(f"rollout {rollout.id} is {rollout.state}, not running")
        return await self._transition(rollout, "rollout_paused", actor, reason, state="paused")

    async def resume(self, tenant: str, model: str, actor: str, reason: str) -> RolloutRecord:
        rollout = await self.current_rollout(tenant, model)
        if rollout.state != "paused":
            raise Conflict(f"rollout {rollout.id} is {rollout.state}, not paused")
        # The step starts over: what happened while paused is not judged.
        snapshot = await self._snapshot(rollout)
        return await self._transition(
            rollout,
            "rollout_resumed",
            actor,
            reason,
            state="running",
            step=rollout.step,
            snapshot=snapshot,
        )

    async def abort(self, tenant: str, model: str, actor: str, reason: str) -> RolloutRecord:
        rollout = await self.current_rollout(tenant, model)
        return await self._transition(rollout, "rollout_aborted", actor, reason, state="aborted")

    async def promote(self, tenant: str, model: str, actor: str, reason: str) -> RolloutRecord:
        rollout = await self.current_rollout(tenant, model)
        return await self._transition(
            rollout, "rollout_promoted", actor, reason, state="promoted", promote=True
        )

    async def advance(
        self,
        rollout: RolloutRecord,
        actor: str,
        verdict: Verdict,
        reference: RequestStats | None = None,
    ) -> RolloutRecord:
        snapshot = await self._snapshot(rollout)
        if reference is not None:
            snapshot[REFERENCE] = reference.to_dict()
        return await self._transition(
            rollout,
            "rollout_step",
            actor,
            verdict.reason,
            step=rollout.step + 1,
            snapshot=snapshot,
            verdict=verdict,
        )

    async def roll_back(
        self, rollout: RolloutRecord, actor: str, verdict: Verdict
    ) -> RolloutRecord:
        return await self._transition(
            rollout,
            "rollout_rolled_back",
            actor,
            verdict.reason,
            state="rolled_back",
            verdict=verdict,
        )

    async def finish(self, rollout: RolloutRecord, actor: str, verdict: Verdict) -> RolloutRecord:
        return await self._transition(
            rollout,
            "rollout_promoted",
            actor,
            verdict.reason,
            state="promoted",
            promote=True,
            verdict=verdict,
        )

    async def note_verdict(self, rollout: RolloutRecord, verdict: Verdict) -> None:
        """Keep the guard's judgement of a step that holds, for ``rollout status``."""
        if (rollout.verdict or {}).get("reason") != verdict.reason:
            await self._store.rollouts.set_verdict(rollout, verdict_record(verdict))

    async def _snapshot(self, rollout: RolloutRecord) -> dict[str, Any]:
        stats = await self._store.stats.summed(
            rollout.tenant, rollout.model, [rollout.baseline, rollout.candidate]
        )
        snapshot: dict[str, Any] = {v: w.to_dict() for v, w in stats.items()}
        if REFERENCE in rollout.snapshot:
            snapshot[REFERENCE] = rollout.snapshot[REFERENCE]
        return snapshot

    async def _transition(
        self,
        rollout: RolloutRecord,
        action: str,
        actor: str,
        reason: str,
        *,
        state: str | None = None,
        step: int | None = None,
        snapshot: dict[str, Any] | None = None,
        promote: bool = False,
        verdict: Verdict | None = None,
    ) -> RolloutRecord:
        steps = rollout.plan.get("steps", [100])
        percent = float(steps[min(rollout.step, len(steps) - 1)])
        if step is not None and step != rollout.step:
            from_ref = f"{rollout.candidate}@{percent:g}%"
            to_ref = f"{rollout.candidate}@{float(steps[step]):g}%"
        elif promote:
            from_ref, to_ref = rollout.baseline, rollout.candidate
        elif state in ("rolled_back", "aborted"):
            from_ref, to_ref = rollout.candidate, rollout.baseline
        else:
            from_ref = to_ref = f"{rollout.candidate}@{percent:g}%"
        details: dict[str, Any] = {"rollout": rollout.id}
        if verdict is not None:
            details["figures"] = verdict.figures
        updated = await self._store.rollouts.transition(
            rollout,
            Change(action, actor, reason or "", from_ref, to_ref, details),
            state=state,
            step=step,
            snapshot=snapshot,
            verdict=None if verdict is None else verdict_record(verdict),
            move_alias=PRODUCTION if promote else None,
        )
        log.info(
            action,
            tenant=rollout.tenant,
            model=rollout.model,
            rollout=rollout.id,
            state=updated.state,
            step=updated.step,
            reason=reason,
        )
        await self._settle(rollout.tenant, rollout.model)
        return updated

    # ------------------------------------------------------------------ helpers

    async def _require_version(self, tenant: str, model: str, version: str) -> None:
        await self._registry.resolve_version(tenant, model, version)

    async def _prepare(
        self,
        tenant: str,
        model: str,
        version: str,
        purpose: str,
        previous: str | None,
        actor: str,
        reason: str,
    ) -> None:
        """Load ``version`` here before anything points traffic at it."""
        entry = self._pool.get(tenant, model, version)
        if entry is not None and entry.state is VersionState.READY:
            return
        record = await self._registry.resolve_version(tenant, model, version)
        loaded = await self._pool.load(record)
        if loaded.state is not VersionState.READY:
            error = loaded.error or "failed to load"
            await self._store.audit.record(
                tenant,
                model,
                Change(
                    "load_failed",
                    actor,
                    reason or "",
                    previous,
                    version,
                    {"for": purpose, "error": error},
                ),
            )
            if self._sync is None or self._pool.get(tenant, model, version) is loaded:
                await self._pool.unload(tenant, model, version, drain_timeout_s=0)
            kept = f"; {purpose} still points at version {previous}" if previous else ""
            raise Conflict(f"version {version} of model '{model}' failed to load: {error}{kept}")
        if self._sync is None:
            await self._pool.unload(tenant, model, version)

    async def _settle(self, tenant: str, model: str) -> None:
        """In a server, return once this replica serves the change (bounded)."""
        if self._sync is None:
            return
        generation = await self._store.generation()
        await self._sync.wait_installed(tenant, model, generation, self._settle_timeout_s)
