"""Token-bucket rate limiting: the contract, and the in-process limiter for one replica.

A bucket holds at most ``burst`` tokens and refills at ``rate`` per second; each request takes
one. ``stores.ratelimit_redis`` keeps the bucket in Redis for many replicas, which lease
tokens from it in batches and spend them locally.

A limiter answers in two steps so that the request path waits only when it must:
``try_acquire`` decides without waiting when it can (always, in process; with a lease in hand
or a refusal still fresh, on Redis) and returns None otherwise; ``acquire`` always decides.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Protocol


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
    def try_acquire(self, key: str, rate: float, burst: int) -> RateDecision | None:
        """The decision for one request if it can be made now, without waiting; None if
        only ``acquire`` can make it. Nothing is taken when it returns None."""
        ...

    async def acquire(self, key: str, rate: float, burst: int) -> RateDecision: ...

    async def close(self) -> None: ...


_MAX_WAIT_S = 86_400.0


def decision(allowed: bool, tokens: float, rate: float, burst: int) -> RateDecision:
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
        return self.try_acquire(key, rate, burst)

    def try_acquire(self, key: str, rate: float, burst: int) -> RateDecision:
        now = time.monotonic()
        tokens, stamp = self._buckets.get(key, (float(burst), now))
        tokens = min(float(burst), tokens + (now - stamp) * rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[key] = (tokens, now)
        return decision(allowed, tokens, rate, burst)

    async def close(self) -> None:
        self._buckets.clear()
