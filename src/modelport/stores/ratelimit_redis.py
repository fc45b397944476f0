"""Tenant rate limits shared by every replica through Redis, without a Redis call per request.

The bucket lives in Redis (one hash per key; a Lua script refills it from Redis's clock, so
the replicas' clocks do not matter). A replica does not take one token per request: it
*leases* a batch of tokens, sized to about ``lease_s`` of its own recent traffic and never
more than ``lease_s`` of the limit, and spends them in memory. A request that finds a leased
token is admitted without waiting for anything; when the batch is half spent the next lease
is fetched in the background, so under steady traffic requests do not wait at all.

Accuracy. Tokens leave the shared bucket only when leased, so all replicas together never
lease more than one bucket allows: ``R·T + burst`` over any ``T`` seconds. Leasing only moves
admissions later in time: a token leased before a window and spent inside it is the only
excess, and a replica holds at most about 1.5 leases, so over any window the replicas admit
at most ``R·T + burst + N·1.5·max(1, R·lease_s)`` (N replicas). Tokens a replica does not
spend within ``expiry_s`` go back to the bucket with its next lease call for that key.

When the bucket is empty the script says how many tokens are left; the replica refuses
locally (with that Retry-After) until about one lease's worth is back, rather than asking
again for every request.

Redis slow or down: a request waits at most ``timeout_s`` for a lease; then (or at once on an
error) ``RateLimiterUnavailable`` is raised and raised again without calling Redis for
``backoff_s``. The quota gate lets those requests through and logs it: serving beats limiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time

from redis.asyncio import Redis

from modelport.errors import RateLimiterUnavailable
from modelport.stores.ratelimit import RateDecision

_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local back = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate + back)
local granted = math.max(0, math.min(want, math.floor(tokens)))
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.min(86400000, math.ceil(burst / rate * 1000)) + 1000)
return {granted, tostring(tokens)}
"""

_MAX_WAIT_S = 86_400.0
#: Lease calls one request may wait for when other requests take each lease before it.
_ROUNDS = 8


class _Lease:
    """One key's tokens on this replica and what it knows of the shared bucket."""

    __slots__ = (
        "back",
        "burst",
        "expires",
        "left",
        "ok",
        "pending",
        "rate",
        "recent",
        "refused_until",
        "since",
        "spent",
        "tokens",
        "waiters",
        "want",
    )

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = 0
        self.expires = 0.0
        self.refused_until = 0.0
        self.left = float(burst)
        """Tokens the shared bucket held after this replica's last lease call."""
        self.want = 1
        self.spent = 0
        self.since = now
        self.recent = 0.0
        """This replica's recent rate of admitted requests (per second)."""
        self.back = 0
        """Expired tokens to hand back with the next lease call."""
        self.waiters = 0
        self.pending: asyncio.Task[None] | None = None
        self.ok = RateDecision(True, burst, burst, 0.0, 0.0)


class RedisRateLimiter:
    def __init__(
        self,
        client: Redis,
        namespace: str = "modelport:rl",
        *,
        lease_s: float = 0.05,
        expiry_s: float = 0.5,
        timeout_s: float = 0.1,
        backoff_s: float = 1.0,
    ) -> None:
        self._client = client
        self._namespace = namespace
        self._script = client.register_script(_SCRIPT)
        self._lease_s = lease_s
        self._expiry_s = expiry_s
        self._timeout_s = timeout_s
        self._backoff_s = backoff_s
        self._leases: dict[str, _Lease] = {}
        self._down_until = 0.0
        self._down: RateLimiterUnavailable | None = None
        self.lease_calls = 0

    def try_acquire(self, key: str, rate: float, burst: int) -> RateDecision | None:
        lease = self._leases.get(key)
        if lease is None or lease.rate != rate or lease.burst != burst:
            return None
        now = time.monotonic()
        if lease.tokens:
            if now < lease.expires:
                lease.tokens -= 1
                lease.spent += 1
                # The next batch, fetched meanwhile. Not for one-token leases (a limit of at
                # most 1/lease_s): a token leased ahead would sit here while other replicas
                # find the bucket empty, and at that rate a request can wait for its token.
                if lease.pending is None and lease.want > 1 and lease.tokens * 2 < lease.want:
                    if now >= self._down_until:
                        self._lease(key, lease, now)
                return lease.ok
            lease.back += lease.tokens
            lease.tokens = 0
        if now < lease.refused_until:
            return RateDecision(
                False,
                burst,
                0,
                lease.refused_until - now,
                min((burst - lease.left) / rate, _MAX_WAIT_S),
            )
        if now < self._down_until and self._down is not None:
            raise self._down
        return None

    async def acquire(self, key: str, rate: float, burst: int) -> RateDecision:
        for _ in range(_ROUNDS):
            decision = self.try_acquire(key, rate, burst)
            if decision is not None:
                return decision
            now = time.monotonic()
            lease = self._leases.get(key)
            if lease is None or lease.rate != rate or lease.burst != burst:
                lease = self._leases[key] = _Lease(rate, burst, now)
            task = lease.pending or self._lease(key, lease, now)
            lease.waiters += 1
            try:
                async with asyncio.timeout(self._timeout_s):
                    await asyncio.shield(task)
            except TimeoutError:
                ms = self._timeout_s * 1000
                raise self._fail(f"Redis gave no lease within {ms:g} ms") from None
            finally:
                lease.waiters -= 1
        # Other requests took every lease this one waited for: refuse it briefly.
        return RateDecision(False, burst, 0, min(self._lease_s, 1.0 / rate), self._lease_s)

    def _lease(self, key: str, lease: _Lease, now: float) -> asyncio.Task[None]:
        """Start the lease call for ``key``; its tokens are added when Redis answers."""
        elapsed = now - lease.since
        if elapsed > 0:
            lease.recent = max(lease.spent / elapsed, lease.recent / 2)
        cap = max(1, min(lease.burst, math.floor(lease.rate * self._lease_s)))
        want = max(math.ceil(lease.recent * self._lease_s), lease.waiters + 1)
        lease.want = min(want, cap)
        lease.spent, lease.since = 0, now
        back, lease.back = lease.back, 0
        task = asyncio.get_running_loop().create_task(self._fetch(key, lease, lease.want, back))
        lease.pending = task
        return task

    async def _fetch(self, key: str, lease: _Lease, want: int, back: int) -> None:
        self.lease_calls += 1
        try:
            granted, left = await self._script(
                keys=[f"{self._namespace}:{key}"],
                args=[repr(float(lease.rate)), str(lease.burst), str(want), str(back)],
            )
        except Exception as exc:  # noqa: BLE001 - any failure means "Redis is unavailable"
            # Tokens handed back in a failed call are not handed back again: if the script
            # did run, doing so would admit them twice.
            self._fail(f"Redis rate limiter failed: {exc!r}")
            return
        finally:
            lease.pending = None
        now = time.monotonic()
        self._down_until, self._down = 0.0, None
        rate, burst = lease.rate, lease.burst
        lease.left = float(left)
        granted = int(granted)
        if granted:
            lease.tokens += granted
            lease.expires = now + self._expiry_s
            lease.refused_until = 0.0
        else:
            # Refuse here until one token is back, or about a lease's worth (within lease_s).
            one = (1.0 - lease.left) / rate
            batch = (min(want, burst) - lease.left) / rate
            lease.refused_until = now + min(max(one, min(batch, self._lease_s)), _MAX_WAIT_S)
        remaining = min(burst, math.floor(lease.left) + max(0, lease.tokens - 1))
        reset = min((burst - lease.left) / rate, _MAX_WAIT_S)
        lease.ok = RateDecision(True, burst, remaining, 0.0, reset)

    def _fail(self, reason: str) -> RateLimiterUnavailable:
        """Record that Redis is unavailable: for ``backoff_s`` no request waits for it."""
        self._down_until = time.monotonic() + self._backoff_s
        self._down = RateLimiterUnavailable(reason)
        return self._down

    async def close(self) -> None:
        pending = [lease.pending for lease in self._leases.values() if lease.pending]
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, RateLimiterUnavailable):
                await task
        await self._give_back()
        self._leases.clear()
        await self._client.aclose()

    async def _give_back(self) -> None:
        """Hand unspent tokens back to the shared buckets (best effort, bounded in time)."""
        unspent = {k: lease for k, lease in self._leases.items() if lease.tokens + lease.back}
        if not unspent:
            return
        with contextlib.suppress(Exception):  # closing goes on whatever Redis answers
            async with asyncio.timeout(self._timeout_s):
                for key, lease in unspent.items():
                    await self._script(
                        keys=[f"{self._namespace}:{key}"],
                        args=[
                            repr(float(lease.rate)),
                            str(lease.burst),
                            "0",
                            str(lease.tokens + lease.back),
                        ],
                    )
