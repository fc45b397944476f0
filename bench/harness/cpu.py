"""CPU accounting from /proc: what a server, wrk and everything else used during a run.

The machine a benchmark runs on is often shared; these numbers say how much of a run's
result other work may have taken, and ``wait_for_quiet`` lets that work settle first.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    steal = fields[7] if len(fields) > 7 else 0
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick


def children_cpu() -> float:
    """CPU seconds of this process's waited-for children (the wrk runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class OtherLoad:
    """CPU used by everything but this process (and its children) while the block runs;
    ``cores`` after the block."""

    def __enter__(self) -> OtherLoad:
        self._busy, self._own, self._t = machine_cpu()[0], self._own_cpu(), time.monotonic()
        self.cores = float("nan")
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.monotonic() - self._t
        other = (machine_cpu()[0] - self._busy) - (self._own_cpu() - self._own)
        self.cores = round(max(0.0, other) / wall, 3) if wall > 0 else float("nan")

    @staticmethod
    def _own_cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime + children_cpu()


def wait_for_quiet(max_wait: float, threshold: float = 0.25) -> float:
    """Wait (up to ``max_wait`` s) until the machine is idle apart from us; return the last
    one-second sample of busy cores. Other work on the machine skews every number here."""
    if max_wait <= 0:
        return float("nan")
    start = time.monotonic()
    while True:
        busy0, t0 = machine_cpu()[0], time.monotonic()
        time.sleep(1.0)
        busy = (machine_cpu()[0] - busy0) / (time.monotonic() - t0)
        waited = time.monotonic() - start
        if busy < threshold or waited >= max_wait:
            if waited > 1.5 or busy >= threshold:
                print(f"  (waited {waited:.0f} s for other load to settle: {busy:.2f} cores busy)")
            return round(busy, 3)
