"""The rollout guard's verdict: hold, advance, promote or roll back, from two windows.

A step holds until it has lasted ``hold_s`` and the candidate has served ``min_requests``;
then the candidate must stay within the bounds relative to the baseline measured over the
same step, or the rollout goes back to the baseline.
"""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from modelport.routing.window import Window


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


#: Fewer baseline requests than this in a step are no yardstick (e.g. at 100 %, where the
#: baseline only shows stragglers of the previous step); the previous step's baseline is used.
MIN_BASELINE_REQUESTS = 20


def evaluate(
    plan: RolloutPlan,
    step: int,
    elapsed_s: float,
    baseline: Window,
    candidate: Window,
    reference: Window | None = None,
) -> Verdict:
    """What to do with a rollout at ``step`` given both versions' windows for this step.

    ``reference`` is the baseline's window from the last step in which it served enough
    requests; it stands in for ``baseline`` when this step's is too thin to judge against."""
    yardstick = baseline
    if baseline.requests < MIN_BASELINE_REQUESTS and reference is not None:
        yardstick = reference
    figures: dict[str, Any] = {
        "step": step,
        "percent": plan.steps[step],
        "elapsed_s": round(elapsed_s, 3),
        "candidate_requests": candidate.requests,
        "candidate_error_rate": round(candidate.error_rate, 6),
        "candidate_p99_ms": round(candidate.quantile(0.99) * 1000, 3),
        "baseline_requests": baseline.requests,
        "baseline_error_rate": round(baseline.error_rate, 6),
        "baseline_p99_ms": round(baseline.quantile(0.99) * 1000, 3),
    }
    if yardstick is not baseline:
        figures["judged_against_previous_step"] = {
            "baseline_requests": yardstick.requests,
            "baseline_error_rate": round(yardstick.error_rate, 6),
            "baseline_p99_ms": round(yardstick.quantile(0.99) * 1000, 3),
        }
    # Latency is judged only against a baseline that served enough requests to have a p99.
    judge_latency = yardstick.requests >= MIN_BASELINE_REQUESTS
    bad = _breach(plan, yardstick, candidate, judge_latency=judge_latency)
    enough = candidate.requests >= plan.min_requests
    if bad is not None and enough:
        return Verdict(Action.ROLLBACK, bad, figures)
    if elapsed_s < plan.hold_s or not enough:
        return Verdict(
            Action.HOLD,
            f"step {step + 1} ({plan.steps[step]:g} %) holds: {elapsed_s:.0f}/{plan.hold_s:g} s, "
            f"{candidate.requests}/{plan.min_requests} candidate requests",
            figures,
        )
    if step + 1 >= len(plan.steps):
        return Verdict(Action.PROMOTE, "every step stayed within bounds", figures)
    return Verdict(
        Action.ADVANCE,
        f"step {step + 1} ({plan.steps[step]:g} %) stayed within bounds",
        figures,
    )


def _breach(
    plan: RolloutPlan, baseline: Window, candidate: Window, *, judge_latency: bool = True
) -> str | None:
    allowed = baseline.error_rate + plan.max_error_rate_increase
    if candidate.errors and candidate.error_rate > allowed:
        return (
            f"candidate error rate {candidate.error_rate:.2%} exceeds the baseline's "
            f"{baseline.error_rate:.2%} + {plan.max_error_rate_increase:.2%}"
        )
    if judge_latency:
        base_p99 = baseline.quantile(0.99)
        bound = base_p99 * plan.max_p99_ratio + plan.p99_slack_ms / 1000
        cand_p99 = candidate.quantile(0.99)
        if cand_p99 > bound:
            return (
                f"candidate p99 {cand_p99 * 1000:.1f} ms exceeds {bound * 1000:.1f} ms "
                f"(baseline p99 {base_p99 * 1000:.1f} ms x {plan.max_p99_ratio:g} "
                f"+ {plan.p99_slack_ms:g} ms)"
            )
    return None
