"""Statistics of an experiment's proportions: intervals, differences and the ratio check.

- ``wilson``: the Wilson score interval of a proportion; unlike the normal approximation it
  stays inside [0, 1] and keeps its coverage for small counts and rare events.
- ``newcombe``: the interval of a difference of two independent proportions from their Wilson
  intervals (Newcombe 1998, method 10); the difference of a treatment to its control.
- ``chi_square_sf``: the p-value of Pearson's chi-square statistic, for the sample-ratio check
  (are units split as the weights say?).

Counts are of units, each assigned once: the Bernoulli trials these intervals assume.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

#: The two-sided 95 % normal quantile.
Z95 = 1.959963984540054


def wilson(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """The interval of ``successes / trials``; (0, 1) when there were no trials."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    z2 = z * z
    scale = 1 + z2 / trials
    centre = (p + z2 / (2 * trials)) / scale
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / scale
    # At 0 (or all) successes the bound is exactly 0 (or 1); the arithmetic leaves dust.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high


def newcombe(
    successes_a: int, trials_a: int, successes_b: int, trials_b: int, z: float = Z95
) -> tuple[float, float, float]:
    """``p_a - p_b`` with its interval: (difference, low, high)."""
    p_a = successes_a / trials_a if trials_a else 0.0
    p_b = successes_b / trials_b if trials_b else 0.0
    low_a, high_a = wilson(successes_a, trials_a, z)
    low_b, high_b = wilson(successes_b, trials_b, z)
    difference = p_a - p_b
    low = difference - math.sqrt((p_a - low_a) ** 2 + (high_b - p_b) ** 2)
    high = difference + math.sqrt((high_a - p_a) ** 2 + (p_b - low_b) ** 2)
    return difference, max(-1.0, low), min(1.0, high)


def chi_square(observed: Sequence[int], expected_shares: Sequence[float]) -> tuple[float, float]:
    """Pearson's statistic of ``observed`` counts against the shares (summing to 1) and its
    p-value; (0, 1) when there is nothing to compare."""
    total = sum(observed)
    cells = [(o, s * total) for o, s in zip(observed, expected_shares, strict=True) if s > 0]
    if total == 0 or len(cells) < 2:
        return 0.0, 1.0
    statistic = sum((o - e) ** 2 / e for o, e in cells)
    return statistic, chi_square_sf(statistic, len(cells) - 1)


def chi_square_sf(statistic: float, df: int) -> float:
    """P(X >= statistic) for X ~ chi-square with ``df`` degrees of freedom."""
    if statistic <= 0:
        return 1.0
    return _upper_gamma(df / 2.0, statistic / 2.0)


def _upper_gamma(a: float, x: float) -> float:
    """The regularized upper incomplete gamma Q(a, x): a series below a + 1, a continued
    fraction above it (each converges fast on its side)."""
    log_front = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1:
        term = total = 1.0 / a
        n = a
        for _ in range(10_000):
            n += 1
            term *= x / n
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(log_front))
    # Lentz's method for the continued fraction.
    tiny = 1e-300
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        step = d * c
        h *= step
        if abs(step - 1) < 1e-15:
            break
    return min(1.0, math.exp(log_front) * h)
