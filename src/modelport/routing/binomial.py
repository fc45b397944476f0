"""Binomial tail probabilities and confidence bounds: how sure the rollout guard is.

The guard counts how many of a version's requests fall past a line (failed, or slower than a
latency bound) and asks whether that count is evidence of a share above what the plan allows.
Counts reach millions, so the sums run in log space and stop once their terms stop mattering.
"""

from __future__ import annotations

import math

#: Terms this much smaller than the largest one so far no longer change a tail sum.
_NEGLIGIBLE = math.log(1e-17)


def _log_pmf(k: int, n: int, p: float) -> float:
    return (
        math.lgamma(n + 1)
        - math.lgamma(k + 1)
        - math.lgamma(n - k + 1)
        + k * math.log(p)
        + (n - k) * math.log1p(-p)
    )


def _tail(start: int, stop: int, step: int, n: int, p: float) -> float:
    """Sum of the pmf from ``start`` towards ``stop`` (exclusive), walking away from the mode."""
    total = 0.0
    largest = -math.inf
    for k in range(start, stop, step):
        term = _log_pmf(k, n, p)
        largest = max(largest, term)
        if term < largest + _NEGLIGIBLE:
            break
        total += math.exp(term)
    return total


def sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p): the one-sided p-value of seeing ``k`` or more."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    if k > n * p:
        return min(1.0, _tail(k, n + 1, 1, n, p))
    return max(0.0, 1.0 - _tail(k - 1, -1, -1, n, p))


def cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p)."""
    return 1.0 - sf(k + 1, n, p)


def upper_bound(k: int, n: int, confidence: float = 0.95) -> float:
    """Clopper-Pearson upper confidence bound on the share behind ``k`` of ``n``: the largest
    share that would still show ``k`` or fewer with probability ``1 - confidence``."""
    if n <= 0 or k >= n:
        return 1.0
    alpha = 1.0 - confidence
    low, high = k / n, 1.0
    for _ in range(48):
        mid = (low + high) / 2
        if cdf(k, n, mid) > alpha:
            low = mid
        else:
            high = mid
    return high
