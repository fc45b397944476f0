"""API for online features: feature views, pushing values, reading them per entity.
Tenant-scoped: reading needs the ``read`` scope, defining views and pushing need ``write``;
another tenant's view answers like a missing one (404)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from modelport.api.access import ReadTenant, WriteBulkTenant, Writer
from modelport.api.deps import services
from modelport.api.responses import JsonResponse
from modelport.services.features import MAX_KEY_CHARS, MAX_KEYS, MAX_PUSH_ROWS, MAX_REFS
from modelport.stores.features import MAX_FEATURES, MAX_STRING_CHARS, MAX_TTL_S
from modelport.stores.online import FeatureSpec, FeatureView
from modelport.wiring import Services

router = APIRouter(prefix="/v1/features", tags=["features"])
ServicesDep = Annotated[Services, Depends(services)]

_NAME = r"^[a-z][a-z0-9_]{0,62}$"
_NAME_HELP = "1-63 lowercase letters, digits or '_', starting with a letter"
Name = Annotated[str, StringConstraints(pattern=_NAME)]
EntityKey = Annotated[str, StringConstraints(min_length=1, max_length=MAX_KEY_CHARS)]
Text = Annotated[str, StringConstraints(max_length=MAX_STRING_CHARS)]
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
Ref = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,62}:([a-z][a-z0-9_]{0,62}|\*)$")]
ViewName = Annotated[str, Path(pattern=_NAME, description=f"Feature view name: {_NAME_HELP}.")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


# One model per dtype, so that the schema says which default each dtype takes.
class FloatFeature(Strict):
    name: Name
    dtype: Literal["float"]
    default: Finite | None = Field(default=None, description="Served when missing or expired.")


class IntFeature(Strict):
    name: Name
    dtype: Literal["int"]
    default: Int64 | None = Field(default=None, description="Served when missing or expired.")


class BoolFeature(Strict):
    name: Name
    dtype: Literal["bool"]
    default: bool | None = Field(default=None, description="Served when missing or expired.")


class StringFeature(Strict):
    name: Name
    dtype: Literal["string"]
    default: Text | None = Field(default=None, description="Served when missing or expired.")


FeatureIn = Annotated[
    FloatFeature | IntFeature | BoolFeature | StringFeature, Field(discriminator="dtype")
]


class ViewIn(Strict):
    entity: Name = Field(description="What the view is keyed by, e.g. user.")
    features: list[FeatureIn] = Field(
        min_length=1, max_length=MAX_FEATURES, description="Distinct names."
    )
    ttl_s: float = Field(
        gt=0,
        le=MAX_TTL_S,
        description="A value older than this (by event time) reads as expired.",
    )


class FeatureOut(BaseModel):
    name: str
    dtype: str
    default: Any


class ViewOut(BaseModel):
    view: str
    version: int
    entity: str
    features: list[FeatureOut]
    ttl_s: float


class AppliedOut(BaseModel):
    view: str
    version: int
    created: bool
    """False when the definition equalled the latest version."""


Value = Int64 | Finite | bool | Text | None
IsoTime = Annotated[
    str, StringConstraints(max_length=64), Field(json_schema_extra={"format": "date-time"})
]
EpochSeconds = Annotated[float, Field(ge=0, lt=1e11)]


class RowIn(Strict):
    entity: EntityKey = Field(description="The entity key, e.g. a user id.")
    values: dict[Name, Value] = Field(
        description="Feature -> value, checked against the view's dtypes; null: no value.",
        json_schema_extra={"additionalProperties": False},
    )
    event_timestamp: IsoTime | EpochSeconds = Field(
        description="When the values were observed: ISO-8601 (UTC if it names no offset) or "
        "epoch seconds. At most an hour ahead of the server's clock."
    )


class PushIn(Strict):
    rows: list[RowIn] = Field(max_length=MAX_PUSH_ROWS)


class PushOut(BaseModel):
    written: int
    stale: int
    """Rows skipped because a newer event was already stored for their entity."""


class GetIn(Strict):
    features: list[Ref] = Field(
        min_length=1, max_length=MAX_REFS, description="'view:feature' or 'view:*'."
    )
    entities: dict[Name, list[EntityKey]] = Field(
        min_length=1,
        description='Entity type -> keys, e.g. {"user": ["u1", "u2"]}; each view named in '
        f"features needs the keys of its entity; at most {MAX_KEYS} keys in all.",
        json_schema_extra={"additionalProperties": False},
    )


@router.put("/views/{view}", summary="Define a feature view (a new version if it changed)")
async def apply_view(
    view: ViewName, body: Annotated[ViewIn, Body()], svc: ServicesDep, who: Writer
) -> AppliedOut:
    tenant, actor = who
    applied = await svc.features.apply_view(
        tenant,
        view,
        body.entity,
        [FeatureSpec(f.name, f.dtype, f.default) for f in body.features],
        body.ttl_s,
        actor,
    )
    return AppliedOut(view=view, version=applied.view.version, created=applied.created)


@router.get("/views", summary="List feature views (latest versions)")
async def list_views(svc: ServicesDep, tenant: ReadTenant) -> list[ViewOut]:
    return [_view_out(v) for v in await svc.features.list_views(tenant)]


@router.get("/views/{view}", summary="Describe a feature view")
async def get_view(
    view: ViewName,
    svc: ServicesDep,
    tenant: ReadTenant,
    version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> ViewOut:
    return _view_out(await svc.features.get_view(tenant, view, version))


@router.post(
    "/{view}/push",
    summary=f"Write feature values (at most {MAX_PUSH_ROWS} rows)",
    response_model=PushOut,
)
async def push(
    view: ViewName, body: Annotated[PushIn, Body()], svc: ServicesDep, tenant: WriteBulkTenant
) -> JsonResponse:
    result = await svc.features.push(
        tenant,
        view,
        [
            {"entity": r.entity, "values": r.values, "event_timestamp": r.event_timestamp}
            for r in body.rows
        ],
    )
    return JsonResponse({"written": result.written, "stale": result.stale})


@router.post(
    "/get",
    summary="Read features for entity keys, aligned with the keys in request order",
    responses={
        200: {
            "description": '{"results": [{"entity", "key", "features": {"view:feature": '
            '{"value", "status", "event_timestamp"}}}]}; status is present, missing or '
            "expired; a missing or expired value is the feature's default; event_timestamp "
            "is epoch seconds (null when missing)."
        }
    },
)
async def get_features(
    body: Annotated[GetIn, Body()], svc: ServicesDep, tenant: ReadTenant
) -> JsonResponse:
    results = await svc.features.get_features(tenant, body.features, body.entities)
    # Built by hand: thousands of values per response through pydantic would dominate the time.
    return JsonResponse({"results": [r.to_dict() for r in results]})


def _view_out(view: FeatureView) -> ViewOut:
    return ViewOut(
        view=view.name,
        version=view.version,
        entity=view.entity,
        features=[FeatureOut(name=f.name, dtype=f.dtype, default=f.default) for f in view.features],
        ttl_s=view.ttl_s,
    )
