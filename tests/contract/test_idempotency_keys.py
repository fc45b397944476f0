"""Idempotency-Key records against SQLite and a real PostgreSQL: one claim per key, replays
of the first answer, refusal of another request, release on failure, expiry."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import update

from modelport.errors import IdempotencyKeyInUse, IdempotencyKeyReused
from modelport.stores.idempotency import IdempotencyKeys, StoredAnswer
from modelport.stores.sql import create_engine
from modelport.stores.sql.schema import idempotency_keys

ANSWER = StoredAnswer(201, b'{"ok":true}', {"content-type": "application/json"})


@pytest.fixture
async def keys(database_url: str) -> AsyncIterator[IdempotencyKeys]:
    engine = create_engine(database_url)
    try:
        yield IdempotencyKeys(engine, ttl_s=86_400, stale_s=60)
    finally:
        await engine.dispose()


@pytest.fixture
def tenant() -> str:
    return f"t{secrets.token_hex(4)}"


async def test_the_first_answer_is_replayed_for_the_same_request(
    keys: IdempotencyKeys, tenant: str
) -> None:
    assert await keys.claim(tenant, "k1", "hash-a") is None
    await keys.record(tenant, "k1", ANSWER)
    assert await keys.claim(tenant, "k1", "hash-a") == ANSWER
    assert await keys.claim(tenant, "k1", "hash-a") == ANSWER


async def test_the_same_key_with_another_request_is_refused(
    keys: IdempotencyKeys, tenant: str
) -> None:
    assert await keys.claim(tenant, "k1", "hash-a") is None
    await keys.record(tenant, "k1", ANSWER)
    with pytest.raises(IdempotencyKeyReused, match="another request"):
        await keys.claim(tenant, "k1", "hash-b")


async def test_concurrent_claims_of_one_key_let_exactly_one_run(
    keys: IdempotencyKeys, tenant: str
) -> None:
    results = await asyncio.gather(
        *(keys.claim(tenant, "race", "hash-a") for _ in range(8)), return_exceptions=True
    )
    claimed = [r for r in results if r is None]
    refused = [r for r in results if isinstance(r, IdempotencyKeyInUse)]
    assert len(claimed) == 1 and len(refused) == 7, results


async def test_a_released_key_runs_again_and_keys_are_per_tenant(
    keys: IdempotencyKeys, tenant: str
) -> None:
    assert await keys.claim(tenant, "k1", "hash-a") is None
    await keys.release(tenant, "k1")
    assert await keys.claim(tenant, "k1", "hash-b") is None
    # Another tenant's identical key is its own.
    assert await keys.claim(tenant + "x", "k1", "hash-a") is None


async def test_expired_and_abandoned_keys_are_taken_over(
    keys: IdempotencyKeys, tenant: str, database_url: str
) -> None:
    assert await keys.claim(tenant, "old", "hash-a") is None
    await keys.record(tenant, "old", ANSWER)
    assert await keys.claim(tenant, "stuck", "hash-a") is None  # never answers

    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                update(idempotency_keys)
                .where(idempotency_keys.c.tenant == tenant, idempotency_keys.c.key == "old")
                .values(created_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=25))
            )
            await conn.execute(
                update(idempotency_keys)
                .where(idempotency_keys.c.tenant == tenant, idempotency_keys.c.key == "stuck")
                .values(created_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=2))
            )
    finally:
        await engine.dispose()

    # Past 24 h the key is free for any request; past stale_s an unanswered claim is too.
    assert await keys.claim(tenant, "old", "hash-b") is None
    assert await keys.claim(tenant, "stuck", "hash-a") is None
    await keys.record(tenant, "old", ANSWER)
    assert await keys.claim(tenant, "old", "hash-b") == ANSWER
