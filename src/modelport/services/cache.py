"""The response cache of cache-enabled versions: memory first, then Redis, then the model.

Identical requests that miss at the same time run the model once (singleflight): the first one
computes, the others await its answer, or its error. An error is never cached. Answers are
written to Redis behind the response, so sharing them with other replicas adds no latency.
Everything here runs on the event loop thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Literal

from modelport.observability.loop_metrics import LoopCounter
from modelport.observability.metrics import Metrics
from modelport.stores.cache import MemoryCacheTier, Outputs, RedisCacheTier

Status = Literal["hit_memory", "hit_redis", "coalesced", "miss"]


class _Counters:
    __slots__ = ("coalesced", "hit_memory", "hit_redis", "miss")

    def __init__(self, metrics: Metrics, tenant: str, model: str) -> None:
        family = metrics.cache_requests
        self.hit_memory: LoopCounter = family.labels(tenant, model, "hit_memory")
        self.hit_redis: LoopCounter = family.labels(tenant, model, "hit_redis")
        self.coalesced: LoopCounter = family.labels(tenant, model, "coalesced")
        self.miss: LoopCounter = family.labels(tenant, model, "miss")


class ResponseCache:
    def __init__(
        self,
        memory: MemoryCacheTier,
        redis: RedisCacheTier | None,
        metrics: Metrics,
        *,
        max_pending_writes: int = 1024,
    ) -> None:
        self.memory = memory
        self.redis = redis
        self._metrics = metrics
        self._max_writes = max_pending_writes
        self._counters: dict[tuple[str, str], _Counters] = {}
        self._tenants: set[str] = set()
        # Resolved with the outputs, the error, or None when the computing request was
        # cancelled (its waiters then try again themselves).
        self._flights: dict[bytes, asyncio.Future[Outputs | None]] = {}
        self._writes: set[asyncio.Task[None]] = set()
        memory.on_evict = self._evicted
        if redis is not None:
            redis.on_error = metrics.cache_errors.labels("redis").inc

    async def get_or_compute(
        self,
        tenant: str,
        model: str,
        version: str,
        key: bytes,
        ttl_s: float,
        shared: bool,
        compute: Callable[[], Awaitable[Outputs]],
    ) -> tuple[Outputs, Status]:
        """The answer for ``key`` and where it came from. ``key`` must identify the version
        (see ``serving.cache_key``); ``shared`` also reads and writes the Redis tier."""
        counters = self._counters.get((tenant, model)) or self._bind(tenant, model)
        while True:
            outputs = self.memory.lookup(tenant, key)
            if outputs is not None:
                counters.hit_memory.inc()
                return outputs, "hit_memory"
            flight = self._flights.get(key)
            if flight is None:
                return await self._lead(tenant, key, ttl_s, shared, compute, counters)
            # shield: one waiter going away must not cancel the answer the others await.
            shared_outputs = await asyncio.shield(flight)
            if shared_outputs is not None:
                counters.coalesced.inc()
                return shared_outputs, "coalesced"

    async def _lead(
        self,
        tenant: str,
        key: bytes,
        ttl_s: float,
        shared: bool,
        compute: Callable[[], Awaitable[Outputs]],
        counters: _Counters,
    ) -> tuple[Outputs, Status]:
        flight: asyncio.Future[Outputs | None] = asyncio.get_running_loop().create_future()
        self._flights[key] = flight
        redis = self.redis if shared else None
        status: Status = "miss"
        try:
            cached = None if redis is None else await redis.get(tenant, key)
            if cached is not None:
                outputs, status = cached.outputs, "hit_redis"
                self.memory.store(tenant, key, outputs, cached.ttl_s)
            else:
                outputs = await compute()
                self.memory.store(tenant, key, outputs, ttl_s)
                if redis is not None:
                    self._write_behind(redis, tenant, key, outputs, ttl_s)
        except Exception as exc:
            flight.set_exception(exc)
            flight.exception()  # marks it retrieved: the waiters re-raise it, none may exist
            raise
        except BaseException:
            flight.set_result(None)
            raise
        finally:
            del self._flights[key]
        flight.set_result(outputs)
        if status == "miss":
            counters.miss.inc()
        else:
            counters.hit_redis.inc()
        return outputs, status

    def _write_behind(
        self, redis: RedisCacheTier, tenant: str, key: bytes, outputs: Outputs, ttl_s: float
    ) -> None:
        if not redis.available or len(self._writes) >= self._max_writes:
            return
        task = asyncio.create_task(redis.put(tenant, key, outputs, ttl_s))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    def _bind(self, tenant: str, model: str) -> _Counters:
        counters = self._counters[(tenant, model)] = _Counters(self._metrics, tenant, model)
        if tenant not in self._tenants:
            self._tenants.add(tenant)
            self._metrics.cache_bytes.labels(tenant).set_function(
                partial(self.memory.tenant_bytes, tenant)
            )
        return counters

    def _evicted(self, tenant: str) -> None:
        self._metrics.cache_evictions.labels(tenant).inc()

    async def flush(self, timeout_s: float = 5.0) -> None:
        """Wait for the Redis writes still in flight."""
        if self._writes:
            await asyncio.wait(set(self._writes), timeout=timeout_s)

    async def close(self) -> None:
        await self.flush(1.0)
        for task in list(self._writes):
            task.cancel()
        if self._writes:
            await asyncio.wait(set(self._writes))
        await self.memory.close()
        if self.redis is not None:
            await self.redis.close()
