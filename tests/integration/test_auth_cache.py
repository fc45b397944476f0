"""The API key cache on a real registry: unknown and forged keys are cheap, the cache stays
bounded, and revocation still reaches the caller within the cache TTL."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from modelport.errors import Unauthenticated
from modelport.services.tenancy import Authenticator, IssuedKey, TenancyService
from modelport.stores.sql import create_engine, migrate
from modelport.stores.tenancy import TenancyStore

from .conftest import BACKENDS, registry_url

pytestmark = pytest.mark.integration

TTL_S = 0.4


@dataclass
class Registry:
    engine: AsyncEngine
    store: TenancyStore
    tenancy: TenancyService
    reads: list[str]
    """Every SQL statement the registry ran since the test started."""


@pytest.fixture(scope="module", params=BACKENDS)
def registry_db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp(f"auth-{request.param}")
    with ExitStack() as stack:
        yield registry_url(request.param, workdir, stack, request)


@pytest.fixture
async def registry(registry_db: str) -> AsyncIterator[Registry]:
    await migrate(registry_db)
    engine = create_engine(registry_db)
    reads: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        reads.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    store = TenancyStore(engine)
    try:
        yield Registry(engine, store, TenancyService(store), reads)
    finally:
        await engine.dispose()


async def issue(registry: Registry, scopes: list[str] | None = None) -> IssuedKey:
    tenant = f"t-{secrets.token_hex(4)}"
    await registry.tenancy.ensure_tenant(tenant)
    return await registry.tenancy.create_key(tenant, scopes or ["infer"])


def bearer(key: str) -> str:
    return f"Bearer {key}"


def random_key(prefix: str | None = None) -> str:
    return f"mp_{prefix or secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"


async def refused(auth: Authenticator, key: str) -> bool:
    try:
        await auth.authenticate(bearer(key))
    except Unauthenticated:
        return True
    return False


async def test_a_forged_secret_of_a_known_key_costs_no_registry_read_and_no_cache_entry(
    registry: Registry,
) -> None:
    issued = await issue(registry)
    auth = Authenticator(registry.store, None, ttl_s=60.0)
    assert (await auth.authenticate(bearer(issued.secret))).tenant == issued.record.tenant
    before, sizes = len(registry.reads), auth.cache_size()

    for _ in range(200):
        assert await refused(auth, random_key(issued.record.prefix))

    assert len(registry.reads) == before
    assert auth.cache_size() == sizes
    assert (await auth.authenticate(bearer(issued.secret))).tenant == issued.record.tenant


async def test_random_keys_cost_one_read_each_and_never_evict_the_known_keys(
    registry: Registry,
) -> None:
    issued = await issue(registry)
    auth = Authenticator(registry.store, None, ttl_s=60.0, max_unknown=50)
    await auth.authenticate(bearer(issued.secret))
    before = len(registry.reads)

    keys = [random_key() for _ in range(120)]
    results = await asyncio.gather(*(refused(auth, k) for k in keys))

    assert all(results)
    assert len(registry.reads) - before == len(keys)  # one indexed read per unknown prefix
    known, unknown = auth.cache_size()
    assert known == 1 and unknown == 50  # bounded: the oldest unknown prefixes went
    # The most recent unknown key is remembered (no read); the valid key still needs none.
    before = len(registry.reads)
    assert await refused(auth, keys[-1])
    assert (await auth.authenticate(bearer(issued.secret))).tenant == issued.record.tenant
    assert len(registry.reads) == before


async def test_the_key_cache_drops_its_oldest_entry_when_full_not_everything(
    registry: Registry,
) -> None:
    keys = [await issue(registry) for _ in range(4)]
    auth = Authenticator(registry.store, None, ttl_s=60.0, max_keys=3)
    for key in keys:
        await auth.authenticate(bearer(key.secret))
    assert auth.cache_size() == (3, 0)

    before = len(registry.reads)
    for key in keys[1:]:
        await auth.authenticate(bearer(key.secret))
    assert len(registry.reads) == before  # the three newest are all still cached


async def test_malformed_and_non_key_tokens_never_reach_the_registry(registry: Registry) -> None:
    auth = Authenticator(registry.store, "mpadmin_" + secrets.token_urlsafe(32), ttl_s=60.0)
    before = len(registry.reads)
    for token in ("x", "mp_zzzzzzzzzzzz_" + "a" * 43, "mp_" + "a" * 60, "mpadmin_wrong"):
        assert await refused(auth, token)
    assert len(registry.reads) == before
    assert auth.cache_size() == (0, 0)


async def test_the_admin_key_is_recognised_without_a_registry_read(registry: Registry) -> None:
    admin_key = "mpadmin_" + secrets.token_urlsafe(32)
    auth = Authenticator(registry.store, admin_key, ttl_s=60.0)
    before = len(registry.reads)
    assert (await auth.authenticate(bearer(admin_key))).platform_admin
    assert len(registry.reads) == before


async def test_a_revoked_key_is_refused_within_the_cache_ttl(registry: Registry) -> None:
    issued = await issue(registry)
    auth = Authenticator(registry.store, None, ttl_s=TTL_S)
    await auth.authenticate(bearer(issued.secret))

    start = time.monotonic()
    await registry.tenancy.revoke_key(issued.record.tenant, issued.record.prefix)
    while not await refused(auth, issued.secret):
        assert time.monotonic() - start < TTL_S + 0.2, "the revoked key still works"
        await asyncio.sleep(0.01)
    assert time.monotonic() - start <= TTL_S + 0.1
    await asyncio.sleep(0.05)
    assert await refused(auth, issued.secret)


async def test_a_key_is_refused_the_moment_it_expires_even_when_cached(registry: Registry) -> None:
    tenant = f"t-{secrets.token_hex(4)}"
    await registry.tenancy.ensure_tenant(tenant)
    issued = await registry.tenancy.create_key(tenant, ["read"], expires_in_s=0.3)
    auth = Authenticator(registry.store, None, ttl_s=60.0)
    assert (await auth.authenticate(bearer(issued.secret))).tenant == tenant
    await asyncio.sleep(0.35)
    assert await refused(auth, issued.secret)
