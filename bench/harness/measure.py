"""Measurements: a load run with its CPU accounting, interleaved repeats, and medians.

Points of a comparison are measured in turn (A, B, A, B, ...) rather than all of A first, so
that a change in the machine's other load during the benchmark lands on every point alike;
reports quote the median over the repeats.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from harness.cpu import children_cpu, cpu_seconds, machine_cpu, wait_for_quiet
from harness.metrics import batch_delta, scrape
from harness.processes import Server
from harness.wrk import POST_SCRIPT, run_wrk

P = TypeVar("P")


def load(
    server: Server,
    path: str,
    body_file: Path,
    connections: int,
    duration: float,
    threads: int = 1,
    model: str | None = None,
    *,
    script: Path = POST_SCRIPT,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One wrk run against ``server``, with the CPU the server, wrk and everything else used
    (in cores) and, for a ``model`` of a modelport, its batches from ``/metrics``."""
    before = scrape(server) if model else {}
    (busy0, steal0), wrk0 = machine_cpu(), children_cpu()
    cpu0, t0 = cpu_seconds(server.proc.pid), time.monotonic()
    result = run_wrk(
        server.url(path),
        body_file,
        connections,
        duration,
        threads,
        key=server.tenant_key,
        script=script,
        env=env,
    )
    cpu1, t1 = cpu_seconds(server.proc.pid), time.monotonic()
    (busy1, steal1), wrk1 = machine_cpu(), children_cpu()
    wall = t1 - t0
    result["server_cpu"] = round((cpu1 - cpu0) / wall, 3)
    result["wrk_cpu"] = round((wrk1 - wrk0) / wall, 3)
    # Whatever else ran on the machine meanwhile (other processes), in cores.
    other = (busy1 - busy0) - (cpu1 - cpu0) - (wrk1 - wrk0)
    result["other_cpu"] = round(max(0.0, other) / wall, 3)
    result["steal_cpu"] = round((steal1 - steal0) / wall, 3)
    if model:
        result["metrics"] = batch_delta(before, scrape(server), model)
        result["mean_batch"] = result["metrics"]["mean_batch"]
    return {"server": server.name, "connections": connections, **result}


def interleaved(
    points: Sequence[P], runs: int, quiet_wait: float, *, first: int = 1
) -> Iterator[tuple[int, P, float]]:
    """(run number, point, busy cores before) for every point of every run, in that order,
    each after waiting (up to ``quiet_wait`` s) for other load on the machine to settle."""
    for run in range(first, first + runs):
        for point in points:
            busy = wait_for_quiet(quiet_wait)
            yield run, point, busy


def median(values: Iterable[float]) -> float:
    return float(statistics.median(values))


def medians(
    runs: Sequence[dict[str, Any]], keys: Iterable[str], digits: int = 3
) -> dict[str, float]:
    """The median of each of ``keys`` over ``runs``, rounded."""
    return {key: round(median(r[key] for r in runs), digits) for key in keys}


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ``values`` by rank (no interpolation)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latency_summary(samples: Sequence[float]) -> dict[str, float]:
    """n, p50, p99 and mean in milliseconds of timings in seconds."""
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "p50_ms": round(ordered[len(ordered) // 2] * 1000, 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 3),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 3),
    }
