"""Experiment assignment and the statistics of its analysis, as pure functions."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from modelport.routing.assignment import BUCKETS, bucket, choose, layer_bucket
from modelport.routing.proportions import chi_square, chi_square_sf, newcombe, wilson

VECTORS = Path(__file__).parents[2] / "contracts" / "experiment_assignment_vectors.json"


def test_the_server_passes_every_committed_assignment_vector() -> None:
    doc = json.loads(VECTORS.read_text(encoding="utf-8"))
    assert doc["buckets"] == BUCKETS
    assert len(doc["cases"]) >= 50
    for case in doc["cases"]:
        weights = [v["weight"] for v in case["variants"]]
        assert bucket(case["salt"], case["unit"]) == case["bucket"], case
        index = choose(case["salt"], case["unit"], weights)
        assert case["variants"][index]["name"] == case["variant"], case
    for case in doc["layers"]:
        assert layer_bucket(case["layer"], case["unit"]) == case["bucket"], case


def test_a_unit_keeps_its_variant_and_units_split_as_the_weights_say() -> None:
    weights = [20, 30, 50]
    picks = [choose("salt-1", f"user-{i}", weights) for i in range(50_000)]
    assert picks == [choose("salt-1", f"user-{i}", weights) for i in range(50_000)]
    shares = [picks.count(i) / len(picks) for i in range(3)]
    for share, weight in zip(shares, weights, strict=True):
        assert abs(share - weight / 100) < 0.01
    # Another salt (a new run) assigns afresh: about half the units change variant.
    moved = sum(
        choose("salt-2", f"user-{i}", [50, 50]) != choose("salt-1", f"user-{i}", [50, 50])
        for i in range(10_000)
    )
    assert 4_700 < moved < 5_300


def test_a_zero_weight_variant_gets_no_unit() -> None:
    assert all(choose("s", f"u{i}", [0, 100]) == 1 for i in range(5_000))


def test_chi_square_p_values_match_the_tables() -> None:
    assert chi_square_sf(3.841458820694124, 1) == pytest.approx(0.05, rel=1e-9)
    assert chi_square_sf(10.0, 3) == pytest.approx(0.018566135463043, rel=1e-9)
    assert chi_square_sf(0.5, 2) == pytest.approx(math.exp(-0.25), rel=1e-12)
    assert chi_square_sf(13.815510557964274, 2) == pytest.approx(0.001, rel=1e-9)
    statistic, p = chi_square([4_500, 5_500], [0.5, 0.5])
    assert statistic == pytest.approx(100.0) and p < 1e-20


def test_wilson_and_newcombe_intervals_cover_the_truth_about_95_percent_of_the_time() -> None:
    rng = random.Random(7)
    covered = covered_difference = 0
    trials = 400
    for _ in range(trials):
        a = sum(rng.random() < 0.12 for _ in range(1_000))
        b = sum(rng.random() < 0.10 for _ in range(1_000))
        low, high = wilson(a, 1_000)
        covered += low <= 0.12 <= high
        _, d_low, d_high = newcombe(a, 1_000, b, 1_000)
        covered_difference += d_low <= 0.02 <= d_high
    assert 0.92 <= covered / trials <= 0.98
    assert 0.92 <= covered_difference / trials <= 0.98


def test_intervals_stay_within_bounds_at_the_edges() -> None:
    assert wilson(0, 50)[0] == 0.0 and 0 < wilson(0, 50)[1] < 0.1
    assert wilson(50, 50)[1] == 1.0
    assert wilson(0, 0) == (0.0, 1.0)
