"""Backoff between a consumer's tries: exponential ceilings, full jitter, a hard cap."""

from __future__ import annotations

import random

from modelport.workers.retry import backoff_ceiling_s, backoff_s


def test_the_ceiling_doubles_per_failed_attempt_up_to_the_cap() -> None:
    ceilings = [backoff_ceiling_s(attempt, 0.1, 1.0) for attempt in range(1, 7)]
    assert ceilings == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def test_a_thousandth_attempt_waits_the_cap_not_an_overflow() -> None:
    assert backoff_ceiling_s(1000, 0.1, 30.0) == 30.0


def test_waits_spread_over_the_whole_range_below_the_ceiling() -> None:
    # Full jitter: workers that failed together come back at different times.
    draws = random.Random(7)
    waits = [backoff_s(4, 0.1, 30.0, draws.uniform) for _ in range(2000)]
    assert all(0.0 <= w <= 0.8 for w in waits)
    assert min(waits) < 0.05 and max(waits) > 0.75
    assert len({round(w, 3) for w in waits}) > 500


def test_no_base_means_no_wait() -> None:
    assert backoff_s(3, 0.0, 10.0) == 0.0
