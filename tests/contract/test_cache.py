"""The response cache contract, run against both tiers (in-process memory and a real Redis),
and the cache service on top of them: singleflight, errors never cached, and a Redis that goes
away and comes back while requests keep flowing."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import numpy as np
import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from modelport.errors import InferenceFailed
from modelport.observability.metrics import Metrics
from modelport.services.cache import ResponseCache
from modelport.serving.cache_key import cache_key
from modelport.stores.cache import (
    CacheTier,
    MemoryCacheTier,
    Outputs,
    RedisCacheTier,
    decode_outputs,
    encode_outputs,
)
from redis_process import free_port, redis_server
from required_services import service_missing

REDIS_URL = os.environ.get("MODELPORT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
MIB = 1024 * 1024


async def _reachable_redis() -> Redis:
    client = Redis.from_url(REDIS_URL, socket_timeout=2)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        await client.aclose()
        service_missing("Redis", REDIS_URL, exc)
    return client


async def _delete_namespace(client: Redis, namespace: str) -> None:
    keys = [key async for key in client.scan_iter(match=f"{namespace}:*", count=1000)]
    if keys:
        await client.delete(*keys)


@pytest.fixture
async def namespace() -> str:
    return f"mp-test-c:{secrets.token_hex(4)}"


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.integration)])
async def tier(request: pytest.FixtureRequest, namespace: str) -> AsyncIterator[CacheTier]:
    if request.param == "memory":
        backend: CacheTier = MemoryCacheTier(64 * MIB)
        yield backend
        await backend.close()
        return
    admin = await _reachable_redis()
    backend = RedisCacheTier.from_url(REDIS_URL, namespace=namespace, timeout_s=1.0)
    try:
        yield backend
    finally:
        await backend.close()
        await _delete_namespace(admin, namespace)
        await admin.aclose()


def key(tenant: str = "acme", model: str = "ranker", version: str = "1", seed: int = 0) -> bytes:
    return cache_key(tenant, model, version, {"input": np.full((1, 4), seed, np.float32)})


def outputs_of_every_datatype() -> Outputs:
    rng = np.random.default_rng(3)
    return {
        "bool": np.array([[True, False, True]]),
        "uint8": rng.integers(0, 255, (2, 3)).astype(np.uint8),
        "uint16": rng.integers(0, 2**16 - 1, (2, 3)).astype(np.uint16),
        "uint32": np.array([0, 2**32 - 1], dtype=np.uint32),
        "uint64": np.array([0, 2**64 - 1], dtype=np.uint64),
        "int8": np.array([-128, 127], dtype=np.int8),
        "int16": np.array([-(2**15), 2**15 - 1], dtype=np.int16),
        "int32": np.array([[-(2**31)], [2**31 - 1]], dtype=np.int32),
        "int64": np.array([-(2**63), 2**63 - 1], dtype=np.int64),
        "fp16": np.array([0.5, -65504.0, np.inf], dtype=np.float16),
        "fp32": rng.standard_normal((2, 2, 2)).astype(np.float32),
        "fp64": np.array([np.pi, -0.0, np.nan]),
        "big_endian": np.arange(4, dtype=">f4"),
        "strided": np.arange(12, dtype=np.int32).reshape(3, 4)[:, ::2],
        "scalar": np.array(7.5, dtype=np.float32),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "bytes": np.array([[b"caf\xc3\xa9", b""], [b"\xff\x00 not utf-8", b"x" * 300]], object),
        "texts": np.array(["hello", "w\u00f6rld"], dtype=object),
        "no_bytes": np.empty((0,), dtype=object),
    }


def assert_same(got: Outputs, want: Outputs) -> None:
    assert list(got) == list(want)
    for name, expected in want.items():
        actual = got[name]
        assert actual.shape == expected.shape, name
        assert not actual.flags.writeable, f"{name} is shared between answers: read-only"
        if expected.dtype.kind == "O":
            assert actual.dtype.kind == "O"
            encoded = [x if isinstance(x, bytes) else str(x).encode() for x in expected.flat]
            assert list(actual.flat) == encoded, name
        else:
            assert actual.dtype == expected.dtype.newbyteorder("<"), name
            np.testing.assert_array_equal(actual, expected, err_msg=name)


# --------------------------------------------------------------------------- both tiers


async def test_every_output_datatype_round_trips(tier: CacheTier) -> None:
    outputs = outputs_of_every_datatype()
    await tier.put("acme", key(), outputs, 60.0)
    cached = await tier.get("acme", key())
    assert cached is not None
    assert_same(cached.outputs, outputs)
    assert 55.0 < cached.ttl_s <= 60.0


async def test_an_unknown_key_misses(tier: CacheTier) -> None:
    assert await tier.get("acme", key(seed=99)) is None


async def test_entries_expire_after_their_ttl(tier: CacheTier) -> None:
    answer = {"score": np.array([[0.25]], np.float32)}
    await tier.put("acme", key(seed=1), answer, 0.2)
    await tier.put("acme", key(seed=2), answer, 30.0)
    assert await tier.get("acme", key(seed=1)) is not None
    await asyncio.sleep(0.35)
    assert await tier.get("acme", key(seed=1)) is None
    assert await tier.get("acme", key(seed=2)) is not None


async def test_a_put_replaces_the_previous_answer(tier: CacheTier) -> None:
    await tier.put("acme", key(), {"y": np.array([1.0])}, 30.0)
    await tier.put("acme", key(), {"y": np.array([2.0])}, 30.0)
    cached = await tier.get("acme", key())
    assert cached is not None and cached.outputs["y"].tolist() == [2.0]


async def test_keys_never_cross_tenants_models_or_versions(tier: CacheTier) -> None:
    await tier.put("acme", key("acme", "ranker", "1"), {"y": np.array([1.0])}, 30.0)
    for other in (
        key("globex", "ranker", "1"),
        key("acme", "ranker2", "1"),
        key("acme", "ranker", "2"),
        key("acme", "ranker", "1", seed=1),
    ):
        assert await tier.get("acme", other) is None
    # The same digest under another tenant is another entry too.
    assert await tier.get("globex", key("acme", "ranker", "1")) is None
    assert await tier.get("acme", key("acme", "ranker", "1")) is not None


# --------------------------------------------------------------------------- memory tier


async def test_memory_tier_is_bounded_in_bytes_and_evicts_the_least_recently_used() -> None:
    evicted: list[str] = []
    memory = MemoryCacheTier(64 * 1024, on_evict=evicted.append)
    big = {"y": np.zeros(4096, np.float32)}  # 16 KiB of data per entry
    for seed in range(3):
        memory.store("acme", key(seed=seed), big, 60.0)
    assert len(memory) == 3 and memory.evictions == 0
    size = memory.bytes // 3
    assert 16 * 1024 < size < 17 * 1024
    memory.lookup("acme", key(seed=0))  # now 1 is the least recently used
    memory.store("globex", key("globex"), big, 60.0)
    assert len(memory) == 3
    assert memory.bytes <= 64 * 1024
    assert memory.evictions == 1 and evicted == ["acme"]
    assert memory.lookup("acme", key(seed=1)) is None
    assert memory.lookup("acme", key(seed=0)) is not None
    assert memory.tenant_bytes("acme") == 2 * size
    assert memory.tenant_bytes("globex") == size
    # Bytes, not entries: one large answer pushes out several small ones.
    memory.store("acme", key(seed=9), {"y": np.zeros(13_000, np.float32)}, 60.0)
    assert memory.evictions == 4 and len(memory) == 1
    assert evicted == ["acme", "acme", "globex", "acme"]  # 1, then 2, globex, 0
    assert memory.tenant_bytes("globex") == 0
    # An answer larger than the whole cache is not kept, and evicts nothing.
    memory.store("acme", key(seed=10), {"y": np.zeros(20_000, np.float32)}, 60.0)
    assert memory.lookup("acme", key(seed=10)) is None
    assert memory.evictions == 4 and len(memory) == 1


async def test_memory_tier_keeps_its_own_copy() -> None:
    memory = MemoryCacheTier(MIB)
    batch = np.arange(8, dtype=np.float32).reshape(4, 2)
    memory.store("acme", key(), {"y": batch[1:2]}, 60.0)
    batch[1] = -1.0  # the batch buffer the row came from is reused or changed
    cached = memory.lookup("acme", key())
    assert cached is not None and cached["y"].tolist() == [[2.0, 3.0]]
    assert cached["y"].base is None or cached["y"].base is not batch
    with pytest.raises(ValueError, match="read-only"):
        cached["y"][0, 0] = 5.0


def test_the_encoding_refuses_what_is_not_an_entry() -> None:
    from modelport.stores.cache import CorruptEntry

    blob = encode_outputs(outputs_of_every_datatype(), time.time() + 5)
    assert_same(decode_outputs(blob)[0], outputs_of_every_datatype())
    for bad in (b"", b"junk", blob[:-1], blob + b"x", b"XXXX" + blob[4:]):
        with pytest.raises(CorruptEntry):
            decode_outputs(bad)
    with pytest.raises(TypeError, match="cannot be cached"):
        encode_outputs({"z": np.array([1j])}, 0.0)


# --------------------------------------------------------------------------- the cache service


@pytest.fixture(params=["memory", pytest.param("memory+redis", marks=pytest.mark.integration)])
async def cache(request: pytest.FixtureRequest, namespace: str) -> AsyncIterator[ResponseCache]:
    admin = None
    redis = None
    if request.param == "memory+redis":
        admin = await _reachable_redis()
        redis = RedisCacheTier.from_url(REDIS_URL, namespace=namespace, timeout_s=1.0)
    service = ResponseCache(MemoryCacheTier(16 * MIB), redis, Metrics())
    try:
        yield service
    finally:
        await service.close()
        if admin is not None:
            await _delete_namespace(admin, namespace)
            await admin.aclose()


class Model:
    """Counts its runs; each takes ``delay_s`` and answers ``seed * 2`` (or fails)."""

    def __init__(self, delay_s: float = 0.05, fail: bool = False) -> None:
        self.runs = 0
        self.delay_s = delay_s
        self.fail = fail

    def compute(self, seed: float) -> Callable[[], Awaitable[Outputs]]:
        async def run() -> Outputs:
            self.runs += 1
            await asyncio.sleep(self.delay_s)
            if self.fail:
                raise InferenceFailed("the runtime raised: boom")
            return {"y": np.array([[seed * 2]], np.float32)}

        return run


async def ask(
    cache: ResponseCache, model: Model, seed: int, *, shared: bool = True, version: str = "1"
) -> tuple[Outputs, str]:
    return await cache.get_or_compute(
        "acme",
        "ranker",
        version,
        key(version=version, seed=seed),
        60.0,
        shared,
        model.compute(seed),
    )


def requests_by_result(cache: ResponseCache, model: str = "ranker") -> dict[str, float]:
    family = cache._metrics.cache_requests
    return {
        labels[2]: child.value
        for labels, child in family.children.items()
        if labels[:2] == ("acme", model) and child.value
    }


async def test_a_repeated_request_is_answered_from_memory(cache: ResponseCache) -> None:
    model = Model()
    first = await ask(cache, model, 3)
    second = await ask(cache, model, 3)
    assert first[1] == "miss" and second[1] == "hit_memory"
    assert second[0]["y"].tolist() == [[6.0]] == first[0]["y"].tolist()
    assert model.runs == 1
    assert (await ask(cache, model, 3, version="2"))[1] == "miss"  # a new version
    assert model.runs == 2
    assert requests_by_result(cache) == {"miss": 2, "hit_memory": 1}


async def test_identical_concurrent_misses_run_the_model_once(cache: ResponseCache) -> None:
    model = Model(delay_s=0.1)
    answers = await asyncio.gather(*(ask(cache, model, 5) for _ in range(50)))
    assert model.runs == 1
    assert sorted(status for _, status in answers) == ["coalesced"] * 49 + ["miss"]
    assert all(outputs["y"].tolist() == [[10.0]] for outputs, _ in answers)
    # Different requests at the same time are not coalesced.
    await asyncio.gather(*(ask(cache, model, seed) for seed in range(10, 20)))
    assert model.runs == 11
    assert requests_by_result(cache) == {"miss": 11, "coalesced": 49}


async def test_a_failed_computation_reaches_every_waiter_and_is_not_cached(
    cache: ResponseCache,
) -> None:
    model = Model(delay_s=0.05, fail=True)
    results = await asyncio.gather(
        *(ask(cache, model, 7) for _ in range(20)), return_exceptions=True
    )
    assert model.runs == 1
    assert all(isinstance(r, InferenceFailed) for r in results)
    model.fail = False
    outputs, status = await ask(cache, model, 7)
    assert status == "miss" and outputs["y"].tolist() == [[14.0]]
    assert model.runs == 2


async def test_waiters_compute_themselves_when_the_first_request_is_cancelled(
    cache: ResponseCache,
) -> None:
    model = Model(delay_s=0.2)
    first = asyncio.create_task(ask(cache, model, 8))
    await asyncio.sleep(0.05)
    waiters = [asyncio.create_task(ask(cache, model, 8)) for _ in range(5)]
    await asyncio.sleep(0.05)
    first.cancel()
    answers = await asyncio.gather(*waiters)
    assert first.cancelled()
    assert model.runs == 2  # one of the waiters took over
    assert sorted(s for _, s in answers) == ["coalesced"] * 4 + ["miss"]


@pytest.mark.integration
async def test_replicas_share_answers_through_redis(namespace: str) -> None:
    admin = await _reachable_redis()
    replicas = [
        ResponseCache(
            MemoryCacheTier(MIB),
            RedisCacheTier.from_url(REDIS_URL, namespace=namespace, timeout_s=1.0),
            Metrics(),
        )
        for _ in range(2)
    ]
    try:
        model = Model()
        assert (await ask(replicas[0], model, 4))[1] == "miss"
        assert (await ask(replicas[0], model, 6, shared=False))[1] == "miss"
        await replicas[0].flush()
        outputs, status = await ask(replicas[1], model, 4)
        assert status == "hit_redis" and outputs["y"].tolist() == [[8.0]]
        assert (await ask(replicas[1], model, 4))[1] == "hit_memory"
        # A version that does not share its answers keeps them out of Redis.
        assert (await ask(replicas[1], model, 6, shared=False))[1] == "miss"
        assert model.runs == 3
        ttl_ms = await admin.pttl(f"{namespace}:acme:{key(seed=4).hex()}")
        assert 55_000 < ttl_ms <= 60_000
    finally:
        for replica in replicas:
            await replica.close()
        await _delete_namespace(admin, namespace)
        await admin.aclose()


@pytest.mark.integration
async def test_an_unreadable_redis_entry_is_a_counted_miss(namespace: str) -> None:
    admin = await _reachable_redis()
    redis = RedisCacheTier.from_url(REDIS_URL, namespace=namespace, timeout_s=1.0)
    cache = ResponseCache(MemoryCacheTier(MIB), redis, Metrics())
    try:
        await admin.set(f"{namespace}:acme:{key(seed=2).hex()}", b"garbage", px=60_000)
        model = Model(delay_s=0)
        outputs, status = await ask(cache, model, 2)
        assert status == "miss" and outputs["y"].tolist() == [[4.0]]
        assert redis.errors == 1
        assert cache._metrics.cache_errors.labels("redis").value == 1
    finally:
        await cache.close()
        await _delete_namespace(admin, namespace)
        await admin.aclose()


# --------------------------------------------------------------------------- Redis outages


async def timed(cache: ResponseCache, model: Model, seed: int) -> tuple[float, str]:
    started = time.perf_counter()
    _, status = await ask(cache, model, seed)
    return time.perf_counter() - started, status


@pytest.mark.integration
async def test_redis_going_away_degrades_to_computing_and_recovers_by_itself() -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    metrics = Metrics()
    redis = RedisCacheTier.from_url(url, timeout_s=0.05)
    cache = ResponseCache(MemoryCacheTier(MIB), redis, metrics)
    model = Model(delay_s=0.001)
    try:
        with redis_server(port) as server:
            assert (await ask(cache, model, 1))[1] == "miss"
            await cache.flush()
            server.terminate()
            server.wait(timeout=10)
            # Redis is gone: every request still gets its answer, computed, without stalls.
            slowest, seed = 0.0, 100
            for _ in range(40):
                seconds, status = await timed(cache, model, seed)
                slowest = max(slowest, seconds)
                assert status == "miss"
                seed += 1
                await asyncio.sleep(0.025)
            assert slowest < 0.2, f"a request took {slowest * 1000:.0f} ms with Redis down"
            assert model.runs == 41
            errors = metrics.cache_errors.labels("redis").value
            # The breaker skips Redis between probes: a handful of failed tries, not 80.
            assert 1 <= errors <= 6, errors
            assert redis.errors == errors
            assert not redis.available

        with redis_server(port):
            # Back on the same port: the tier is used again within a few seconds.
            reader = Redis.from_url(url)
            started = time.monotonic()
            try:
                while True:
                    await ask(cache, model, seed)
                    await cache.flush()
                    if await reader.exists(f"mp:c:acme:{key(seed=seed).hex()}"):
                        break
                    assert time.monotonic() - started < 12, "the Redis tier did not come back"
                    seed += 1
                    await asyncio.sleep(0.1)
            finally:
                await reader.aclose()
            assert redis.available
            # Another replica now finds the answer in Redis.
            other = ResponseCache(MemoryCacheTier(MIB), RedisCacheTier.from_url(url), Metrics())
            try:
                assert (await ask(other, model, seed))[1] == "hit_redis"
            finally:
                await other.close()
    finally:
        await cache.close()


@pytest.mark.integration
async def test_a_hung_redis_costs_one_timeout_per_back_off_not_one_per_request() -> None:
    port = free_port()
    metrics = Metrics()
    redis = RedisCacheTier.from_url(f"redis://127.0.0.1:{port}/0", timeout_s=0.05)
    cache = ResponseCache(MemoryCacheTier(MIB), redis, metrics)
    model = Model(delay_s=0.001)
    try:
        with redis_server(port) as server:
            assert (await ask(cache, model, 1))[1] == "miss"
            await cache.flush()
            os.kill(server.pid, signal.SIGSTOP)  # accepts connections, answers nothing
            try:
                durations: list[float] = []
                started = time.monotonic()
                seed = 100
                while time.monotonic() - started < 2.5:
                    seconds, _ = await timed(cache, model, seed)
                    durations.append(seconds)
                    seed += 1
                    await asyncio.sleep(0.01)
            finally:
                os.kill(server.pid, signal.SIGCONT)
            slow = [d for d in durations if d > 0.03]
            # The first failure opens the breaker for 1 s, the probe after it fails again and
            # opens it for 2 s: two requests wait for the 50 ms timeout, the rest skip Redis.
            assert len(durations) > 50
            assert 1 <= len(slow) <= 3, slow
            assert max(durations) < 0.3
            # Every slow request was a counted error; a write-behind that timed out in the
            # background is counted too, without having slowed anyone.
            errors = metrics.cache_errors.labels("redis").value
            assert len(slow) <= errors <= 3, (errors, slow)
    finally:
        await cache.close()


async def test_metrics_report_bytes_and_evictions_per_tenant() -> None:
    metrics = Metrics()
    cache = ResponseCache(MemoryCacheTier(40 * 1024), None, metrics)
    try:

        def compute(seed: int) -> Callable[[], Awaitable[Outputs]]:
            async def run() -> Outputs:
                return {"y": np.full(4096, seed, np.float32)}

            return run

        for seed in range(4):
            await cache.get_or_compute(
                "acme", "ranker", "1", key(seed=seed), 60.0, True, compute(seed)
            )
        text = metrics.render().decode()
        assert 'modelport_cache_evictions_total{tenant="acme"} 2.0' in text
        assert f'modelport_cache_bytes{{tenant="acme"}} {float(cache.memory.bytes)}' in text
        assert (
            'modelport_cache_requests_total{model="ranker",result="miss",tenant="acme"} 4.0' in text
        )
    finally:
        await cache.close()
