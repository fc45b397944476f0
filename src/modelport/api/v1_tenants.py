"""Admin API for tenants (platform admin) and their API keys (platform admin or the tenant's
own ``admin`` scope). Another tenant's keys answer exactly like a missing tenant: 404."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from modelport.api.access import AdminDep, TenantAdminDep
from modelport.api.deps import services
from modelport.errors import NotFound
from modelport.services.quotas import MAX_RATE_RPS
from modelport.services.tenancy import SCOPES, Principal
from modelport.stores.tenancy import KeyRecord, TenantRecord
from modelport.wiring import Services

router = APIRouter(prefix="/v1", tags=["tenancy"])
ServicesDep = Annotated[Services, Depends(services)]


MAX_INT = 2**31 - 1
TEN_YEARS_S = 10 * 365 * 24 * 3600.0


def _json_number(value: object) -> object:
    # JSON numbers only: not true/false (Python bools are ints) and not numeric strings.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a JSON number")
    return value


# Constraints first, so that the schema shows them as minimum/maximum; the number check wraps them.
QuotaInt = Annotated[int, Field(ge=0, le=MAX_INT), BeforeValidator(_json_number)]
RateFloat = Annotated[float, Field(ge=0, le=MAX_RATE_RPS), BeforeValidator(_json_number)]
Lifetime = Annotated[float, Field(gt=0, le=TEN_YEARS_S), BeforeValidator(_json_number)]
Overlap = Annotated[float, Field(ge=0, le=TEN_YEARS_S), BeforeValidator(_json_number)]
Scope = Literal["infer", "read", "write", "admin"]


class TenantIn(BaseModel):
    model_config = ConfigDict(strict=True)

    name: str = Field(
        pattern=r"^[a-z0-9][a-z0-9-]{0,62}$",
        description="1-63 lowercase letters, digits or '-', starting with a letter or digit.",
    )


class QuotasIn(BaseModel):
    """Per-tenant quotas; null restores the server default, 0 means unlimited."""

    rate_limit_rps: RateFloat | None = None
    rate_limit_burst: QuotaInt | None = None
    max_concurrency: QuotaInt | None = None
    max_rows: QuotaInt | None = None
    max_body_bytes: QuotaInt | None = None


class TenantOut(BaseModel):
    name: str
    status: str
    created_at: dt.datetime
    quotas: dict[str, float | int | None]


class KeyIn(BaseModel):
    model_config = ConfigDict(strict=True)

    scopes: list[Scope] = Field(
        min_length=1, description=f"A non-empty subset of {', '.join(SCOPES)}."
    )
    name: str = Field(default="", max_length=128)
    expires_in_s: Lifetime | None = None


class KeyOut(BaseModel):
    prefix: str
    tenant: str
    name: str
    scopes: list[str]
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None


class IssuedKeyOut(KeyOut):
    key: str = Field(description="The whole key. Shown once: only its hash is stored.")


class RotateIn(BaseModel):
    overlap_s: Overlap = Field(default=3600, description="How long the old key keeps working.")


def _tenant(record: TenantRecord) -> TenantOut:
    return TenantOut(
        name=record.name,
        status=record.status,
        created_at=record.created_at,
        quotas=dict(record.overrides),
    )


def _key(record: KeyRecord) -> KeyOut:
    return KeyOut(
        prefix=record.prefix,
        tenant=record.tenant,
        name=record.name,
        scopes=list(record.scopes),
        created_at=record.created_at,
        expires_at=record.expires_at,
        revoked_at=record.revoked_at,
    )


def _key_manager(caller: Principal, tenant: str) -> None:
    if caller.platform_admin:
        return
    if caller.tenant != tenant:
        raise NotFound(f"tenant '{tenant}' does not exist")
    caller.tenant_for("admin")


@router.post("/tenants", response_model=TenantOut, status_code=201)
async def create_tenant(body: TenantIn, _caller: AdminDep, svc: ServicesDep) -> TenantOut:
    return _tenant(await svc.tenancy.create_tenant(body.name))


@router.get("/tenants", response_model=list[TenantOut])
async def list_tenants(_caller: AdminDep, svc: ServicesDep) -> list[TenantOut]:
    return [_tenant(t) for t in await svc.tenancy.list_tenants()]


@router.post("/tenants/{tenant}/suspend", response_model=TenantOut)
async def suspend_tenant(tenant: str, _caller: AdminDep, svc: ServicesDep) -> TenantOut:
    return _tenant(await svc.tenancy.set_suspended(tenant, True))


@router.post("/tenants/{tenant}/resume", response_model=TenantOut)
async def resume_tenant(tenant: str, _caller: AdminDep, svc: ServicesDep) -> TenantOut:
    return _tenant(await svc.tenancy.set_suspended(tenant, False))


@router.put("/tenants/{tenant}/quotas", response_model=TenantOut)
async def set_quotas(tenant: str, body: QuotasIn, _caller: AdminDep, svc: ServicesDep) -> TenantOut:
    """Replace the tenant's quotas; every replica applies them within the key cache TTL."""
    return _tenant(await svc.tenancy.set_quotas(tenant, body.model_dump()))


@router.post("/tenants/{tenant}/keys", response_model=IssuedKeyOut, status_code=201)
async def create_key(
    tenant: str, body: KeyIn, caller: TenantAdminDep, svc: ServicesDep
) -> IssuedKeyOut:
    _key_manager(caller, tenant)
    issued = await svc.tenancy.create_key(
        tenant, list(body.scopes), name=body.name, expires_in_s=body.expires_in_s
    )
    return IssuedKeyOut(**_key(issued.record).model_dump(), key=issued.secret)


@router.get("/tenants/{tenant}/keys", response_model=list[KeyOut])
async def list_keys(tenant: str, caller: TenantAdminDep, svc: ServicesDep) -> list[KeyOut]:
    _key_manager(caller, tenant)
    return [_key(k) for k in await svc.tenancy.list_keys(tenant)]


@router.post("/tenants/{tenant}/keys/{prefix}/revoke", status_code=204)
async def revoke_key(tenant: str, prefix: str, caller: TenantAdminDep, svc: ServicesDep) -> None:
    _key_manager(caller, tenant)
    await svc.tenancy.revoke_key(tenant, prefix)


@router.post("/tenants/{tenant}/keys/{prefix}/rotate", response_model=IssuedKeyOut, status_code=201)
async def rotate_key(
    tenant: str,
    prefix: str,
    caller: TenantAdminDep,
    svc: ServicesDep,
    body: Annotated[RotateIn | None, Body()] = None,
) -> IssuedKeyOut:
    _key_manager(caller, tenant)
    overlap_s = (body or RotateIn()).overlap_s
    issued = await svc.tenancy.rotate_key(tenant, prefix, overlap_s)
    return IssuedKeyOut(**_key(issued.record).model_dump(), key=issued.secret)
