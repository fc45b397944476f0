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
_KEY_LENGTH = 59
#: Key prefixes the cache remembers; past that, the oldest entry goes.
MAX_CACHED_KEYS = 100_000
#: Prefixes the registry does not hold, remembered so a repeated unknown key costs no read.
MAX_CACHED_UNKNOWN = 10_000
#: Registry reads for prefixes the cache does not know, at once (a random key costs one).
UNKNOWN_LOOKUPS = 4
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


@dataclass(frozen=True, slots=True)
class _Known:
    """What a replica remembers of one key prefix: the key's digest and who it authenticates
    (None: revoked, expired, or its tenant suspended)."""

    fresh_until: float
    stale_until: float
    digest: bytes
    principal: Principal | None
    expires_at: dt.datetime | None


class Authenticator:
    """Who is calling, from the ``Authorization`` header.

    The cache is keyed by a key's public prefix (its id part), never by the key. A key whose
    prefix the cache knows is checked against the stored digest in memory, so a forged
    secret costs one hash and adds nothing. A prefix the registry does not hold costs one
    indexed read and lands in a bounded cache of unknown prefixes; at most
    ``UNKNOWN_LOOKUPS`` such reads run at once, so a flood of random keys cannot take the
    database from real callers. Both caches drop their oldest entry when full (a key in use
    is re-inserted on every refresh), never everything at once.

    An entry is fresh for half of ``ttl_s``, then answered while one background read
    refreshes it, and no longer used once ``ttl_s`` has passed since its read: a revoked key
    stops working within ``ttl_s``.
    """

    def __init__(
        self,
        store: TenancyStore,
        admin_key: str | None,
        ttl_s: float = 1.0,
        *,
        defaults: Quotas = NO_QUOTAS,
        open_as_tenant: str | None = None,
        max_keys: int = MAX_CACHED_KEYS,
        max_unknown: int = MAX_CACHED_UNKNOWN,
    ) -> None:
        """``open_as_tenant`` turns authentication off: every caller acts in that tenant."""
        self._store = store
        self._defaults = defaults
        self._open = (
            None
            if open_as_tenant is None
            else Principal(open_as_tenant, frozenset(SCOPES), "auth-disabled", quotas=defaults)
        )
        self._admin_digest = hashlib.sha256(admin_key.encode()).digest() if admin_key else None
        self._admin = Principal(None, frozenset(SCOPES), "platform-admin", platform_admin=True)
        self._ttl_s = ttl_s
        self._max_keys = max_keys
        self._max_unknown = max_unknown
        self._known: dict[str, _Known] = {}
        self._unknown: dict[str, float] = {}
        """Prefix -> until when the registry is taken not to hold it."""
        self._pending: dict[str, asyncio.Task[_Known | None]] = {}
        self._unknown_reads = asyncio.Semaphore(UNKNOWN_LOOKUPS)

    def cache_size(self) -> tuple[int, int]:
        """Prefixes cached: (known to the registry, unknown to it)."""
        return len(self._known), len(self._unknown)

    async def authenticate(self, authorization: str | None) -> Principal:
        principal = self.cached(authorization)
        if principal is not None:
            return principal
        token = _bearer(authorization)
        if _KEY.fullmatch(token) is None:
            return self._as_admin(token)
        known = await asyncio.shield(self._refresh(token[3:15]))
        return _check(known, token)

    def cached(self, authorization: str | None) -> Principal | None:
        """The caller from the cache without waiting, or None when the key's prefix must be
        looked up (``authenticate`` does that). Raises ``Unauthenticated`` for a missing or
        malformed header and for a key the cache knows to be invalid."""
        if self._open is not None:
            return self._open
        token = _bearer(authorization)
        if len(token) != _KEY_LENGTH or not token.startswith("mp_") or token[15] != "_":
            return self._as_admin(token)
        prefix = token[3:15]
        known = self._known.get(prefix)
        now = time.monotonic()
        if known is None:
            until = self._unknown.get(prefix)
            if until is not None and now < until:
                raise _invalid()
            return None
        if now < known.fresh_until:
            return _check(known, token)
        if now < known.stale_until:
            # Answer from the cache and refresh in the background, so requests never queue
            # behind the database when an entry ages.
            self._refresh(prefix)
            return _check(known, token)
        return None

    def _as_admin(self, token: str) -> Principal:
        digest = hashlib.sha256(token.encode()).digest()
        if self._admin_digest is not None and hmac.compare_digest(digest, self._admin_digest):
            return self._admin
        raise _invalid()

    def _refresh(self, prefix: str) -> asyncio.Task[_Known | None]:
        """One lookup per prefix at a time, however many requests miss together."""
        task = self._pending.get(prefix)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._lookup_and_cache(prefix))
            self._pending[prefix] = task
            task.add_done_callback(lambda done: self._settled(prefix, done))
        return task

    def _settled(self, prefix: str, task: asyncio.Task[_Known | None]) -> None:
        self._pending.pop(prefix, None)
        if not task.cancelled() and task.exception() is not None:
            # Waiting callers see the error; a background refresh only logs it.
            log.warning("key_lookup_failed", error=type(task.exception()).__name__)

    async def _lookup_and_cache(self, prefix: str) -> _Known | None:
        started = time.monotonic()
        if prefix in self._known:
            known = await self._lookup(prefix, started)
        else:
            async with self._unknown_reads:
                known = await self._lookup(prefix, started)
        self._known.pop(prefix, None)
        if known is None:
            self._unknown.pop(prefix, None)
            if len(self._unknown) >= self._max_unknown:
                del self._unknown[next(iter(self._unknown))]
            self._unknown[prefix] = started + self._ttl_s
            return None
        self._unknown.pop(prefix, None)
        if len(self._known) >= self._max_keys:
            del self._known[next(iter(self._known))]
        self._known[prefix] = known
        return known

    async def _lookup(self, prefix: str, started: float) -> _Known | None:
        record = await self._store.key_by_prefix(prefix)
        if record is None:
            return None
        principal: Principal | None = None
        if record.valid_at(dt.datetime.now(dt.UTC)):
            tenant = await self._store.get_tenant(record.tenant)
            if tenant is not None and tenant.active:
                principal = Principal(
                    record.tenant,
                    frozenset(record.scopes),
                    record.prefix,
                    quotas=self._defaults.merged(tenant.overrides),
                )
        return _Known(
            started + self._ttl_s / 2,
            started + self._ttl_s,
            bytes.fromhex(record.key_hash),
            principal,
            record.expires_at,
        )


def _check(known: _Known | None, token: str) -> Principal:
    if known is None or known.principal is None:
        raise _invalid()
    if not hmac.compare_digest(hashlib.sha256(token.encode()).digest(), known.digest):
        raise _invalid()
    if known.expires_at is not None and dt.datetime.now(dt.UTC) >= known.expires_at:
        raise _invalid()
    return known.principal


def _invalid() -> Unauthenticated:
    return Unauthenticated("the API key is not valid (unknown, revoked or expired)")


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise Unauthenticated("this endpoint needs an API key: send 'Authorization: Bearer <key>'")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("send the API key as 'Authorization: Bearer <key>'")
    return token.strip()
