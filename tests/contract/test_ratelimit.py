"""The rate-limiter contract, run against every backend: in-process and a real Redis.

Each test drives a backend the way the quota gate does: ``try_acquire`` first (a decision
without waiting, or None), ``acquire`` only when it returns None.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator

import pytest

from modelport.stores.ratelimit import MemoryRateLimiter, RateDecision, RateLimiter
from modelport.stores.ratelimit_redis import RedisRateLimiter
from required_services import service_missing

REDIS_URL = os.environ.get("MODELPORT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.integration)])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[RateLimiter]:
    if request.param == "memory":
        backend: RateLimiter = MemoryRateLimiter()
    else:
        from redis.asyncio import Redis
        from redis.exceptions import RedisError

        client = Redis.from_url(REDIS_URL, socket_timeout=2)
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            await client.aclose()
            service_missing("Redis", REDIS_URL, exc)
        backend = RedisRateLimiter(client, namespace=f"modelport-test:{secrets.token_hex(4)}")
    try:
        yield backend
    finally:
        await backend.close()


async def take(limiter: RateLimiter, key: str, rate: float, burst: int) -> RateDecision:
    """One request's decision, as the quota gate asks for it."""
    decision = limiter.try_acquire(key, rate, burst)
    if decision is None:
        decision = await limiter.acquire(key, rate, burst)
    return decision


async def test_a_full_bucket_allows_its_burst_then_refuses(limiter: RateLimiter) -> None:
    decisions = [await take(limiter, "t1", rate=1.0, burst=3) for _ in range(5)]
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    assert [d.remaining for d in decisions[:3]] == [2, 1, 0]
    refused = decisions[3]
    assert refused.limit == 3
    assert 0 < refused.retry_after_s <= 1.0
    assert 2.0 <= refused.reset_s <= 3.0


async def test_tokens_refill_at_the_rate(limiter: RateLimiter) -> None:
    for _ in range(2):
        assert (await take(limiter, "t2", rate=20.0, burst=2)).allowed
    assert not (await take(limiter, "t2", rate=20.0, burst=2)).allowed
    await asyncio.sleep(0.12)  # 2.4 tokens at 20/s, capped at the burst of 2
    assert (await take(limiter, "t2", rate=20.0, burst=2)).allowed
    assert (await take(limiter, "t2", rate=20.0, burst=2)).allowed
    assert not (await take(limiter, "t2", rate=20.0, burst=2)).allowed


async def test_buckets_are_separate_per_key(limiter: RateLimiter) -> None:
    assert (await take(limiter, "a", rate=0.1, burst=1)).allowed
    assert not (await take(limiter, "a", rate=0.1, burst=1)).allowed
    assert (await take(limiter, "b", rate=0.1, burst=1)).allowed


async def test_a_refusal_is_repeated_without_waiting(limiter: RateLimiter) -> None:
    assert (await take(limiter, "c", rate=0.5, burst=1)).allowed
    assert not (await take(limiter, "c", rate=0.5, burst=1)).allowed
    again = limiter.try_acquire("c", rate=0.5, burst=1)
    assert again is not None and not again.allowed
    assert 1.0 < again.retry_after_s <= 2.0


async def test_none_from_try_acquire_takes_nothing(limiter: RateLimiter) -> None:
    first = limiter.try_acquire("d", rate=0.1, burst=1)
    if first is None:  # a backend that must ask elsewhere first
        assert (await limiter.acquire("d", rate=0.1, burst=1)).allowed
    else:
        assert first.allowed
    assert not (await take(limiter, "d", rate=0.1, burst=1)).allowed
