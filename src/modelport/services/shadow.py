"""Shadow traffic: a share of requests also runs, asynchronously, on another version.

The caller gets the primary answer as soon as it exists; the mirrored call runs afterwards on
the shadow version's own batcher, and its outputs are compared with the primary's. At most
``max_inflight`` mirrored calls run at once: beyond that a mirror is dropped (and counted)
rather than queued, which bounds what shadowing can cost the primary traffic.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import numpy as np
import structlog

from modelport.observability.metrics import Metrics
from modelport.routing.compare import ShadowTally
from modelport.routing.policy import Route
from modelport.serving.batching import Joined
from modelport.serving.pool import LoadedVersion, ModelPool, VersionState

log = structlog.get_logger("modelport.shadow")

_RNG = random.Random()  # noqa: S311 - sampling, not security


class ShadowRunner:
    def __init__(
        self,
        pool: ModelPool,
        metrics: Metrics,
        *,
        max_inflight: int = 64,
        timeout_s: float = 30.0,
    ) -> None:
        self._pool = pool
        self._metrics = metrics
        self._max_inflight = max_inflight
        self._timeout_s = timeout_s
        self._inflight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._tallies: dict[tuple[str, str], ShadowTally] = {}

    def maybe_mirror(
        self,
        primary: LoadedVersion,
        route: Route,
        arrays: dict[str, np.ndarray],
        rows: int,
        outputs: dict[str, np.ndarray],
        primary_seconds: float,
    ) -> None:
        version = route.shadow_version
        if version is None or version == primary.version:
            return
        if route.shadow_fraction < 1.0 and _RNG.random() >= route.shadow_fraction:
            return
        shadow = self._pool.get(primary.tenant, primary.model, version)
        if shadow is None or shadow.state is not VersionState.READY or shadow.batcher is None:
            return
        tally = self._tally(primary, version)
        tally.primary.record(True, primary_seconds)
        if self._inflight >= self._max_inflight:
            tally.dropped += 1
            self._count(shadow, "dropped")
            return
        self._inflight += 1
        shadow.inflight += 1
        task = asyncio.get_running_loop().create_task(
            self._mirror(shadow, tally, arrays, rows, outputs, route.shadow_tolerance)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _tally(self, primary: LoadedVersion, shadow_version: str) -> ShadowTally:
        key = (primary.tenant, primary.model)
        tally = self._tallies.get(key)
        if tally is None or tally.shadow_version != shadow_version:
            tally = self._tallies[key] = ShadowTally(
                primary_version=primary.version, shadow_version=shadow_version
            )
        tally.primary_version = primary.version
        return tally

    async def _mirror(
        self,
        shadow: LoadedVersion,
        tally: ShadowTally,
        arrays: dict[str, np.ndarray],
        rows: int,
        expected: dict[str, np.ndarray],
        tolerance: float,
    ) -> None:
        started = time.perf_counter()
        try:
            batcher = shadow.batcher
            if batcher is None:
                raise RuntimeError("unloaded")
            loop = asyncio.get_running_loop()
            got = await batcher.submit(arrays, rows, loop.time() + self._timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a shadow failure is data, not an outage
            tally.shadow.record(False, time.perf_counter() - started)
            self._count(shadow, "error")
            log.debug("shadow_failed", model=shadow.model, version=shadow.version, error=str(exc))
        else:
            tally.shadow.record(True, time.perf_counter() - started)
            outputs = got.outputs if isinstance(got, Joined) else got
            tally.compare(expected, outputs, tolerance)
            self._count(shadow, "ok")
        finally:
            self._inflight -= 1
            shadow.inflight -= 1

    def _count(self, shadow: LoadedVersion, outcome: str) -> None:
        self._metrics.shadow_requests.labels(
            shadow.tenant, shadow.model, shadow.version, outcome
        ).inc()

    def summary(self, tenant: str, model: str) -> dict[str, Any] | None:
        tally = self._tallies.get((tenant, model))
        return None if tally is None else tally.summary()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
