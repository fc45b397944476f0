"""Comparing a shadow version's outputs with the primary's, request by request."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelport.routing.request_stats import RequestStats

#: Paired scores kept for the rank correlation (the most recent ones).
RANK_PAIRS = 2048


def max_abs_diff(primary: Mapping[str, np.ndarray], shadow: Mapping[str, np.ndarray]) -> float:
    """Largest absolute difference over every numeric output both answers carry; inf when
    shapes differ, so a shape change is never mistaken for agreement."""
    worst = 0.0
    for name, expected in primary.items():
        got = shadow.get(name)
        if got is None or got.shape != expected.shape:
            return math.inf
        if expected.dtype.kind in "biuf" and got.dtype.kind in "biuf":
            if expected.size:
                a, b = expected.astype(np.float64), got.astype(np.float64)
                # NaN on one side only is a disagreement (nanmax would skip it); NaN on both,
                # or the same infinity on both, agrees.
                if np.any(np.isnan(a) != np.isnan(b)):
                    return math.inf
                diff = np.abs(a - b)
                if not np.isnan(diff).all():
                    worst = max(worst, float(np.nanmax(diff)))
        elif not np.array_equal(expected, got):
            return math.inf
    return worst


def spearman(xs: np.ndarray, ys: np.ndarray) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None below 3 pairs or when a
    side is constant."""
    if xs.size < 3:
        return None
    rx, ry = _ranks(xs), _ranks(ys)
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.arange(values.size, dtype=np.float64)
    # Average the ranks of ties.
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return (sums / counts)[inverse]


@dataclass(slots=True)
class ShadowTally:
    """What one model's shadow traffic has shown so far (one replica)."""

    primary_version: str = ""
    shadow_version: str = ""
    compared: int = 0
    within_tolerance: int = 0
    max_abs_diff: float = 0.0
    dropped: int = 0
    shadow: RequestStats = field(default_factory=RequestStats)
    primary: RequestStats = field(default_factory=RequestStats)
    pairs: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=RANK_PAIRS))

    def compare(
        self,
        primary: Mapping[str, np.ndarray],
        shadow: Mapping[str, np.ndarray],
        tolerance: float,
    ) -> None:
        diff = max_abs_diff(primary, shadow)
        self.compared += 1
        if diff <= tolerance:
            self.within_tolerance += 1
        self.max_abs_diff = max(self.max_abs_diff, diff)
        first = next(iter(primary), None)
        if first is not None and first in shadow:
            a, b = primary[first], shadow[first]
            if a.shape == b.shape and a.dtype.kind in "biuf" and b.dtype.kind in "biuf":
                for x, y in zip(a.reshape(-1)[:64], b.reshape(-1)[:64], strict=True):
                    self.pairs.append((float(x), float(y)))

    def summary(self) -> dict[str, Any]:
        rank = None
        if self.pairs:
            arr = np.asarray(self.pairs, dtype=np.float64)
            rank = spearman(arr[:, 0], arr[:, 1])
        return {
            "primary_version": self.primary_version,
            "shadow_version": self.shadow_version,
            "mirrored": self.shadow.requests,
            "dropped": self.dropped,
            "errors": self.shadow.errors,
            "compared": self.compared,
            "fraction_within_tolerance": (
                self.within_tolerance / self.compared if self.compared else None
            ),
            "max_abs_diff": None if not self.compared else _finite(self.max_abs_diff),
            "rank_correlation": rank,
            "shadow_p50_ms": round(self.shadow.quantile(0.5) * 1000, 3),
            "shadow_p99_ms": round(self.shadow.quantile(0.99) * 1000, 3),
            "primary_p50_ms": round(self.primary.quantile(0.5) * 1000, 3),
            "primary_p99_ms": round(self.primary.quantile(0.99) * 1000, 3),
        }


def _finite(value: float) -> float | str:
    return "inf" if math.isinf(value) else value
