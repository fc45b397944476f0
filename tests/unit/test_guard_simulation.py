"""The rollout guard on a busy host, simulated: seeded latency samples with a heavy tail go
through the same verdicts, tick by tick, as a real rollout with the default plan. An identical
candidate must be promoted despite the noise; one 3x slower at p99 must never be."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from modelport.routing.guard import Action, RolloutPlan, Verdict, evaluate, next_reference
from modelport.routing.request_stats import RequestStats

SEEDS = range(20)
#: Requests per second over both versions (the guard looks once a second).
RATE = 40
#: Give up on a rollout that is still undecided after this long (simulated seconds).
LIMIT_S = 3600


def busy_host_latencies(rng: np.random.Generator, n: int, slowdown: float) -> np.ndarray:
    """Seconds per request on a loaded 2-core host: a lognormal body around 4 ms, and 3 % of
    requests stalled (GC, a neighbour's burst) for a Pareto-tailed extra 5 ms or more."""
    body = rng.lognormal(mean=math.log(0.004), sigma=0.5, size=n)
    stalled = rng.random(n) < 0.03
    extra = 0.005 * (1.0 + rng.pareto(1.5, size=n))
    samples: np.ndarray = (body + stalled * extra) * slowdown
    return samples


def record(window: RequestStats, seconds: np.ndarray) -> None:
    for value in seconds.tolist():
        window.record(True, value)


Judge = Callable[
    [RolloutPlan, int, float, RequestStats, RequestStats, RequestStats | None], Verdict
]


def point_estimate(
    plan: RolloutPlan,
    step: int,
    elapsed_s: float,
    baseline: RequestStats,
    candidate: RequestStats,
    reference: RequestStats | None,
) -> Verdict:
    """The rule the guard used to apply: the step's p99 against the baseline's x ratio +
    slack, as soon as ``min_requests`` arrived, with no regard for how many samples that is."""
    yardstick = baseline if baseline.requests >= 20 or reference is None else reference
    bound = yardstick.quantile(0.99) * plan.max_p99_ratio + plan.p99_slack_ms / 1000
    if candidate.requests >= plan.min_requests and candidate.quantile(0.99) > bound:
        return Verdict(Action.ROLLBACK, "p99 above the bound", {})
    if elapsed_s < plan.hold_s or candidate.requests < plan.min_requests:
        return Verdict(Action.HOLD, "", {})
    last = step + 1 >= len(plan.steps)
    return Verdict(Action.PROMOTE if last else Action.ADVANCE, "", {})


def simulate(
    seed: int, slowdown: float, judge: Judge = evaluate
) -> tuple[Verdict | None, list[Verdict]]:
    """One rollout with the default plan, as the guard would run it; the final verdict (None
    if undecided by ``LIMIT_S``) and every step's advance."""
    plan = RolloutPlan()
    rng = np.random.default_rng(seed)
    step, elapsed = 0, 0.0
    baseline, candidate, reference = RequestStats(), RequestStats(), None
    advances: list[Verdict] = []
    for _ in range(LIMIT_S):
        arrived = int(rng.poisson(RATE))
        to_candidate = int(rng.binomial(arrived, plan.steps[step] / 100))
        record(baseline, busy_host_latencies(rng, arrived - to_candidate, 1.0))
        record(candidate, busy_host_latencies(rng, to_candidate, slowdown))
        elapsed += 1.0
        verdict = judge(plan, step, elapsed, baseline, candidate, reference)
        if verdict.action in (Action.PROMOTE, Action.ROLLBACK):
            return verdict, advances
        if verdict.action is Action.ADVANCE:
            advances.append(verdict)
            reference = next_reference(baseline, reference)
            step, elapsed = step + 1, 0.0
            baseline, candidate = RequestStats(), RequestStats()
    return None, advances


def test_the_simulated_host_is_noisy_enough_to_fool_a_p99_of_100_requests() -> None:
    # The point-estimate rule rolls an identical candidate back on this host in many seeds:
    # the simulation reproduces the noise the guard has to see through.
    outcomes = [simulate(seed, 1.0, point_estimate)[0] for seed in SEEDS]
    fooled = sum(v is not None and v.action is Action.ROLLBACK for v in outcomes)
    assert fooled >= 5, fooled


def test_an_identical_candidate_on_a_busy_host_is_promoted() -> None:
    outcomes = [simulate(seed, 1.0) for seed in SEEDS]
    promoted = [v for v, _ in outcomes if v is not None and v.action is Action.PROMOTE]
    assert len(promoted) >= 19, [None if v is None else v.reason for v, _ in outcomes]
    for verdict, advances in outcomes:
        if verdict is not None and verdict.action is Action.PROMOTE:
            assert len(advances) == 3
            # Each step says how sure it was.
            for decided in [*advances, verdict]:
                assert "no evidence of regression" in decided.reason, decided.reason
                assert "p=" in decided.reason and "confidence" in decided.reason


def test_a_candidate_three_times_slower_at_p99_is_rolled_back_every_time() -> None:
    outcomes = [simulate(seed, 3.0) for seed in SEEDS]
    rolled_back = [v for v, _ in outcomes if v is not None and v.action is Action.ROLLBACK]
    assert len(rolled_back) == len(SEEDS), [None if v is None else v.reason for v, _ in outcomes]
    for verdict in rolled_back:
        assert "p99" in verdict.reason and "a regression" in verdict.reason, verdict.reason
        assert verdict.figures["latency_p_value"] < 0.001, verdict.figures


@pytest.mark.parametrize("slowdown", [1.0, 3.0])
def test_the_simulation_is_reproducible(slowdown: float) -> None:
    first, _ = simulate(7, slowdown)
    again, _ = simulate(7, slowdown)
    assert first == again
