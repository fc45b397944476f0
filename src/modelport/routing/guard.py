"""The rollout guard's verdict: hold, advance, promote or roll back, from two windows.

A step's p99 from a hundred requests is its second-slowest one, so comparing two such figures
rolls back healthy candidates on noise. The guard instead counts the candidate's requests past
the line the plan draws (failed ones; ones slower than the baseline's p99 x ratio + slack) and
asks how likely that count would be from a candidate within the plan:

- it rolls back only on strong evidence (a one-sided binomial test below ``SIGNIFICANCE``), as
  soon as the candidate served ``min_requests`` (waiting out ``hold_s`` would keep sending
  traffic to a broken version);
- it advances only once the step lasted ``hold_s``, the candidate served ``min_requests`` and
  the evidence says, with ``CONFIDENCE``, that the candidate is not clearly worse (fewer than
  ``CLEARLY_WORSE`` x the allowed share of its requests past the latency line);
- in between it holds and says what it is waiting for.
"""

from __future__ import annotations

import bisect
import enum
import itertools
import math
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from modelport.routing.binomial import sf, upper_bound
from modelport.routing.request_stats import BOUNDS, RequestStats


class RolloutPlan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: list[float] = Field(
        default_factory=lambda: [5.0, 25.0, 50.0, 100.0],
        min_length=1,
        max_length=20,
        description="Candidate traffic share (percent) of each step, increasing, ending at 100.",
    )
    hold_s: float = Field(default=60.0, ge=0, le=86_400, description="Minimum time per step.")
    min_requests: int = Field(
        default=100, ge=1, le=10_000_000, description="Candidate requests needed per step."
    )
    max_error_rate_increase: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="Candidate error rate may exceed the baseline's by at most this much.",
    )
    max_p99_ratio: float = Field(
        default=1.5, ge=1, le=100, description="Candidate p99 may be at most this x baseline's."
    )
    p99_slack_ms: float = Field(
        default=2.0,
        ge=0,
        le=60_000,
        description="Absolute p99 allowance added to the ratio bound (noise at low latency).",
    )

    @field_validator("steps")
    @classmethod
    def _increasing(cls, steps: list[float]) -> list[float]:
        if any(not 0 < s <= 100 for s in steps):
            raise ValueError("every step is a percentage in (0, 100]")
        if any(b <= a for a, b in itertools.pairwise(steps)):
            raise ValueError("steps must increase")
        if steps[-1] != 100:
            raise ValueError("the last step must be 100 (the candidate takes all traffic)")
        return steps


class Action(enum.StrEnum):
    HOLD = "hold"
    ADVANCE = "advance"
    PROMOTE = "promote"
    ROLLBACK = "rollback"


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    reason: str
    figures: dict[str, Any]


#: The latency percentile the plan bounds.
QUANTILE = 0.99

#: A p99 lies inside a sample only from 1 / (1 - 0.99) = 100 requests on. A baseline that served
#: fewer in a step (e.g. at 100 %, where it only shows stragglers of the previous step) is no
#: yardstick; the previous step's baseline is used, or the guard waits for more.
MIN_BASELINE_REQUESTS = 100

#: A rollback needs a count this unlikely (one-sided p-value) from a candidate within bounds.
#: The guard looks every tick, so one look's false alarms add up: the level is strict.
SIGNIFICANCE = 0.001

#: Advancing needs this confidence that the candidate is not clearly worse.
CONFIDENCE = 0.95

#: Clearly worse: this many times the allowed share of requests past the latency line (5 % of
#: them slower than the baseline's p99 x ratio + slack means the candidate's p95 is past it).
CLEARLY_WORSE = 5.0


@dataclass(frozen=True, slots=True)
class _Test:
    """One count judged against the share the plan allows."""

    breach: bool
    sure: bool
    text: str
    figures: dict[str, Any]


def evaluate(
    plan: RolloutPlan,
    step: int,
    elapsed_s: float,
    baseline: RequestStats,
    candidate: RequestStats,
    reference: RequestStats | None = None,
) -> Verdict:
    """What to do with a rollout at ``step`` given both versions' windows for this step.

    ``reference`` is the baseline's window from the last step in which it served enough
    requests; it stands in for ``baseline`` when this step's is too thin to judge against."""
    percent = plan.steps[step]
    name = f"step {step + 1} ({percent:g} %)"
    yardstick: RequestStats | None = baseline
    if baseline.requests < MIN_BASELINE_REQUESTS:
        yardstick = reference if reference is not None else None
    figures: dict[str, Any] = {
        "step": step,
        "percent": percent,
        "elapsed_s": round(elapsed_s, 3),
        "candidate_requests": candidate.requests,
        "candidate_error_rate": round(candidate.error_rate, 6),
        "candidate_p99_ms": _ms(candidate.quantile(QUANTILE)),
        "baseline_requests": baseline.requests,
        "baseline_error_rate": round(baseline.error_rate, 6),
        "baseline_p99_ms": _ms(baseline.quantile(QUANTILE)),
    }
    if yardstick is not None and yardstick is not baseline:
        figures["judged_against_previous_step"] = {
            "baseline_requests": yardstick.requests,
            "baseline_error_rate": round(yardstick.error_rate, 6),
            "baseline_p99_ms": _ms(yardstick.quantile(QUANTILE)),
        }
    errors = _errors(plan, yardstick or baseline, candidate)
    figures.update(errors.figures)
    latency: _Test | None = None
    if yardstick is not None:
        latency = _latency(plan, yardstick, candidate)
        figures.update(latency.figures)
    enough = candidate.requests >= plan.min_requests
    if enough:
        for test in (errors, latency):
            if test is not None and test.breach:
                return Verdict(Action.ROLLBACK, test.text, figures)
    if elapsed_s < plan.hold_s or not enough:
        return Verdict(
            Action.HOLD,
            f"{name} holds: {elapsed_s:.0f}/{plan.hold_s:g} s, "
            f"{candidate.requests}/{plan.min_requests} candidate requests",
            figures,
        )
    if latency is None:
        if percent < 100:
            return Verdict(
                Action.HOLD,
                f"{name} holds: the baseline served {baseline.requests}/"
                f"{MIN_BASELINE_REQUESTS} requests this step, too few for a p99 to judge "
                "the candidate's against; waiting for more",
                figures,
            )
        latency_text = (
            f"latency not judged: the baseline served fewer than {MIN_BASELINE_REQUESTS} "
            "requests in every step, no p99 to compare with"
        )
    elif not latency.sure:
        return Verdict(
            Action.HOLD,
            f"{name} holds: not sure of the p99 yet: {latency.text}; waiting for more requests",
            figures,
        )
    else:
        latency_text = latency.text
    summary = f"{latency_text}; {errors.text}"
    if step + 1 >= len(plan.steps):
        return Verdict(Action.PROMOTE, f"every step stayed within bounds: {summary}", figures)
    return Verdict(Action.ADVANCE, f"{name} stayed within bounds: {summary}", figures)


def _errors(plan: RolloutPlan, baseline: RequestStats, candidate: RequestStats) -> _Test:
    allowed = min(1.0, baseline.error_rate + plan.max_error_rate_increase)
    p_value = sf(candidate.errors, candidate.requests, allowed)
    figures = {"error_p_value": _p(p_value)}
    if p_value < SIGNIFICANCE:
        text = (
            f"candidate error rate {candidate.error_rate:.2%} exceeds the baseline's "
            f"{baseline.error_rate:.2%} + {plan.max_error_rate_increase:.2%}: "
            f"{candidate.errors} of {candidate.requests} candidate requests failed, "
            f"p={_p(p_value):g} if at most {allowed:.2%} may"
        )
        return _Test(True, True, text, figures)
    text = (
        f"error rate candidate {candidate.error_rate:.2%} vs baseline {baseline.error_rate:.2%}"
        f" (p={_p(p_value):g}: no evidence of more than {allowed:.2%})"
    )
    return _Test(False, True, text, figures)


def _latency(plan: RolloutPlan, baseline: RequestStats, candidate: RequestStats) -> _Test:
    base_p99 = baseline.quantile(QUANTILE)
    cand_p99 = candidate.quantile(QUANTILE)
    bound = base_p99 * plan.max_p99_ratio + plan.p99_slack_ms / 1000
    allowed = 1 - QUANTILE
    n = candidate.requests
    above = _above(candidate, bound)
    share = above / n if n else 0.0
    p_value = sf(above, n, allowed)
    upper = upper_bound(above, n, CONFIDENCE)
    figures = {
        "p99_bound_ms": _ms(bound),
        "candidate_above_bound": above,
        "candidate_share_above_bound": round(share, 6),
        "latency_p_value": _p(p_value),
        "share_above_bound_upper": round(upper, 6),
        "confidence": CONFIDENCE,
    }
    line = (
        f"bound {bound * 1000:.1f} ms = baseline p99 {base_p99 * 1000:.1f} ms x "
        f"{plan.max_p99_ratio:g} + {plan.p99_slack_ms:g} ms"
    )
    counted = (
        f"{above} of {n} candidate requests ({share:.1%}) above the bound, "
        f"at most {allowed:.0%} expected, p={_p(p_value):g}"
    )
    if p_value < SIGNIFICANCE:
        text = f"candidate p99 {cand_p99 * 1000:.1f} ms exceeds the {line}: {counted}: a regression"
        return _Test(True, True, text, figures)
    worse = CLEARLY_WORSE * allowed
    sure = upper <= worse
    text = (
        f"p99 candidate {cand_p99 * 1000:.1f} ms vs baseline {base_p99 * 1000:.1f} ms "
        f"({line}): "
        f"{counted}: no evidence of regression "
        f"(at most {upper:.1%} above it with {CONFIDENCE:.0%} confidence"
    )
    if not sure:
        text += f", more than the {worse:.0%} that marks a clearly worse candidate"
    return _Test(False, sure, text + ")", figures)


def _above(window: RequestStats, seconds: float) -> int:
    """Requests certainly slower than ``seconds``: those in buckets wholly above it (a request
    whose bucket straddles the line counts as within, in the candidate's favour)."""
    first = bisect.bisect_left(BOUNDS, seconds) + 1
    return sum(window.latency[first:])


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _p(value: float) -> float:
    """A p-value to two significant digits (enough to say how sure; no false precision)."""
    if value <= 0.0 or not math.isfinite(value):
        return 0.0
    return float(f"{value:.2g}")


def next_reference(baseline: RequestStats, reference: RequestStats | None) -> RequestStats | None:
    """The yardstick a step hands to the next one when it advances: its own baseline if that
    served enough requests to have a p99, else the one it was handed."""
    if baseline.requests >= MIN_BASELINE_REQUESTS or reference is None:
        return baseline
    return reference
