"""One tenant limit shared by replicas through a real Redis: accuracy, cost, outages.

The replicas are three ``RedisRateLimiter`` objects in this process, each with its own Redis
connection pool, driven by their own tasks: the same calls a modelport replica's quota gate
makes, without HTTP around them (``tests/integration/test_quotas.py`` covers that layer).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable

import pytest
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from modelport.errors import TooManyRequests
from modelport.services.quotas import QuotaGate, Quotas
from modelport.stores.ratelimit_redis import RedisRateLimiter
from required_services import service_missing

pytestmark = pytest.mark.integration

REDIS_URL = os.environ.get("MODELPORT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
async def replicas() -> AsyncIterator[Callable[..., RedisRateLimiter]]:
    """Makes limiters that share one namespace in the real Redis, as replicas do."""
    namespace = f"modelport-test:{secrets.token_hex(4)}"
    made: list[RedisRateLimiter] = []

    def replica(**options: float) -> RedisRateLimiter:
        client = Redis.from_url(REDIS_URL, socket_timeout=2)
        made.append(RedisRateLimiter(client, namespace=namespace, **options))
        return made[-1]

    probe = Redis.from_url(REDIS_URL, socket_timeout=2)
    try:
        await probe.ping()
    except (RedisError, OSError) as exc:
        service_missing("Redis", REDIS_URL, exc)
    finally:
        await probe.aclose()
    try:
        yield replica
    finally:
        for limiter in made:
            await limiter.close()


async def drive(
    gate: QuotaGate, quotas: Quotas, until: float, window: tuple[float, float], per_ms: int
) -> tuple[int, int, int]:
    """Offer about ``per_ms`` requests a millisecond until ``until``; (admitted inside
    ``window``, decided without waiting, all requests)."""
    admitted = at_once = total = 0
    while (now := time.monotonic()) < until:
        for _ in range(per_ms):
            total += 1
            try:
                if gate.check_rate_now("acme", quotas):
                    at_once += 1
                else:
                    await gate.check_rate("acme", quotas)
            except TooManyRequests:
                continue
            if window[0] <= now < window[1]:
                admitted += 1
        await asyncio.sleep(0.001)
    return admitted, at_once, total


@pytest.mark.timeout(60)
async def test_three_replicas_admit_the_shared_rate_within_5_percent(
    replicas: Callable[..., RedisRateLimiter],
) -> None:
    rate = 1000.0
    quotas = Quotas(rate_limit_rps=rate, rate_limit_burst=500)
    # A loaded test machine can stall this loop past the 100 ms default; what is checked here
    # is the arithmetic of leases, so give Redis the time it needs.
    gates = [QuotaGate(replicas(timeout_s=2.0)) for _ in range(3)]
    start = time.monotonic()
    # 1 s drains the burst; then one 10 s window, each replica offered ~3x the whole limit.
    window = (start + 1.0, start + 11.0)
    results = await asyncio.gather(
        *(drive(gate, quotas, window[1], window, per_ms=4) for gate in gates)
    )
    admitted = sum(r[0] for r in results)
    offered = sum(r[2] for r in results) * 10 / (window[1] - start)
    assert offered > 5 * rate * 10, results  # driven well above the limit
    assert abs(admitted - rate * 10) <= 0.05 * rate * 10, results
    assert all(r[0] > 0.15 * rate * 10 for r in results), results  # every replica is served
    assert all(gate.limiter_errors == 0 for gate in gates)


async def test_requests_with_leased_tokens_wait_for_nothing(
    replicas: Callable[..., RedisRateLimiter],
) -> None:
    limiter = replicas()
    gate = QuotaGate(limiter)
    quotas = Quotas(rate_limit_rps=1_000_000.0)
    admitted, at_once, total = await drive(
        gate, quotas, time.monotonic() + 1.0, (0.0, float("inf")), per_ms=20
    )
    assert admitted == total > 5_000
    assert at_once >= 0.99 * total, (at_once, total)
    assert limiter.lease_calls <= 0.02 * total, (limiter.lease_calls, total)


async def test_redis_down_lets_requests_through_and_logs_once(
    replicas: Callable[..., RedisRateLimiter],
) -> None:
    limiter = RedisRateLimiter(Redis.from_url("redis://127.0.0.1:1/0", socket_timeout=1))
    gate = QuotaGate(limiter)
    quotas = Quotas(rate_limit_rps=1.0, rate_limit_burst=1)
    try:
        with structlog.testing.capture_logs() as logs:
            await gate.check_rate("acme", quotas)
            started = time.monotonic()
            for _ in range(100):  # far over the limit, all let through without waiting
                if not gate.check_rate_now("acme", quotas):
                    await gate.check_rate("acme", quotas)
            assert time.monotonic() - started < 0.05
    finally:
        await limiter.close()
    assert gate.limiter_errors == 101
    warned = [e for e in logs if e["event"] == "rate_limiter_unavailable"]
    assert len(warned) == 1, logs
    assert warned[0]["log_level"] == "warning"
    assert warned[0]["error"] == "RateLimiterUnavailable"


async def test_a_redis_that_does_not_answer_costs_one_timeout_then_nothing() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(1 << 16):  # reads every command, answers none, until EOF
            pass
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    limiter = RedisRateLimiter(
        Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_timeout=10), timeout_s=0.1
    )
    gate = QuotaGate(limiter)
    quotas = Quotas(rate_limit_rps=10.0)
    try:
        started = time.monotonic()
        await gate.check_rate("acme", quotas)
        first = time.monotonic() - started
        started = time.monotonic()
        assert gate.check_rate_now("acme", quotas)
        await gate.check_rate("acme", quotas)
        after = time.monotonic() - started
    finally:
        await limiter.close()
        server.close()
        await server.wait_closed()
    assert 0.09 <= first < 0.5
    assert after < 0.01
    assert gate.limiter_errors == 3
