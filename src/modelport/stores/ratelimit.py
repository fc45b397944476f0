"""Token-bucket rate limiting: in-process for one replica, Redis (atomic) for many.

A bucket holds at most ``burst`` tokens and refills at ``rate`` per second; each request takes
one. Redis evaluates the same arithmetic in one Lua script with the server's clock, so every
replica draws from the same bucket.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    retry_after_s: float
    """Seconds until one token is available again (0 when allowed)."""
    reset_s: float
    """Seconds until the bucket is full again."""


class RateLimiter(Protocol):
    async def acquire(self, key: str, rate: float, burst: int) -> RateDecision: ...

    async def close(self) -> None: ...


_MAX_WAIT_S = 86_400.0


def _decision(allowed: bool, tokens: float, rate: float, burst: int) -> RateDecision:
    retry = 0.0 if allowed else min((1.0 - tokens) / rate, _MAX_WAIT_S)
    return RateDecision(
        allowed=allowed,
        limit=burst,
        remaining=max(0, math.floor(tokens)),
        retry_after_s=retry,
        reset_s=min((burst - tokens) / rate, _MAX_WAIT_S),
    )


class MemoryRateLimiter:
    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}

    async def acquire(self, key: str, rate: float, burst: int) -> RateDecision:
        now = time.monotonic()
        tokens, stamp = self._buckets.get(key, (float(burst), now))
        tokens = min(float(burst), tokens + (now - stamp) * rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[key] = (tokens, now)
        return _decision(allowed, tokens, rate, burst)

    async def close(self) -> None:
        self._buckets.clear()


_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.min(86400000, math.ceil(burst / rate * 1000)) + 1000)
return {allowed, tostring(tokens)}
"""


class RedisRateLimiter:
    def __init__(self, client: Redis, namespace: str = "modelport:rl") -> None:
        self._client = client
        self._namespace = namespace
        self._script = client.register_script(_SCRIPT)

    async def acquire(self, key: str, rate: float, burst: int) -> RateDecision:
        allowed, tokens = await self._script(
            keys=[f"{self._namespace}:{key}"], args=[repr(float(rate)), str(burst)]
        )
        return _decision(bool(int(allowed)), float(tokens), rate, burst)

    async def close(self) -> None:
        await self._client.aclose()
