"""Exponential backoff with full jitter.

A failed attempt waits a random time in ``[0, min(max_s, base_s * 2**(attempt - 1))]``: the
ceiling grows with each attempt, and the randomness spreads the retries of many workers that
failed together (a store that blipped) instead of sending them back in one wave.
"""

from __future__ import annotations

import random
from collections.abc import Callable


def backoff_ceiling_s(attempt: int, base_s: float, max_s: float) -> float:
    """The longest wait after failed attempt ``attempt`` (1 for the first)."""
    if attempt < 1 or base_s <= 0:
        return 0.0
    # 2**exponent overflows a float long before an attempt count does; cap the exponent.
    return min(max_s, base_s * 2.0 ** min(attempt - 1, 64))


def backoff_s(
    attempt: int,
    base_s: float,
    max_s: float,
    uniform: Callable[[float, float], float] = random.uniform,
) -> float:
    """How long to wait after failed attempt ``attempt`` before the next."""
    return uniform(0.0, backoff_ceiling_s(attempt, base_s, max_s))
