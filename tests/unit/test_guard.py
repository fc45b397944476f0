"""The rollout guard: which plans are accepted, and when a step holds, advances, promotes the
candidate or rolls it back; and the latency windows its verdicts are computed from."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from modelport.routing import binomial
from modelport.routing.guard import Action, RolloutPlan, evaluate
from modelport.routing.request_stats import BOUNDS, RequestStats

MS = 0.001


def window(requests: int, errors: int = 0, latency_ms: float = 10.0) -> RequestStats:
    """``requests`` requests at ``latency_ms`` each, the first ``errors`` of them failed."""
    w = RequestStats()
    for i in range(requests):
        w.record(i >= errors, latency_ms * MS)
    return w


def plan(**fields: Any) -> RolloutPlan:
    defaults: dict[str, Any] = {"steps": [10, 50, 100], "hold_s": 60, "min_requests": 100}
    return RolloutPlan.model_validate({**defaults, **fields})


# --------------------------------------------------------------------------- the plan


def test_the_default_plan_is_valid_and_ends_with_all_traffic() -> None:
    default = RolloutPlan()
    assert default.steps == [5.0, 25.0, 50.0, 100.0]
    assert default.steps[-1] == 100


def test_a_single_step_straight_to_100_is_valid() -> None:
    assert RolloutPlan(steps=[100]).steps == [100]


@pytest.mark.parametrize(
    ("steps", "words"),
    [
        ([5, 25, 25, 100], "increase"),
        ([50, 25, 100], "increase"),
        ([5, 25, 50], "last step must be 100"),
        ([0, 50, 100], "(0, 100]"),
        ([-5, 100], "(0, 100]"),
        ([50, 150], "(0, 100]"),
    ],
)
def test_a_plan_with_bad_steps_is_refused_saying_why(steps: list[float], words: str) -> None:
    with pytest.raises(ValidationError) as info:
        RolloutPlan(steps=steps)
    assert words in str(info.value)


@pytest.mark.parametrize(
    "fields",
    [
        {"steps": []},
        {"steps": [float(i) for i in range(5, 105, 5)] + [100.0]},  # 21 steps
        {"hold_s": -1},
        {"hold_s": 86_401},
        {"min_requests": 0},
        {"max_error_rate_increase": -0.01},
        {"max_error_rate_increase": 1.5},
        {"max_p99_ratio": 0.9},
        {"p99_slack_ms": -1},
        {"hold": 60},  # a typo is an error, not silently the default
    ],
)
def test_a_plan_outside_its_bounds_is_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RolloutPlan.model_validate(fields)


def test_a_plan_survives_its_stored_form() -> None:
    original = plan(hold_s=30, max_p99_ratio=2.0)
    assert RolloutPlan.model_validate(json.loads(original.model_dump_json())) == original


# --------------------------------------------------------------------------- verdicts


def test_a_step_holds_until_it_has_lasted_hold_s() -> None:
    verdict = evaluate(plan(), 0, 59.0, window(1000), window(500))
    assert verdict.action is Action.HOLD
    assert "59/60 s" in verdict.reason


def test_a_step_holds_until_the_candidate_served_min_requests() -> None:
    verdict = evaluate(plan(), 0, 3600.0, window(1000), window(99))
    assert verdict.action is Action.HOLD
    assert "99/100 candidate requests" in verdict.reason


def test_a_healthy_step_advances_once_both_conditions_hold() -> None:
    verdict = evaluate(plan(), 0, 60.0, window(1000), window(100))
    assert verdict.action is Action.ADVANCE
    assert verdict.figures["candidate_requests"] == 100
    assert verdict.figures["percent"] == 10


def test_a_healthy_last_step_promotes_the_candidate() -> None:
    verdict = evaluate(plan(), 2, 60.0, window(0), window(500))
    assert verdict.action is Action.PROMOTE


def test_a_single_step_plan_promotes_directly() -> None:
    verdict = evaluate(plan(steps=[100]), 0, 60.0, window(0), window(100))
    assert verdict.action is Action.PROMOTE


def test_an_error_rate_breach_rolls_back_naming_the_error_rate() -> None:
    verdict = evaluate(plan(), 0, 60.0, window(1000, errors=0), window(200, errors=20))
    assert verdict.action is Action.ROLLBACK
    assert "error rate" in verdict.reason
    assert "10.00%" in verdict.reason
    assert verdict.figures["candidate_error_rate"] == pytest.approx(0.1)


def test_an_error_rate_breach_rolls_back_before_hold_s_is_up() -> None:
    # Waiting out the step would keep sending traffic to a broken candidate.
    verdict = evaluate(plan(), 0, 5.0, window(1000), window(200, errors=50))
    assert verdict.action is Action.ROLLBACK


def test_a_few_errors_are_no_evidence_of_a_worse_error_rate() -> None:
    # 3 of 100 where 1 % may fail: p=0.08, not enough to throw the rollout away.
    verdict = evaluate(plan(), 0, 60.0, window(1000), window(100, errors=3))
    assert verdict.action is Action.ADVANCE
    assert verdict.figures["error_p_value"] == pytest.approx(0.079, abs=0.001)


def test_errors_within_the_allowed_increase_over_the_baseline_advance() -> None:
    # Baseline 2 %, candidate 2.5 %: within the default allowance of +1 point.
    verdict = evaluate(plan(), 0, 60.0, window(1000, errors=20), window(200, errors=5))
    assert verdict.action is Action.ADVANCE


def test_a_p99_breach_rolls_back_naming_p99() -> None:
    verdict = evaluate(plan(), 0, 60.0, window(1000, latency_ms=10), window(200, latency_ms=50))
    assert verdict.action is Action.ROLLBACK
    assert "p99" in verdict.reason
    assert verdict.figures["candidate_p99_ms"] > verdict.figures["baseline_p99_ms"] * 1.5


def test_a_slow_tail_of_the_candidate_is_a_p99_breach_once_the_evidence_is_in() -> None:
    # 2.5 % of requests are slow where 1 % may be: 5 of 200 could still be bad luck (p=0.05),
    # so the step waits and says so; 20 of 800 cannot (p < 0.001).
    baseline = window(4000, latency_ms=10)
    early = window(195, latency_ms=10).add(window(5, latency_ms=400))
    verdict = evaluate(plan(), 0, 60.0, baseline, early)
    assert verdict.action is Action.HOLD
    assert "not sure of the p99 yet" in verdict.reason
    assert "5 of 200 candidate requests (2.5%) above the bound" in verdict.reason
    later = window(780, latency_ms=10).add(window(20, latency_ms=400))
    verdict = evaluate(plan(), 0, 60.0, baseline, later)
    assert verdict.action is Action.ROLLBACK
    assert "p99" in verdict.reason and "a regression" in verdict.reason
    assert verdict.figures["candidate_above_bound"] == 20
    assert verdict.figures["latency_p_value"] < 0.001


def test_two_slow_requests_of_a_hundred_are_no_evidence_of_a_regression() -> None:
    # The noise that used to roll back identical candidates: the step's p99 is its
    # second-slowest request, here a stall far above the bound.
    candidate = window(98, latency_ms=5).add(window(2, latency_ms=20))
    verdict = evaluate(plan(), 0, 60.0, window(2000, latency_ms=5), candidate)
    assert verdict.figures["candidate_p99_ms"] > verdict.figures["p99_bound_ms"]
    assert verdict.action is not Action.ROLLBACK
    assert "2 of 100 candidate requests (2.0%) above the bound" in verdict.reason
    assert "p=0.26" in verdict.reason


def test_a_verdict_says_how_sure_it_is() -> None:
    verdict = evaluate(plan(), 0, 60.0, window(1000, latency_ms=10), window(300, latency_ms=10))
    assert verdict.action is Action.ADVANCE
    p99 = f"{window(1, latency_ms=10).quantile(0.99) * 1000:.1f} ms"  # its bucket's bound
    assert f"p99 candidate {p99} vs baseline {p99}" in verdict.reason
    assert "0 of 300 candidate requests (0.0%) above the bound" in verdict.reason
    assert "no evidence of regression (at most 1.0% above it with 95% confidence)" in (
        verdict.reason
    )
    assert verdict.figures["latency_p_value"] == 1.0
    assert verdict.figures["share_above_bound_upper"] == pytest.approx(0.00994, abs=1e-4)


def test_latency_within_ratio_and_slack_advances() -> None:
    verdict = evaluate(plan(), 0, 60.0, window(1000, latency_ms=10), window(200, latency_ms=13))
    assert verdict.action is Action.ADVANCE


def test_the_absolute_slack_absorbs_noise_at_low_latency() -> None:
    # 4x slower, but 0.2 ms -> 0.8 ms is well within the 2 ms slack.
    verdict = evaluate(plan(), 0, 60.0, window(1000, latency_ms=0.2), window(200, latency_ms=0.8))
    assert verdict.action is Action.ADVANCE
    strict = evaluate(
        plan(p99_slack_ms=0), 0, 60.0, window(1000, latency_ms=0.2), window(200, latency_ms=0.8)
    )
    assert strict.action is Action.ROLLBACK


def test_a_step_waits_for_enough_baseline_requests_to_have_a_p99() -> None:
    verdict = evaluate(plan(), 0, 60.0, window(40), window(200, latency_ms=5000))
    assert verdict.action is Action.HOLD
    assert "the baseline served 40/100 requests this step" in verdict.reason


def test_at_100_percent_without_any_baseline_window_latency_is_not_judged() -> None:
    # A single-step plan: the baseline gets no traffic and no earlier step measured it.
    verdict = evaluate(plan(steps=[100]), 0, 60.0, window(0), window(200, latency_ms=5000))
    assert verdict.action is Action.PROMOTE
    assert "latency not judged" in verdict.reason


def test_a_step_holds_while_the_latency_evidence_is_inconclusive() -> None:
    # 2 of 100 above the bound: no evidence of a regression, but the share could be up to
    # 6 %, past the 5 % that marks a clearly worse candidate; more requests decide.
    candidate = window(98, latency_ms=10).add(window(2, latency_ms=100))
    verdict = evaluate(plan(), 0, 600.0, window(2000, latency_ms=10), candidate)
    assert verdict.action is Action.HOLD
    assert "not sure of the p99 yet" in verdict.reason
    assert "waiting for more requests" in verdict.reason
    more = window(398, latency_ms=10).add(window(2, latency_ms=100))
    assert evaluate(plan(), 0, 600.0, window(2000, latency_ms=10), more).action is Action.ADVANCE


def test_stragglers_of_the_previous_step_are_no_yardstick_at_100_percent() -> None:
    # At 100 % the baseline's window holds only a few requests published late; a healthy
    # candidate a little slower than those must not be rolled back because of them.
    verdict = evaluate(plan(), 2, 600.0, window(9, latency_ms=5), window(500, latency_ms=12))
    assert verdict.action is Action.PROMOTE


def test_at_100_percent_a_slow_candidate_is_judged_against_the_previous_steps_baseline() -> None:
    previous = window(400, latency_ms=10)
    verdict = evaluate(
        plan(), 2, 600.0, window(3, latency_ms=10), window(500, latency_ms=200), previous
    )
    assert verdict.action is Action.ROLLBACK
    assert "p99" in verdict.reason
    assert verdict.figures["judged_against_previous_step"]["baseline_requests"] == 400
    healthy = evaluate(
        plan(), 2, 600.0, window(3, latency_ms=10), window(500, latency_ms=11), previous
    )
    assert healthy.action is Action.PROMOTE


@pytest.mark.parametrize(
    "candidate",
    [window(50, errors=50), window(50, latency_ms=5000)],
    ids=["errors", "latency"],
)
def test_a_breach_before_min_requests_holds(candidate: RequestStats) -> None:
    # A handful of requests is not evidence enough to throw a rollout away.
    verdict = evaluate(plan(), 0, 600.0, window(1000), candidate)
    assert verdict.action is Action.HOLD


def test_the_hold_reason_names_the_step_and_its_share() -> None:
    verdict = evaluate(plan(), 1, 10.0, window(10), window(10))
    assert "step 2 (50 %)" in verdict.reason


# --------------------------------------------------------------------------- evidence


@pytest.mark.parametrize(
    ("k", "n", "p"),
    [(0, 10, 0.5), (3, 10, 0.5), (2, 100, 0.01), (5, 100, 0.01), (15, 600, 0.01), (50, 200, 0.03)],
)
def test_the_binomial_tail_matches_the_exact_sum(k: int, n: int, p: float) -> None:
    exact = sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))
    assert binomial.sf(k, n, p) == pytest.approx(exact, rel=1e-9)
    assert binomial.cdf(k, n, p) == pytest.approx(1 - binomial.sf(k + 1, n, p))


def test_the_binomial_tail_handles_edges_and_large_counts() -> None:
    assert binomial.sf(0, 100, 0.3) == 1.0
    assert binomial.sf(101, 100, 0.3) == 0.0
    assert binomial.sf(1, 100, 0.0) == 0.0
    # Ten million requests: log-space sums neither overflow nor take long.
    assert binomial.sf(100_500, 10_000_000, 0.01) == pytest.approx(0.0563, abs=1e-3)


@pytest.mark.parametrize(("k", "n"), [(0, 59), (1, 100), (9, 300)])
def test_the_upper_bound_leaves_the_stated_chance_of_so_few(k: int, n: int) -> None:
    upper = binomial.upper_bound(k, n, 0.95)
    assert binomial.cdf(k, n, upper) == pytest.approx(0.05, abs=1e-6)
    assert k / n < upper < 1


# --------------------------------------------------------------------------- windows


def test_an_empty_window_has_no_latency_and_no_error_rate() -> None:
    empty = RequestStats()
    assert empty.quantile(0.99) == 0.0
    assert empty.error_rate == 0.0


def test_error_rate_counts_failed_requests() -> None:
    assert window(200, errors=30).error_rate == pytest.approx(0.15)


def test_quantiles_are_within_one_bucket_above_the_true_value() -> None:
    w = RequestStats()
    for ms in range(1, 101):
        w.record(True, ms * MS)
    for q, true_ms in ((0.5, 50), (0.9, 90), (0.99, 99)):
        got = w.quantile(q) / MS
        assert true_ms <= got <= true_ms * 1.12 + 1e-9, (q, got)
    assert w.quantile(0.5) < w.quantile(0.9) <= w.quantile(0.99)


def test_latency_beyond_the_last_bucket_is_reported_as_the_last_bound() -> None:
    w = window(10, latency_ms=3_600_000)  # an hour
    assert w.quantile(0.99) == BOUNDS[-1]


def test_windows_from_two_replicas_add_up() -> None:
    a = window(100, errors=3, latency_ms=5)
    b = window(50, errors=2, latency_ms=500)
    total = a.add(b)
    assert (total.requests, total.errors) == (150, 5)
    assert sum(total.latency) == 150
    assert total.quantile(0.5) == a.quantile(0.5)
    assert total.quantile(0.99) == b.quantile(0.99)


def test_minus_gives_what_happened_since_the_earlier_window() -> None:
    earlier = window(100, errors=1, latency_ms=5)
    later = earlier.add(window(40, errors=4, latency_ms=50))
    step = later.minus(earlier)
    assert (step.requests, step.errors) == (40, 4)
    assert step.quantile(0.5) == window(1, latency_ms=50).quantile(0.5)


def test_minus_is_never_negative() -> None:
    # A replica that restarted publishes smaller counters than the step's snapshot.
    step = window(10).minus(window(100, errors=5))
    assert (step.requests, step.errors) == (0, 0)
    assert min(step.latency) == 0


def test_a_window_survives_its_stored_form() -> None:
    original = window(100, errors=7, latency_ms=12)
    stored = json.loads(json.dumps(original.to_dict()))
    assert RequestStats.from_dict(stored) == original


def test_a_missing_stored_window_is_empty() -> None:
    assert RequestStats.from_dict(None) == RequestStats()
    assert RequestStats.from_dict({}) == RequestStats()


def test_a_stored_window_with_fewer_buckets_is_padded() -> None:
    restored = RequestStats.from_dict({"requests": 2, "errors": 0, "latency": [1, 1]})
    assert len(restored.latency) == len(BOUNDS) + 1
    assert restored.quantile(0.99) == BOUNDS[1]


def test_a_copy_is_independent() -> None:
    original = window(5)
    copy = original.copy()
    copy.record(False, 1.0)
    assert original.requests == 5 and copy.requests == 6


latencies = st.lists(
    st.tuples(st.booleans(), st.floats(min_value=0, max_value=120, allow_nan=False)),
    max_size=50,
)


def _recorded(samples: list[tuple[bool, float]]) -> RequestStats:
    w = RequestStats()
    for ok, seconds in samples:
        w.record(ok, seconds)
    return w


@given(first=latencies, second=latencies)
def test_adding_then_subtracting_a_window_gives_the_original(
    first: list[tuple[bool, float]], second: list[tuple[bool, float]]
) -> None:
    a, b = _recorded(first), _recorded(second)
    assert a.add(b).minus(b) == a
    assert a.add(b) == _recorded(first + second)
