"""Counters and histograms for the event loop's hot path.

prometheus-client guards every update with a lock and finds a histogram bucket with a Python
loop; at tens of thousands of observations a second that is a measurable share of a request.
These metrics are only updated and collected on the event loop thread (the ``/metrics``
endpoint is async), so they need no lock, and a bucket is one ``bisect``. They are exposed
through a regular prometheus-client collector, so the exposition format is unchanged.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

Labels = tuple[str, ...]


class LoopCounter:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class LoopHistogram:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = list(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # Prometheus buckets are "less than or equal": the first bound >= value.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


class LoopCounterFamily:
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self.children: dict[Labels, LoopCounter] = {}

    def labels(self, *values: str) -> LoopCounter:
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = LoopCounter()
        return child

    def remove(self, *values: str) -> None:
        self.children.pop(values, None)

    def collect(self) -> Metric:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in self.children.items():
            family.add_metric(list(values), child.value)
        return family


class LoopHistogramFamily:
    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self.buckets = sorted(buckets)
        self.children: dict[Labels, LoopHistogram] = {}

    def labels(self, *values: str) -> LoopHistogram:
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = LoopHistogram(self.buckets)
        return child

    def remove(self, *values: str) -> None:
        self.children.pop(values, None)

    def collect(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in self.children.items():
            cumulative, running = [], 0
            for bound, count in zip([*self.buckets, float("inf")], child.counts, strict=True):
                running += count
                cumulative.append((_bound(bound), float(running)))
            family.add_metric(list(values), cumulative, child.sum)
        return family


class LoopMetricsCollector(Collector):
    def __init__(self) -> None:
        self.families: list[LoopCounterFamily | LoopHistogramFamily] = []

    def add(self, family: LoopCounterFamily | LoopHistogramFamily) -> None:
        self.families.append(family)

    def collect(self) -> Iterator[Metric]:
        for family in self.families:
            yield family.collect()


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(float(value))
