"""The circuit breaker shared by the response cache and the feature join."""

from __future__ import annotations

import time

from modelport.stores.breaker import Breaker, Call


def test_a_failure_skips_the_dependency_then_one_caller_probes_it() -> None:
    breaker = Breaker(backoff_min_s=0.05, backoff_max_s=0.2)
    call = breaker.enter()
    assert call is Call.CALL
    assert breaker.failed() == 0.05  # opened: the caller logs this back-off once
    breaker.leave(call, ok=False)
    assert breaker.enter() is Call.SKIP and not breaker.available
    time.sleep(0.06)
    probe = breaker.enter()
    assert probe is Call.PROBE
    assert breaker.enter() is Call.SKIP  # one probe at a time
    assert breaker.leave(probe, ok=True)  # recovered
    assert breaker.enter() is Call.CALL and breaker.available


def test_failing_probes_double_the_back_off_up_to_its_cap() -> None:
    breaker = Breaker(backoff_min_s=0.01, backoff_max_s=0.03)
    assert breaker.failed() == 0.01
    assert breaker.failed() is None  # already open: a call that was in flight
    opened = time.monotonic()
    gaps = []
    for _ in range(4):
        while (call := breaker.enter()) is Call.SKIP:
            time.sleep(0.001)
        gaps.append(time.monotonic() - opened)
        breaker.failed()
        opened = time.monotonic()
        breaker.leave(call, ok=False)
    # 10, 20, then 30 ms twice: the cap holds.
    assert gaps[0] >= 0.01 and gaps[1] >= 0.02 and gaps[2] >= 0.03 and gaps[3] >= 0.03
    assert gaps[3] < 0.045
