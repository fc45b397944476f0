"""Tenants, API keys and who is calling.

A key is ``mp_<prefix>_<secret>``: 256 random bits, shown once. Only its SHA-256 and the public
prefix are stored; a fast hash is enough because the secret is random, not a password. Lookups
are cached for ``ttl_s`` so authentication costs a dictionary lookup on the hot path, and a
revoked key stops working on every replica within that time.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

import structlog

from modelport.errors import Forbidden, InvalidInput, NotFound, Unauthenticated
from modelport.services.quotas import Quotas, check_overrides
from modelport.stores.tenancy import QUOTA_FIELDS, KeyRecord, TenancyStore, TenantRecord

log = structlog.get_logger("modelport.auth")

SCOPES = ("infer", "read", "write", "admin")
_TENANT = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_KEY = re.compile(r"mp_([0-9a-f]{12})_[A-Za-z0-9_-]{43}")
_CACHE_LIMIT = 100_000
NO_QUOTAS = Quotas()
MAX_LIFETIME_S = 10 * 365 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Principal:
    tenant: str | None
    scopes: frozenset[str]
    key: str
    """The key's public prefix (``platform-admin`` for the bootstrap key): safe to log."""
    platform_admin: bool = False
    quotas: Quotas = NO_QUOTAS

    def tenant_for(self, scope: str) -> str:
        """The tenant this caller acts in, if it holds ``scope`` there."""
        if self.tenant is None:
            raise Forbidden(
                "the platform admin key manages tenants and keys; use a tenant's key for this"
            )
        if scope not in self.scopes and "admin" not in self.scopes:
            raise Forbidden(f"this API key lacks the '{scope}' scope")
        return self.tenant

    def require_platform_admin(self) -> None:
        if not self.platform_admin:
            raise Forbidden("this operation needs the platform admin key")


@dataclass(frozen=True, slots=True)
class IssuedKey:
    record: KeyRecord
    secret: str
    """The whole key. It exists only in this response; the store keeps its hash."""


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    prefix = secrets.token_hex(6)
    return f"mp_{prefix}_{secrets.token_urlsafe(32)}", prefix


def check_tenant_name(name: str) -> None:
    if not _TENANT.fullmatch(name):
        raise InvalidInput(
            f"tenant name {name!r} is not allowed: use 1-63 lowercase letters, digits or '-', "
            "starting with a letter or digit"
        )


def check_scopes(scopes: list[str]) -> tuple[str, ...]:
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise InvalidInput(f"scopes must be a non-empty subset of {', '.join(SCOPES)}")
    return tuple(s for s in SCOPES if s in scopes)


class TenancyService:
    def __init__(self, store: TenancyStore) -> None:
        self._store = store

    async def create_tenant(self, name: str) -> TenantRecord:
        check_tenant_name(name)
        return await self._store.create_tenant(name)

    async def ensure_tenant(self, name: str) -> TenantRecord:
        check_tenant_name(name)
        return await self._store.get_tenant(name) or await self._store.create_tenant(name)

    async def list_tenants(self) -> list[TenantRecord]:
        return await self._store.list_tenants()

    async def set_suspended(self, name: str, suspended: bool) -> TenantRecord:
        if not await self._store.set_status(name, "suspended" if suspended else "active"):
            raise NotFound(f"tenant '{name}' does not exist")
        tenant = await self._store.get_tenant(name)
        assert tenant is not None  # noqa: S101 - just updated
        return tenant

    async def set_quotas(self, name: str, overrides: dict[str, float | int | None]) -> TenantRecord:
        unknown = set(overrides) - set(QUOTA_FIELDS)
        if unknown:
            raise InvalidInput(f"unknown quota(s) {', '.join(sorted(unknown))}")
        check_overrides(overrides)
        if not await self._store.set_quotas(name, overrides):
            raise NotFound(f"tenant '{name}' does not exist")
        tenant = await self._store.get_tenant(name)
        assert tenant is not None  # noqa: S101 - just updated
        return tenant

    async def create_key(
        self,
        tenant: str,
        scopes: list[str],
        *,
        name: str = "",
        expires_in_s: float | None = None,
    ) -> IssuedKey:
        if await self._store.get_tenant(tenant) is None:
            raise NotFound(f"tenant '{tenant}' does not exist")
        checked = check_scopes(scopes)
        if expires_in_s is not None and not 0 < expires_in_s <= MAX_LIFETIME_S:
            raise InvalidInput(f"expires_in_s must be between 0 and {MAX_LIFETIME_S:g} seconds")
        expires_at = (
            None
            if expires_in_s is None
            else dt.datetime.now(dt.UTC) + dt.timedelta(seconds=expires_in_s)
        )
        secret, prefix = new_key()
        record = await self._store.add_key(
            tenant,
            prefix=prefix,
            key_hash=hash_key(secret),
            name=name[:128],
            scopes=checked,
            expires_at=expires_at,
        )
        return IssuedKey(record, secret)

    async def list_keys(self, tenant: str) -> list[KeyRecord]:
        if await self._store.get_tenant(tenant) is None:
            raise NotFound(f"tenant '{tenant}' does not exist")
        return await self._store.list_keys(tenant)

    async def revoke_key(self, tenant: str, prefix: str) -> None:
        if not await self._store.revoke_key(tenant, prefix, dt.datetime.now(dt.UTC)):
            raise NotFound(f"tenant '{tenant}' has no active key '{prefix}'")

    async def rotate_key(self, tenant: str, prefix: str, overlap_s: float) -> IssuedKey:
        """A new key with the old one's scopes; the old key keeps working for ``overlap_s``."""
        old = await self._store.key_by_prefix(prefix)
        now = dt.datetime.now(dt.UTC)
        if old is None or old.tenant != tenant or not old.valid_at(now):
            raise NotFound(f"tenant '{tenant}' has no active key '{prefix}'")
        if not 0 <= overlap_s <= MAX_LIFETIME_S:
            raise InvalidInput(f"overlap_s must be between 0 and {MAX_LIFETIME_S:g} seconds")
        issued = await self.create_key(tenant, list(old.scopes), name=old.name)
        until = now + dt.timedelta(seconds=overlap_s)
        if old.expires_at is None or until < old.expires_at:
            await self._store.expire_key(tenant, prefix, until)
        return issued


class Authenticator:
    def __init__(
        self,
        store: TenancyStore,
        admin_key: str | None,
        ttl_s: float = 1.0,
        *,
        defaults: Quotas = NO_QUOTAS,
        open_as_tenant: str | None = None,
    ) -> None:
        """``open_as_tenant`` turns authentication off: every caller acts in that tenant."""
        self._store = store
        self._defaults = defaults
        self._open = (
            None
            if open_as_tenant is None
            else Principal(open_as_tenant, frozenset(SCOPES), "auth-disabled", quotas=defaults)
        )
        self._admin_hash = hash_key(admin_key) if admin_key else None
        self._ttl_s = ttl_s
        # Keyed by the token's digest: the cache never holds a key in plain text.
        self._cache: dict[bytes, tuple[float, Principal | None, dt.datetime | None]] = {}
        self._pending: dict[bytes, asyncio.Task[tuple[Principal | None, dt.datetime | None]]] = {}

    async def authenticate(self, authorization: str | None) -> Principal:
        principal = self.cached(authorization)
        if principal is not None:
            return principal
        token = _bearer(authorization)
        digest = hashlib.sha256(token.encode()).digest()
        principal, expires_at = await asyncio.shield(self._refresh(token, digest))
        return _valid(principal, expires_at)

    def cached(self, authorization: str | None) -> Principal | None:
        """The caller from the cache without waiting, or None when the key must be looked up
        (``authenticate`` does that). Raises ``Unauthenticated`` for a missing or malformed
        header and for a key the cache knows to be invalid."""
        if self._open is not None:
            return self._open
        token = _bearer(authorization)
        digest = hashlib.sha256(token.encode()).digest()
        hit = self._cache.get(digest)
        if hit is None:
            return None
        fresh_until, principal, expires_at = hit
        now = time.monotonic()
        if now < fresh_until:
            return _valid(principal, expires_at)
        if now < fresh_until + self._ttl_s:
            # Slightly stale: answer from the cache and refresh in the background, so
            # requests never queue behind the database when an entry expires.
            self._refresh(token, digest)
            return _valid(principal, expires_at)
        return None

    def _refresh(
        self, token: str, digest: bytes
    ) -> asyncio.Task[tuple[Principal | None, dt.datetime | None]]:
        """One lookup per key at a time, however many requests miss together."""
        task = self._pending.get(digest)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._lookup_and_cache(token, digest))
            self._pending[digest] = task
            task.add_done_callback(lambda done: self._settled(digest, done))
        return task

    def _settled(
        self, digest: bytes, task: asyncio.Task[tuple[Principal | None, dt.datetime | None]]
    ) -> None:
        self._pending.pop(digest, None)
        if not task.cancelled() and task.exception() is not None:
            # Waiting callers see the error; a background refresh only logs it.
            log.warning("key_lookup_failed", error=type(task.exception()).__name__)

    async def _lookup_and_cache(
        self, token: str, digest: bytes
    ) -> tuple[Principal | None, dt.datetime | None]:
        principal, expires_at = await self._lookup(token)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[digest] = (time.monotonic() + self._ttl_s, principal, expires_at)
        return principal, expires_at

    async def _lookup(self, token: str) -> tuple[Principal | None, dt.datetime | None]:
        if self._admin_hash is not None and hmac.compare_digest(hash_key(token), self._admin_hash):
            return Principal(None, frozenset(SCOPES), "platform-admin", platform_admin=True), None
        match = _KEY.fullmatch(token)
        if match is None:
            return None, None
        record = await self._store.key_by_prefix(match.group(1))
        now = dt.datetime.now(dt.UTC)
        if (
            record is None
            or not hmac.compare_digest(hash_key(token), record.key_hash)
            or not record.valid_at(now)
        ):
            return None, None
        tenant = await self._store.get_tenant(record.tenant)
        if tenant is None or not tenant.active:
            return None, None
        principal = Principal(
            record.tenant,
            frozenset(record.scopes),
            record.prefix,
            quotas=self._defaults.merged(tenant.overrides),
        )
        return principal, record.expires_at


def _valid(principal: Principal | None, expires_at: dt.datetime | None) -> Principal:
    if principal is None or (expires_at is not None and dt.datetime.now(dt.UTC) >= expires_at):
        raise Unauthenticated("the API key is not valid (unknown, revoked or expired)")
    return principal


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise Unauthenticated("this endpoint needs an API key: send 'Authorization: Bearer <key>'")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("send the API key as 'Authorization: Bearer <key>'")
    return token.strip()
