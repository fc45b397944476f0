"""Request statistics of one version over a window: counts and a fixed latency histogram.

The bucket bounds are fixed so that histograms from every replica add up bucket by bucket.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

#: Upper bounds in seconds, 100 µs to ~60 s, about 12 % apart.
BOUNDS: tuple[float, ...] = tuple(0.0001 * 1.12**i for i in range(118))


def bucket_index(seconds: float) -> int:
    return bisect.bisect_left(BOUNDS, seconds)


@dataclass(slots=True)
class RequestStats:
    requests: int = 0
    errors: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * (len(BOUNDS) + 1))

    def record(self, ok: bool, seconds: float) -> None:
        self.requests += 1
        if not ok:
            self.errors += 1
        self.latency[bucket_index(seconds)] += 1

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def quantile(self, q: float) -> float:
        """The upper bound of the bucket holding the ``q`` quantile (0 when empty)."""
        total = sum(self.latency)
        if total == 0:
            return 0.0
        rank = q * total
        seen = 0
        for index, count in enumerate(self.latency):
            seen += count
            if seen >= rank and count:
                return BOUNDS[index] if index < len(BOUNDS) else BOUNDS[-1]
        return BOUNDS[-1]

    def add(self, other: RequestStats) -> RequestStats:
        return RequestStats(
            self.requests + other.requests,
            self.errors + other.errors,
            [a + b for a, b in zip(self.latency, other.latency, strict=True)],
        )

    def minus(self, earlier: RequestStats) -> RequestStats:
        """What happened since ``earlier`` (never negative)."""
        return RequestStats(
            max(0, self.requests - earlier.requests),
            max(0, self.errors - earlier.errors),
            [max(0, a - b) for a, b in zip(self.latency, earlier.latency, strict=True)],
        )

    def to_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "errors": self.errors, "latency": list(self.latency)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> RequestStats:
        if not raw:
            return cls()
        return cls(int(raw["requests"]), int(raw["errors"]), _sized(raw["latency"]))

    def copy(self) -> RequestStats:
        return RequestStats(self.requests, self.errors, list(self.latency))


def _sized(values: Sequence[int]) -> list[int]:
    out = [int(v) for v in values][: len(BOUNDS) + 1]
    return out + [0] * (len(BOUNDS) + 1 - len(out))
