"""Who may call a route, and how large a body it takes: declared on the route itself.

Every route names exactly one ``Access`` among its dependencies (directly, or through
``ReadTenant``, ``WriteTenant``, ``CallerDep`` ...). The front door finds it before the route
runs, so it authenticates, checks the scope and the tenant's rate, and caps the body before a
byte of the body is read; the dependency then only hands the route what the door decided. A
route that declares no access, or two, stops the server at start with its name.

    @router.put("/views/{view}")
    async def apply_view(..., tenant: WriteTenant) -> ...:   # a key with the write scope
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from modelport.errors import Forbidden
from modelport.services.tenancy import Principal

KIB = 1024
MIB = 1024 * KIB

#: A route's body cap unless it declares another: JSON documents of the admin API.
DEFAULT_MAX_BODY = 1 * MIB


class Access:
    """One route's rule. ``scope``: the tenant scope it needs (None: any valid key, the route
    narrows it, or none at all when ``public``). ``max_body_bytes``: the largest body it reads."""

    __slots__ = ("max_body_bytes", "or_platform_admin", "platform_admin", "public", "scope")

    def __init__(
        self,
        *,
        scope: str | None = None,
        public: bool = False,
        platform_admin: bool = False,
        or_platform_admin: bool = False,
        max_body_bytes: int = DEFAULT_MAX_BODY,
    ) -> None:
        self.scope = scope
        self.public = public
        self.platform_admin = platform_admin
        self.or_platform_admin = or_platform_admin
        """The platform admin key may call it too (acting on any tenant the path names)."""
        self.max_body_bytes = max_body_bytes

    def __repr__(self) -> str:
        if self.public:
            return "Access(public)"
        if self.platform_admin:
            return "Access(platform admin)"
        return f"Access(scope={self.scope!r}, max_body_bytes={self.max_body_bytes})"

    def authorize(self, caller: Principal) -> str | None:
        """The tenant ``caller`` acts in for this route (None for platform-level calls);
        raises ``Forbidden`` when the key may not call it."""
        if self.platform_admin or (self.or_platform_admin and caller.platform_admin):
            if not caller.platform_admin and caller.key != AUTH_DISABLED:
                raise Forbidden("this operation needs the platform admin key")
            return caller.tenant
        if self.scope is not None:
            return caller.tenant_for(self.scope)
        return caller.tenant

    def __call__(self, request: Request) -> Principal:
        """As a dependency: the caller the front door admitted (never None past the door for
        a route that is not public)."""
        caller = request.scope.get("state", {}).get("principal")
        return caller  # type: ignore[no-any-return]  # set by the front door, a Principal


#: The principal every request acts as when authentication is off.
AUTH_DISABLED = "auth-disabled"

PUBLIC = Access(public=True)
"""Probes, server metadata and the API's own documentation: no key."""
PLATFORM_ADMIN = Access(platform_admin=True)
TENANT_ADMIN = Access(scope="admin", or_platform_admin=True)
"""A tenant's own key management: its ``admin`` scope, or the platform admin key."""
INFER = Access(scope="infer")
"""The OIP infer calls; their body cap is the model's (see ``InferenceService.body_limit``)."""
READ = Access(scope="read")
WRITE = Access(scope="write")
WRITE_BULK = Access(scope="write", max_body_bytes=8 * MIB)
"""Writes that carry many rows at once (feature pushes, golden examples)."""
WRITE_IMPORT = Access(scope="write", max_body_bytes=64 * MIB)
"""Imports of a whole file at once (a catalog as NDJSON)."""

TenantAdminDep = Annotated[Principal, Depends(TENANT_ADMIN)]
AdminDep = Annotated[Principal, Depends(PLATFORM_ADMIN)]
ReadCaller = Annotated[Principal, Depends(READ)]
WriteCaller = Annotated[Principal, Depends(WRITE)]
WriteBulkCaller = Annotated[Principal, Depends(WRITE_BULK)]
WriteImportCaller = Annotated[Principal, Depends(WRITE_IMPORT)]


def _tenant(caller: Principal) -> str:
    assert caller.tenant is not None  # noqa: S101 - the door checked the scope in a tenant
    return caller.tenant


async def _read_tenant(caller: ReadCaller) -> str:
    return _tenant(caller)


async def _write_tenant(caller: WriteCaller) -> str:
    return _tenant(caller)


async def _write_bulk_tenant(caller: WriteBulkCaller) -> str:
    return _tenant(caller)


async def _write_import_tenant(caller: WriteImportCaller) -> str:
    return _tenant(caller)


async def _writer(caller: WriteCaller) -> tuple[str, str]:
    return _tenant(caller), f"key:{caller.key}"


async def _bulk_writer(caller: WriteBulkCaller) -> tuple[str, str]:
    return _tenant(caller), f"key:{caller.key}"


ReadTenant = Annotated[str, Depends(_read_tenant)]
WriteTenant = Annotated[str, Depends(_write_tenant)]
WriteBulkTenant = Annotated[str, Depends(_write_bulk_tenant)]
WriteImportTenant = Annotated[str, Depends(_write_import_tenant)]
"""The caller's tenant (``write`` scope), for a body of up to 64 MiB."""
Writer = Annotated[tuple[str, str], Depends(_writer)]
"""The caller's tenant (``write`` scope) and how the audit log names the caller."""
BulkWriter = Annotated[tuple[str, str], Depends(_bulk_writer)]
Public = Depends(PUBLIC)
"""For ``dependencies=[Public]`` on a route that needs no key."""


def routes(api: FastAPI) -> Iterator[tuple[Any, Access]]:
    """Every route of ``api`` as it serves requests (an included router's routes with their
    full path and the router's dependencies), with its access; FastAPI's own pages and mounts
    (``/openapi.json``, ``/docs/assets``) are public."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # FastAPI before 0.165 keeps included routes flat
        contexts: Any = api.routes
    else:
        contexts = iter_route_contexts(api.routes)
    for route in contexts:
        original = getattr(route, "original_route", route)
        yield route, (access_of(route) if isinstance(original, APIRoute) else PUBLIC)


def access_of(route: Any) -> Access:
    """The one ``Access`` an API route declares; ``ValueError`` naming the route otherwise."""
    found: list[Access] = []
    _collect(route.dependant, found)
    unique = list({id(a): a for a in found}.values())
    if len(unique) != 1:
        methods = ",".join(sorted(route.methods or ()))
        what = "no access rule" if not unique else f"{len(unique)} access rules {unique}"
        raise ValueError(
            f"route {methods} {route.path} declares {what}: add exactly one of the "
            "dependencies in modelport.api.access (ReadTenant, WriteTenant, Public, ...)"
        )
    return unique[0]


def _collect(dependant: Dependant, found: list[Access]) -> None:
    for dependency in dependant.dependencies:
        if isinstance(dependency.call, Access):
            found.append(dependency.call)
        _collect(dependency, found)
