from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, cast

from fastapi import Depends, Request

from modelport.services.tenancy import Principal

if TYPE_CHECKING:
    from modelport.container import Services


def services(request: Request) -> Services:
    return cast("Services", request.app.state.services)


async def principal(request: Request) -> Principal:
    """The authenticated caller; a tenant's call also counts against its rate limit."""
    svc = services(request)
    caller = getattr(request.state, "principal", None)  # set by the app before routing
    if not isinstance(caller, Principal):
        caller = await svc.authenticator.authenticate(request.headers.get("authorization"))
    if caller.tenant is not None:
        await svc.quotas.check_rate(caller.tenant, caller.quotas)
    return caller


PrincipalDep = Annotated[Principal, Depends(principal)]


def tenant_with(scope: str) -> Callable[[Principal], Awaitable[str]]:
    """A dependency giving the caller's tenant, if the caller holds ``scope`` in it."""

    async def dependency(caller: PrincipalDep) -> str:
        return caller.tenant_for(scope)

    return dependency


ReadTenant = Annotated[str, Depends(tenant_with("read"))]
WriteTenant = Annotated[str, Depends(tenant_with("write"))]
