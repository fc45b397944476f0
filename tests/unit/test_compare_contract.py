"""Shadow comparisons (how far a shadow version's answers are from the primary's) and release
contracts (which interface changes break callers, and golden examples a version must reproduce)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from modelport.errors import InvalidInput
from modelport.routing.compare import ShadowTally, max_abs_diff, spearman
from modelport.serving.contract import golden_failures, incompatibilities, parse_golden
from modelport.serving.signature import Signature, TensorSpec


def arrays(**named: Any) -> dict[str, np.ndarray]:
    return {name: np.asarray(value) for name, value in named.items()}


# --------------------------------------------------------------------------- max_abs_diff


def test_equal_answers_differ_by_nothing() -> None:
    answer = arrays(scores=np.array([[0.1, 0.9]], dtype=np.float32), label=np.array([1]))
    assert max_abs_diff(answer, {k: v.copy() for k, v in answer.items()}) == 0.0


def test_the_largest_difference_over_every_output_is_reported() -> None:
    primary = arrays(a=[1.0, 2.0, 3.0], b=[10, 20])
    shadow = arrays(a=[1.0, 2.5, 3.0], b=[10, 18])
    assert max_abs_diff(primary, shadow) == pytest.approx(2.0)


def test_precision_changes_are_measured_not_refused() -> None:
    primary = arrays(y=np.array([1.0, 2.0], dtype=np.float64))
    shadow = arrays(y=np.array([1.0, 2.001], dtype=np.float16))
    assert 0 < max_abs_diff(primary, shadow) < 0.01


def test_a_shape_change_is_never_agreement() -> None:
    assert max_abs_diff(arrays(y=[[1.0, 2.0]]), arrays(y=[1.0, 2.0])) == math.inf
    assert max_abs_diff(arrays(y=[1.0, 2.0]), arrays(y=[1.0, 2.0, 0.0])) == math.inf


def test_a_missing_output_is_never_agreement() -> None:
    assert max_abs_diff(arrays(y=[1.0], z=[2.0]), arrays(y=[1.0])) == math.inf


def test_a_shadow_that_answers_nan_is_never_agreement() -> None:
    # A broken candidate answering NaN must not look like a perfect match.
    primary = arrays(y=[1.0, 2.0, 3.0])
    assert max_abs_diff(primary, arrays(y=[1.0, np.nan, 3.0])) == math.inf
    assert max_abs_diff(primary, arrays(y=[np.nan, np.nan, np.nan])) == math.inf
    assert max_abs_diff(arrays(y=[np.nan]), arrays(y=[0.0])) == math.inf


def test_nan_on_both_sides_at_the_same_place_agrees() -> None:
    assert max_abs_diff(arrays(y=[np.nan, 1.0]), arrays(y=[np.nan, 1.5])) == pytest.approx(0.5)
    assert max_abs_diff(arrays(y=[np.nan]), arrays(y=[np.nan])) == 0.0


def test_strings_compare_exactly() -> None:
    primary = arrays(label=np.array(["cat", "dog"], dtype=object))
    assert max_abs_diff(primary, arrays(label=np.array(["cat", "dog"], dtype=object))) == 0.0
    assert max_abs_diff(primary, arrays(label=np.array(["cat", "cow"], dtype=object))) == math.inf


def test_empty_outputs_of_the_same_shape_agree() -> None:
    assert max_abs_diff(arrays(y=np.zeros((0, 3))), arrays(y=np.zeros((0, 3)))) == 0.0


# --------------------------------------------------------------------------- spearman


def test_the_same_ranking_correlates_perfectly() -> None:
    xs = np.array([0.1, 0.5, 0.3, 0.9])
    assert spearman(xs, xs * 10 + 3) == pytest.approx(1.0)
    # Rank correlation: any increasing transform keeps it perfect.
    assert spearman(xs, np.exp(xs * 20)) == pytest.approx(1.0)


def test_a_reversed_ranking_correlates_at_minus_one() -> None:
    xs = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert spearman(xs, -xs) == pytest.approx(-1.0)


def test_ties_get_average_ranks() -> None:
    # Ranks of xs: 1, 2.5, 2.5, 4; ys: 1, 2, 3, 4 -> Pearson of the ranks.
    xs = np.array([1.0, 2.0, 2.0, 3.0])
    ys = np.array([1.0, 2.0, 3.0, 4.0])
    rx, ry = np.array([1, 2.5, 2.5, 4]), np.array([1, 2, 3, 4])
    assert spearman(xs, ys) == pytest.approx(float(np.corrcoef(rx, ry)[0, 1]))
    assert spearman(xs, ys) == pytest.approx(0.9486832980505138)


def test_too_few_pairs_or_a_constant_side_has_no_correlation() -> None:
    assert spearman(np.array([1.0, 2.0]), np.array([2.0, 1.0])) is None
    assert spearman(np.array([]), np.array([])) is None
    assert spearman(np.array([1.0, 1.0, 1.0]), np.array([1.0, 2.0, 3.0])) is None


# --------------------------------------------------------------------------- ShadowTally


def test_a_tally_summarises_what_the_shadow_showed() -> None:
    tally = ShadowTally(primary_version="1", shadow_version="2")
    tolerance = 0.01
    for i in range(10):
        scores = np.array([0.1, 0.2, 0.3, 0.4]) + i
        shadow = scores + (0.005 if i < 8 else 0.5)  # the last two drift too far
        tally.compare(arrays(scores=scores), arrays(scores=shadow), tolerance)
        tally.primary.record(True, 0.010)
        tally.shadow.record(i != 9, 0.020)
    tally.dropped = 3
    summary = tally.summary()
    assert summary["primary_version"] == "1"
    assert summary["shadow_version"] == "2"
    assert summary["compared"] == 10
    assert summary["fraction_within_tolerance"] == pytest.approx(0.8)
    assert summary["max_abs_diff"] == pytest.approx(0.5)
    assert summary["rank_correlation"] == pytest.approx(1.0, abs=1e-3)
    assert summary["mirrored"] == 10
    assert summary["errors"] == 1
    assert summary["dropped"] == 3
    assert summary["shadow_p50_ms"] > summary["primary_p50_ms"] > 0
    assert summary["shadow_p99_ms"] >= summary["shadow_p50_ms"]


def test_an_empty_tally_reports_no_agreement_figures() -> None:
    summary = ShadowTally().summary()
    assert summary["compared"] == 0
    assert summary["fraction_within_tolerance"] is None
    assert summary["max_abs_diff"] is None
    assert summary["rank_correlation"] is None
    assert summary["shadow_p99_ms"] == 0.0


def test_a_shape_mismatch_is_reported_as_an_infinite_difference() -> None:
    tally = ShadowTally()
    tally.compare(arrays(y=[1.0, 2.0]), arrays(y=[1.0, 2.0, 3.0]), 1e-4)
    summary = tally.summary()
    assert summary["max_abs_diff"] == "inf"  # JSON has no infinity
    assert summary["fraction_within_tolerance"] == 0.0


def test_a_tally_keeps_only_the_most_recent_pairs() -> None:
    tally = ShadowTally()
    big = np.arange(64, dtype=np.float64)
    for _ in range(100):
        tally.compare(arrays(y=big), arrays(y=big), 1e-4)
    assert tally.pairs.maxlen is not None and len(tally.pairs) == tally.pairs.maxlen


# --------------------------------------------------------------------------- interfaces


def sig(
    inputs: list[tuple[str, str, tuple[int, ...]]], outputs: list[tuple[str, str, tuple[int, ...]]]
) -> Signature:
    return Signature(tuple(TensorSpec(*i) for i in inputs), tuple(TensorSpec(*o) for o in outputs))


INTERFACE = sig(
    [("features", "FP32", (-1, 3)), ("ids", "INT64", (-1,))],
    [("scores", "FP32", (-1, 2))],
)


def test_an_identical_signature_is_compatible() -> None:
    assert incompatibilities(INTERFACE, INTERFACE) == []


def test_a_renamed_input_is_missing_and_new() -> None:
    candidate = sig(
        [("feats", "FP32", (-1, 3)), ("ids", "INT64", (-1,))], [("scores", "FP32", (-1, 2))]
    )
    assert incompatibilities(INTERFACE, candidate) == [
        "input 'features' is missing",
        "input 'feats' is new",
    ]


def test_a_removed_output_is_missing() -> None:
    candidate = sig([("features", "FP32", (-1, 3)), ("ids", "INT64", (-1,))], [])
    assert incompatibilities(INTERFACE, candidate) == ["output 'scores' is missing"]


def test_a_datatype_change_is_incompatible() -> None:
    candidate = sig(
        [("features", "FP64", (-1, 3)), ("ids", "INT64", (-1,))], [("scores", "FP32", (-1, 2))]
    )
    problems = incompatibilities(INTERFACE, candidate)
    assert problems == ["input 'features' changed datatype FP32 -> FP64"]


def test_a_rank_change_is_incompatible() -> None:
    candidate = sig(
        [("features", "FP32", (-1, 3)), ("ids", "INT64", (-1,))], [("scores", "FP32", (-1,))]
    )
    problems = incompatibilities(INTERFACE, candidate)
    assert len(problems) == 1 and "output 'scores' changed rank" in problems[0]


def test_a_fixed_dimension_change_is_incompatible() -> None:
    candidate = sig(
        [("features", "FP32", (-1, 4)), ("ids", "INT64", (-1,))], [("scores", "FP32", (-1, 2))]
    )
    problems = incompatibilities(INTERFACE, candidate)
    assert problems == ["input 'features' changed shape [-1, 3] -> [-1, 4]"]


@pytest.mark.parametrize(
    ("old", "new"),
    [((-1, 3), (8, 3)), ((8, 3), (-1, 3)), ((-1, 3), (-1, -1))],
    ids=["dynamic-to-fixed", "fixed-to-dynamic", "fixed-to-dynamic-inner"],
)
def test_dynamic_against_fixed_dimensions_is_compatible(
    old: tuple[int, ...], new: tuple[int, ...]
) -> None:
    assert incompatibilities(sig([("x", "FP32", old)], []), sig([("x", "FP32", new)], [])) == []


def test_every_problem_is_listed() -> None:
    candidate = sig([("features", "FP64", (-1, 3))], [("scores", "FP32", (-1, 2, 1))])
    problems = incompatibilities(INTERFACE, candidate)
    assert len(problems) == 3
    assert "input 'ids' is missing" in problems


# --------------------------------------------------------------------------- golden examples

SCALE = sig([("x", "FP32", (-1, 2))], [("y", "FP32", (-1, 2))])


def example(data: list[float], expected: Any, **extra: Any) -> dict[str, Any]:
    return {
        "request": {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": data}]},
        "expected": {"y": expected},
        **extra,
    }


def test_golden_examples_parse_to_arrays() -> None:
    parsed = parse_golden(SCALE, [example([1, 2], [[2, 4]], tolerance=0.5)], "scale")
    assert len(parsed) == 1
    np.testing.assert_array_equal(parsed[0].inputs["x"], np.array([[1, 2]], dtype=np.float32))
    np.testing.assert_array_equal(parsed[0].expected["y"], np.array([[2.0, 4.0]]))
    assert parsed[0].tolerance == 0.5
    assert parse_golden(SCALE, [example([1, 2], [[2, 4]])], "scale")[0].tolerance == 1e-4


def golden_error(raw: list[Any]) -> str:
    with pytest.raises(InvalidInput) as info:
        parse_golden(SCALE, raw, "scale")
    return info.value.message


def test_an_expected_output_the_model_lacks_is_refused() -> None:
    message = golden_error(
        [example([1, 2], [[2, 4]]), {**example([1, 2], []), "expected": {"z": [1]}}]
    )
    assert message.startswith("golden example 1:")
    assert "no output 'z'" in message


def test_a_request_that_does_not_fit_the_signature_is_refused() -> None:
    bad = example([1, 2], [[2, 4]])
    bad["request"]["inputs"][0]["name"] = "q"
    message = golden_error([bad])
    assert message.startswith("golden example 0:")
    assert "'q'" in message


def test_a_request_that_is_not_an_infer_body_is_refused() -> None:
    assert "golden example 0:" in golden_error([{**example([1, 2], [[2, 4]]), "request": {}}])


def test_expected_values_that_are_not_numbers_are_refused() -> None:
    message = golden_error([example([1, 2], ["two", "four"])])
    assert "expected 'y' must be numbers" in message


@pytest.mark.parametrize(
    "item",
    [
        {"expected": {"y": [[2, 4]]}},
        {k: v for k, v in example([1, 2], [[2, 4]]).items() if k != "expected"},
        {**example([1, 2], [[2, 4]]), "expected": [[2, 4]]},
        example([1, 2], [[2, 4]], tolerance="tight"),
        example([1, 2], [[2, 4]], tolerance=-1),
        example([1, 2], [[2, 4]], tolerance=None),
        "not an example",
    ],
    ids=[
        "no-request",
        "no-expected",
        "expected-not-a-map",
        "tolerance-not-a-number",
        "tolerance-negative",
        "tolerance-null",
        "a-string",
    ],
)
def test_a_malformed_example_is_invalid_input_not_a_crash(item: Any) -> None:
    # These come straight from a PUT body: a KeyError here would be a 500.
    assert golden_error([item]).startswith("golden example 0:")


def test_outputs_within_tolerance_pass() -> None:
    examples = parse_golden(SCALE, [example([1, 2], [[2, 4]], tolerance=0.01)], "scale")
    assert golden_failures(examples, [arrays(y=[[2.005, 3.995]])]) == []


def test_outputs_outside_tolerance_fail_saying_by_how_much() -> None:
    examples = parse_golden(
        SCALE,
        [example([1, 2], [[2, 4]], tolerance=0.01), example([3, 4], [[6, 8]], tolerance=0.01)],
        "scale",
    )
    failures = golden_failures(examples, [arrays(y=[[2.0, 4.0]]), arrays(y=[[6.0, 8.5]])])
    assert failures == ["example 1: output 'y' differs by 0.5 (tolerance 0.01)"]


def test_a_missing_or_resized_output_fails() -> None:
    examples = parse_golden(SCALE, [example([1, 2], [[2, 4]]), example([1, 2], [[2, 4]])], "s")
    failures = golden_failures(examples, [{}, arrays(y=[2.0, 4.0, 0.0])])
    assert failures == [
        "example 0: no output 'y'",
        "example 1: output 'y' has 3 values, expected 2",
    ]


def test_a_nan_output_fails_its_golden_example() -> None:
    examples = parse_golden(SCALE, [example([1, 2], [[2, 4]], tolerance=1.0)], "scale")
    assert len(golden_failures(examples, [arrays(y=[[np.nan, 4.0]])])) == 1
