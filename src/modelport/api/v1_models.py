"""Admin API for models and their releases: versions, aliases, routing, golden examples,
canary rollouts, shadow comparison and the audit history. Tenant-scoped: reading needs the
``read`` scope, changing needs ``write``; another tenant's model answers like a missing one."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from modelport.api.access import BulkWriter, ReadTenant, Writer
from modelport.api.deps import services
from modelport.routing.guard import RolloutPlan
from modelport.routing.policy import RoutingPolicy, ShadowSpec, Split
from modelport.services.releases import ModelOverview, VersionOverview
from modelport.stores.audit import AuditRecord
from modelport.stores.rollouts import RolloutRecord
from modelport.wiring import Services

router = APIRouter(prefix="/v1/models", tags=["releases"])
ServicesDep = Annotated[Services, Depends(services)]

ModelName = Annotated[str, Path(max_length=128, description="Model name.")]
VersionNumber = Annotated[str, Path(pattern=r"^[1-9][0-9]{0,8}$", description="Version number.")]
AliasName = Annotated[
    str,
    Path(
        pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$",
        description="Alias, e.g. production: 1-64 letters, digits, '_', '.' or '-', "
        "starting with a letter.",
    ),
]
Target = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="An alias name or a version number.",
    ),
]
Reason = Annotated[str, Field(default="", max_length=1000, description="Why (kept in history).")]


# ---------------------------------------------------------------------- schemas


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class VersionSummary(BaseModel):
    version: str
    sha256: str
    created_at: dt.datetime
    created_by: str
    aliases: list[str]
    state: str
    """This replica: READY, LOADING, UNHEALTHY (a batch ran past its compute timeout; being
    reloaded), FAILED, UNLOADING, or UNAVAILABLE (not loaded)."""
    error: str | None = None
    """Why the version is unhealthy or reloading, or why its last load failed on this replica."""


class VersionDetail(VersionSummary):
    # No artifact address: it names the server's paths or buckets; sha256 identifies the artifact.
    model: str
    signature: dict[str, Any]
    config: dict[str, Any]


class VerdictOut(BaseModel):
    action: str = Field(description="hold, advance, promote or rollback.")
    reason: str = Field(description="What the guard saw and how sure it is.")
    figures: dict[str, Any]
    at: dt.datetime


class RolloutOut(BaseModel):
    id: int
    baseline: str
    candidate: str
    state: str
    step: int
    percent: float
    plan: dict[str, Any]
    reason: str = Field(description="Why the rollout was started.")
    verdict: VerdictOut | None = Field(
        description="The rollout guard's latest judgement; null until it first judged."
    )
    started_at: dt.datetime
    step_started_at: dt.datetime
    updated_at: dt.datetime
    started_by: str


class ModelOut(BaseModel):
    name: str
    required: bool
    interface: dict[str, Any] | None
    golden_examples: int
    aliases: dict[str, str]
    routing: dict[str, Any] | None
    rollout: RolloutOut | None
    versions: list[VersionSummary]
    serving: dict[str, Any] | None = None
    """What this replica has installed for the model, and what it is waiting for."""


class AliasIn(Strict):
    version: str = Field(pattern=r"^[1-9][0-9]{0,8}$", description="The version to point at.")
    reason: Reason


class AliasOut(BaseModel):
    alias: str
    version: str
    previous: str | None


class SplitIn(Strict):
    target: Target
    weight: float = Field(gt=0, le=1_000_000)


class ShadowIn(Strict):
    target: Target
    percent: float = Field(gt=0, le=100, description="Share of requests mirrored.")
    tolerance: float = Field(default=1e-4, ge=0, le=1e12)


class RoutingIn(Strict):
    splits: list[SplitIn] = Field(
        default_factory=list,
        max_length=16,
        description="Weighted split; empty: follow the production alias.",
    )
    sticky_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="Request parameter (or X-Routing-Key header) keeping a caller on a version.",
    )
    shadow: ShadowIn | None = None
    fallback: Target | None = Field(
        default=None, description="Retry a failed request once on this target."
    )
    reason: Reason

    def policy(self) -> RoutingPolicy:
        return RoutingPolicy(
            splits=tuple(Split(s.target, s.weight) for s in self.splits),
            sticky_key=self.sticky_key,
            shadow=None
            if self.shadow is None
            else ShadowSpec(self.shadow.target, self.shadow.percent, self.shadow.tolerance),
            fallback=self.fallback,
        )


class ReasonIn(Strict):
    reason: Reason


class RolloutIn(Strict):
    candidate: str = Field(pattern=r"^[1-9][0-9]{0,8}$")
    baseline: str | None = Field(
        default=None,
        pattern=r"^[1-9][0-9]{0,8}$",
        description="Defaults to the version the production alias points at.",
    )
    plan: RolloutPlan = Field(default_factory=RolloutPlan)
    reason: Reason


class GoldenExampleIn(Strict):
    request: dict[str, Any] = Field(description="An OIP v2 infer request body.")
    expected: dict[str, Any] = Field(description="Expected data per output name.")
    tolerance: float = Field(default=1e-4, ge=0, le=1e12, description="Largest abs difference.")


class GoldenIn(Strict):
    examples: list[GoldenExampleIn] = Field(
        max_length=100, description="Examples every new version must reproduce."
    )


class AuditOut(BaseModel):
    id: int
    action: str
    actor: str
    from_ref: str | None
    to_ref: str | None
    reason: str
    details: dict[str, Any] | None
    at: dt.datetime


# ---------------------------------------------------------------------- routes


@router.get("", summary="List models")
async def list_models(svc: ServicesDep, tenant: ReadTenant) -> list[ModelOut]:
    return [_model_out(overview) for overview in await svc.releases.overviews(tenant)]


@router.get("/{model}", summary="Describe a model: interface, aliases, routing, versions")
async def get_model(model: ModelName, svc: ServicesDep, tenant: ReadTenant) -> ModelOut:
    return _model_out(await svc.releases.overview(tenant, model))


@router.get("/{model}/versions/{version}", summary="Describe a version")
async def get_version(
    model: ModelName, version: VersionNumber, svc: ServicesDep, tenant: ReadTenant
) -> VersionDetail:
    overview = await svc.releases.version_overview(tenant, model, version)
    return VersionDetail(
        **_version_summary(overview).model_dump(),
        model=model,
        signature=overview.record.signature,
        config=overview.record.config,
    )


@router.delete(
    "/{model}",
    status_code=204,
    summary="Delete a model: its versions, aliases, routing, rollouts and unused artifacts",
    responses={409: {"description": "Something still depends on the model (e.g. a rollout)."}},
)
async def delete_model(
    model: ModelName,
    svc: ServicesDep,
    who: Writer,
    reason: Annotated[str, Query(max_length=1000, description="Why (kept in history).")] = "",
) -> Response:
    tenant, actor = who
    await svc.repository.delete_model(tenant, model, actor, reason)
    return Response(status_code=204)


@router.delete(
    "/{model}/versions/{version}",
    status_code=204,
    summary="Delete a version no alias, routing policy or rollout uses",
    responses={409: {"description": "The version is in use."}},
)
async def delete_version(
    model: ModelName, version: VersionNumber, svc: ServicesDep, who: Writer
) -> Response:
    tenant, actor = who
    await svc.releases.delete_version(tenant, model, version, actor, "")
    return Response(status_code=204)


@router.put(
    "/{model}/aliases/{alias}",
    summary="Point an alias at a version (loads and warms it first)",
    responses={409: {"description": "The version failed to load; the alias did not move."}},
)
async def set_alias(
    model: ModelName,
    alias: AliasName,
    body: Annotated[AliasIn, Body()],
    svc: ServicesDep,
    who: Writer,
) -> AliasOut:
    tenant, actor = who
    move = await svc.releases.set_alias(tenant, model, alias, body.version, actor, body.reason)
    return AliasOut(alias=move.alias, version=move.version, previous=move.previous)


@router.delete("/{model}/aliases/{alias}", summary="Remove an alias")
async def delete_alias(
    model: ModelName,
    alias: AliasName,
    svc: ServicesDep,
    who: Writer,
    reason: Annotated[str, Query(max_length=1000)] = "",
) -> AliasOut:
    tenant, actor = who
    previous = await svc.releases.delete_alias(tenant, model, alias, actor, reason)
    return AliasOut(alias=alias, version=previous, previous=previous)


@router.get("/{model}/routing", summary="The model's routing policy and what this replica serves")
async def get_routing(model: ModelName, svc: ServicesDep, tenant: ReadTenant) -> dict[str, Any]:
    await _require_model(svc, tenant, model)
    releases = await svc.releases.releases(tenant, model)
    return {
        "policy": None if releases.policy is None else releases.policy.to_dict(),
        "aliases": releases.aliases,
        "rollout": None if releases.rollout is None else _rollout_out(releases.rollout),
        "serving": svc.releases.serving_status(tenant, model),
    }


@router.put(
    "/{model}/routing", summary="Set the routing policy (weights, sticky key, shadow, fallback)"
)
async def set_routing(
    model: ModelName, body: Annotated[RoutingIn, Body()], svc: ServicesDep, who: Writer
) -> dict[str, Any]:
    tenant, actor = who
    await svc.releases.set_policy(tenant, model, body.policy(), actor, body.reason)
    return await get_routing(model, svc, tenant)


@router.delete("/{model}/routing", summary="Remove the routing policy (follow production)")
async def delete_routing(
    model: ModelName,
    svc: ServicesDep,
    who: Writer,
    reason: Annotated[str, Query(max_length=1000)] = "",
) -> dict[str, Any]:
    tenant, actor = who
    await svc.releases.set_policy(tenant, model, None, actor, reason)
    return await get_routing(model, svc, tenant)


@router.get("/{model}/shadow", summary="Shadow comparison on this replica")
async def shadow_summary(model: ModelName, svc: ServicesDep, tenant: ReadTenant) -> dict[str, Any]:
    await _require_model(svc, tenant, model)
    summary = svc.shadow.summary(tenant, model)
    return {"model": model, "shadow": summary}


@router.get("/{model}/history", summary="Audit history: who changed what, when, from, to and why")
async def history(
    model: ModelName,
    svc: ServicesDep,
    tenant: ReadTenant,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> list[AuditOut]:
    records = await svc.releases.history(tenant, model, limit, before)
    return [_audit_out(r) for r in records]


@router.put("/{model}/golden", summary="Set the golden examples new versions must reproduce")
async def set_golden(
    model: ModelName, body: Annotated[GoldenIn, Body()], svc: ServicesDep, who: BulkWriter
) -> dict[str, int]:
    tenant, actor = who
    examples = [e.model_dump(mode="json") for e in body.examples]
    count = await svc.registry.set_golden(tenant, model, examples, actor)
    return {"examples": count}


@router.get("/{model}/golden", summary="The golden examples")
async def get_golden(model: ModelName, svc: ServicesDep, tenant: ReadTenant) -> GoldenIn:
    description = await svc.registry.describe(tenant, model)
    return GoldenIn.model_validate({"examples": description.model.golden or []}, strict=False)


@router.post(
    "/{model}/rollouts",
    status_code=201,
    summary="Start an SLO-guarded canary rollout",
    responses={409: {"description": "A rollout is already in progress, or a version failed."}},
)
async def start_rollout(
    model: ModelName, body: Annotated[RolloutIn, Body()], svc: ServicesDep, who: Writer
) -> RolloutOut:
    tenant, actor = who
    rollout = await svc.releases.start_rollout(
        tenant, model, body.candidate, body.plan, actor, body.reason, baseline=body.baseline
    )
    return _rollout_out(rollout)


@router.get("/{model}/rollouts", summary="Rollouts of a model, newest first")
async def list_rollouts(model: ModelName, svc: ServicesDep, tenant: ReadTenant) -> list[RolloutOut]:
    return [_rollout_out(r) for r in await svc.releases.rollouts(tenant, model)]


@router.post(
    "/{model}/rollouts/current/{action}",
    summary="Pause, resume, abort or promote the rollout in progress",
)
async def act_on_rollout(
    model: ModelName,
    action: Literal["pause", "resume", "abort", "promote"],
    svc: ServicesDep,
    who: Writer,
    body: Annotated[ReasonIn | None, Body()] = None,
) -> RolloutOut:
    tenant, actor = who
    reason = "" if body is None else body.reason
    handler = {
        "pause": svc.releases.pause,
        "resume": svc.releases.resume,
        "abort": svc.releases.abort,
        "promote": svc.releases.promote,
    }[action]
    return _rollout_out(await handler(tenant, model, actor, reason))


# ---------------------------------------------------------------------- helpers


async def _require_model(svc: Services, tenant: str, model: str) -> None:
    await svc.registry.describe(tenant, model)


def _model_out(overview: ModelOverview) -> ModelOut:
    model, releases = overview.model, overview.releases
    return ModelOut(
        name=model.name,
        required=model.required,
        interface=model.interface,
        golden_examples=len(model.golden or []),
        aliases=releases.aliases,
        routing=None if releases.policy is None else releases.policy.to_dict(),
        rollout=None if releases.rollout is None else _rollout_out(releases.rollout),
        versions=[_version_summary(v) for v in overview.versions],
        serving=overview.serving,
    )


def _version_summary(overview: VersionOverview) -> VersionSummary:
    record = overview.record
    return VersionSummary(
        version=record.version,
        sha256=record.sha256,
        created_at=record.created_at,
        created_by=record.created_by,
        aliases=overview.aliases,
        state=overview.state,
        error=overview.error,
    )


def _rollout_out(rollout: RolloutRecord) -> RolloutOut:
    steps = rollout.plan.get("steps") or [100.0]
    return RolloutOut(
        id=rollout.id,
        baseline=rollout.baseline,
        candidate=rollout.candidate,
        state=rollout.state,
        step=rollout.step,
        percent=float(steps[min(rollout.step, len(steps) - 1)]),
        plan=rollout.plan,
        reason=rollout.reason,
        verdict=None if rollout.verdict is None else VerdictOut.model_validate(rollout.verdict),
        started_at=rollout.started_at,
        step_started_at=rollout.step_started_at,
        updated_at=rollout.updated_at,
        started_by=rollout.started_by,
    )


def _audit_out(record: AuditRecord) -> AuditOut:
    return AuditOut(
        id=record.id,
        action=record.action,
        actor=record.actor,
        from_ref=record.from_ref,
        to_ref=record.to_ref,
        reason=record.reason,
        details=record.details,
        at=record.at,
    )
