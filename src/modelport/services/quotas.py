"""Per-tenant quotas: request rate (token bucket), in-flight inference requests, request size.

Rate limits are shared by every replica when Redis is configured (``stores.ratelimit_redis``:
replicas lease tokens in batches, so a request rarely waits for Redis); concurrency limits are per
replica, so one tenant's burst cannot occupy every slot of a replica's batch queues. A request
over a limit is refused before it reaches a model.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import structlog

from modelport.errors import InvalidInput, PayloadTooLarge, TooManyRequests
from modelport.stores.ratelimit import RateDecision, RateLimiter

log = structlog.get_logger("modelport.quotas")

MAX_RATE_RPS = 1_000_000.0
MAX_QUOTA_INT = 2**31 - 1


def check_overrides(overrides: dict[str, float | int | None]) -> None:
    """Quotas the limiter can work with: 0 (unlimited) or a sane positive value."""
    for name, value in overrides.items():
        if value is None:
            continue
        if value < 0:
            raise InvalidInput(f"quota {name} must not be negative (0 means unlimited)")
        if name == "rate_limit_rps":
            if value > MAX_RATE_RPS:
                raise InvalidInput(f"rate_limit_rps must be at most {MAX_RATE_RPS:g}")
        elif value > MAX_QUOTA_INT or value != int(value):
            raise InvalidInput(f"quota {name} must be a whole number up to {MAX_QUOTA_INT}")


@dataclass(frozen=True, slots=True)
class Quotas:
    rate_limit_rps: float = 0.0
    """Sustained requests per second; 0 is unlimited."""
    rate_limit_burst: int = 0
    """Bucket size; 0 means twice the rate (at least 1)."""
    max_concurrency: int = 0
    """In-flight inference requests per replica; 0 is unlimited."""
    max_rows: int = 0
    """Rows in one inference request; 0 is unlimited (the model's max_batch_size still holds)."""
    max_body_bytes: int = 0
    """Request body size; 0 means the server's MODELPORT_MAX_REQUEST_BYTES."""

    @property
    def burst(self) -> int:
        return self.rate_limit_burst or max(
            1, math.ceil(2 * min(self.rate_limit_rps, MAX_RATE_RPS))
        )

    def merged(self, overrides: dict[str, float | int | None]) -> Quotas:
        values = {k: v for k, v in overrides.items() if v is not None}
        if not values:
            return self
        return Quotas(
            rate_limit_rps=float(values.get("rate_limit_rps", self.rate_limit_rps)),
            rate_limit_burst=int(values.get("rate_limit_burst", self.rate_limit_burst)),
            max_concurrency=int(values.get("max_concurrency", self.max_concurrency)),
            max_rows=int(values.get("max_rows", self.max_rows)),
            max_body_bytes=int(values.get("max_body_bytes", self.max_body_bytes)),
        )


class QuotaGate:
    def __init__(self, limiter: RateLimiter) -> None:
        self._limiter = limiter
        self._inflight: dict[str, int] = {}
        self.limiter_errors = 0
        """Requests let through unchecked because the rate limiter was unavailable."""
        self._logged_errors = 0
        self._logged_at = -math.inf

    def check_rate_now(self, tenant: str, quotas: Quotas) -> bool:
        """``check_rate`` without waiting, when the limiter can decide at once (always in
        process; with leased tokens or a fresh refusal on Redis): True when the request may
        go on, raises when it may not, False when only ``check_rate`` can tell."""
        try:
            decision = self._limiter.try_acquire(tenant, quotas.rate_limit_rps, quotas.burst)
        except Exception as exc:  # noqa: BLE001 - a limiter outage must not stop serving
            self._let_through(exc)
            return True
        if decision is None:
            return False
        if not decision.allowed:
            raise self._refusal(tenant, quotas, decision)
        return True

    async def check_rate(self, tenant: str, quotas: Quotas) -> None:
        if quotas.rate_limit_rps <= 0:
            return
        try:
            decision = await self._limiter.acquire(tenant, quotas.rate_limit_rps, quotas.burst)
        except Exception as exc:  # noqa: BLE001 - a limiter outage must not stop serving
            self._let_through(exc)
            return
        if not decision.allowed:
            raise self._refusal(tenant, quotas, decision)

    def _let_through(self, exc: Exception) -> None:
        # Logged at most once a second, with how many requests went through unchecked: an
        # outage at thousands of requests per second must not flood the logs.
        self.limiter_errors += 1
        now = time.monotonic()
        if now - self._logged_at >= 1.0:
            log.warning(
                "rate_limiter_unavailable",
                error=type(exc).__name__,
                detail=str(exc),
                unchecked=self.limiter_errors - self._logged_errors,
            )
            self._logged_at, self._logged_errors = now, self.limiter_errors

    @staticmethod
    def _refusal(tenant: str, quotas: Quotas, decision: RateDecision) -> TooManyRequests:
        return TooManyRequests(
            f"tenant '{tenant}' is over its rate limit of {quotas.rate_limit_rps:g} "
            f"requests/s (burst {quotas.burst}); retry after {decision.retry_after_s:.2f} s",
            retry_after_s=decision.retry_after_s,
            limit=decision.limit,
            remaining=decision.remaining,
            reset_s=decision.reset_s,
        )

    def enter(self, tenant: str, quotas: Quotas) -> None:
        """Count an in-flight inference request; pair every call with ``leave``."""
        current = self._inflight.get(tenant, 0)
        if quotas.max_concurrency and current >= quotas.max_concurrency:
            raise TooManyRequests(
                f"tenant '{tenant}' already has {current} inference requests in flight on this "
                f"replica (max_concurrency {quotas.max_concurrency}); retry shortly",
                retry_after_s=1.0,
                limit=quotas.max_concurrency,
                remaining=0,
                reset_s=1.0,
            )
        self._inflight[tenant] = current + 1

    def leave(self, tenant: str) -> None:
        remaining = self._inflight.get(tenant, 1) - 1
        if remaining > 0:
            self._inflight[tenant] = remaining
        else:
            self._inflight.pop(tenant, None)

    @staticmethod
    def check_body(tenant: str, quotas: Quotas, size: int) -> None:
        if quotas.max_body_bytes and size > quotas.max_body_bytes:
            raise PayloadTooLarge(
                f"request body of {size} bytes exceeds tenant '{tenant}''s limit of "
                f"{quotas.max_body_bytes} bytes"
            )

    @staticmethod
    def check_rows(tenant: str, quotas: Quotas, rows: int) -> None:
        if quotas.max_rows and rows > quotas.max_rows:
            raise PayloadTooLarge(
                f"request has {rows} rows; tenant '{tenant}' may send at most {quotas.max_rows}"
            )

    async def close(self) -> None:
        await self._limiter.close()
