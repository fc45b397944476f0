"""What an experiment's counts say: per-variant rates with intervals, the difference of each
variant to the control, the sample-ratio check and the guardrail's verdict.

Rates are per unit (the unit of assignment): click-through is the share of exposed units that
clicked an answer they were served under the experiment, conversion the share that purchased
through one. Units are assigned independently, so these are the Bernoulli proportions the
Wilson and Newcombe intervals assume; per-request rates would not be (one user's requests are
not independent), and are reported as counts only.
"""

from __future__ import annotations

from typing import Any

from modelport.routing.proportions import chi_square, newcombe, wilson
from modelport.stores.experiments import Experiment, Tally

#: A sample-ratio p-value below this flags a mismatch: the split is not what the weights say,
#: and the results are not to be trusted until the cause is found. Strict, because the check
#: runs every time someone looks.
SRM_THRESHOLD = 0.001


def analyse(experiment: Experiment, tallies: dict[str, Tally]) -> dict[str, Any]:
    control = tallies.get(experiment.control, Tally())
    variants = []
    for variant in experiment.variants:
        tally = tallies.get(variant.name, Tally())
        is_control = variant.name == experiment.control
        variants.append(
            {
                "name": variant.name,
                "weight": variant.weight,
                "control": is_control,
                "units": tally.units,
                "exposures": tally.exposures,
                "errors": tally.errors,
                "error_rate": _rate(tally.errors, tally.exposures),
                "p99_ms": tally.p99_ms,
                "clicked_requests": tally.clicked_requests,
                "click_through": _metric(
                    tally.clicked_units, tally.units, control, "clicked_units", is_control
                ),
                "conversion": _metric(
                    tally.converted_units, tally.units, control, "converted_units", is_control
                ),
            }
        )
    observed = [tallies.get(v.name, Tally()).units for v in experiment.variants]
    statistic, p_value = chi_square(observed, [w / 100 for w in experiment.weights])
    return {
        "experiment": experiment.id,
        "run": experiment.run,
        "status": experiment.status,
        "control": experiment.control,
        "units": sum(observed),
        "variants": variants,
        "sample_ratio": {
            "chi_square": statistic,
            "p_value": p_value,
            "threshold": SRM_THRESHOLD,
            "mismatch": p_value < SRM_THRESHOLD,
            "observed": dict(zip((v.name for v in experiment.variants), observed, strict=True)),
        },
        "guardrail": None
        if experiment.guardrail is None
        else {**experiment.guardrail, "breach": breach(experiment, tallies)},
    }


def breach(experiment: Experiment, tallies: dict[str, Tally]) -> str | None:
    """Why the guardrail stops the experiment, or None while it holds."""
    rule = experiment.guardrail
    if rule is None:
        return None
    metric, limit, least = rule["metric"], float(rule["max"]), int(rule["min_exposures"])
    for variant in experiment.variants:
        tally = tallies.get(variant.name)
        if variant.name == experiment.control or tally is None or tally.exposures < least:
            continue
        if metric == "error_rate":
            low, _ = wilson(tally.errors, tally.exposures)
            if low > limit:
                return (
                    f"variant {variant.name}: error rate {tally.errors / tally.exposures:.4f} "
                    f"({tally.errors} of {tally.exposures} exposures; 95 % interval from "
                    f"{low:.4f}) is above the guardrail's {limit:g}"
                )
        elif tally.p99_ms is not None and tally.timed >= least and tally.p99_ms > limit:
            return (
                f"variant {variant.name}: p99 latency {tally.p99_ms:.1f} ms over "
                f"{tally.timed} exposures is above the guardrail's {limit:g} ms"
            )
    return None


def _rate(successes: int, trials: int) -> float | None:
    return successes / trials if trials else None


def _metric(
    successes: int, trials: int, control: Tally, field: str, is_control: bool
) -> dict[str, Any]:
    low, high = wilson(successes, trials)
    found: dict[str, Any] = {
        "units": successes,
        "rate": _rate(successes, trials),
        "interval": [low, high] if trials else None,
    }
    base = getattr(control, field)
    if not is_control and trials and control.units:
        difference, d_low, d_high = newcombe(successes, trials, base, control.units)
        found["difference"] = {"value": difference, "interval": [d_low, d_high]}
    return found
