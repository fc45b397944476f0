"""The model pool: loads versions, warms them, serves them through their batcher, drains them.

A version is READY only after its artifact passed its checksum, the runtime loaded, and every
warmup request went through the same batcher that live traffic uses.

A READY version whose batch runs past its ``compute_timeout_s`` becomes UNHEALTHY (not served;
requests get a fast 503) and is reloaded in the background with a fresh runtime and fresh
threads; the thread stuck in the old runtime is abandoned (an ONNX run is told to stop). If the
reload fails, the version is FAILED: out of rotation, with the reason, until it is loaded again.
Every background task of the pool is kept in ``self._tasks`` and its failure logged.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from pydantic import ValidationError

from modelport.errors import ArtifactError, ComputeTimeout, ModelportError
from modelport.observability.metrics import Metrics, VersionMetrics
from modelport.routing.request_stats import RequestStats
from modelport.serving.batcher import Batcher, Predict
from modelport.serving.compute import ComputeThreads
from modelport.serving.config import FeaturesConfig, RuntimeConfig, VersionConfig
from modelport.serving.features import FeatureJoin, FeatureJoinRuntime, request_signature
from modelport.serving.request_plan import RequestPlan
from modelport.serving.runtimes import Runtime, load_runtime
from modelport.serving.signature import Signature
from modelport.serving.warmup import warmup_requests
from modelport.stores.artifacts import ArtifactStore
from modelport.stores.registry import VersionRecord

log = structlog.get_logger("modelport.pool")

FeatureJoinFactory = Callable[[str, FeaturesConfig], Awaitable[FeatureJoin]]
"""``(tenant, features config)`` -> the version's feature join (views at their versions)."""

RuntimeLoader = Callable[[Path, RuntimeConfig], Runtime]
"""``(local artifact, runtime config)`` -> a loaded runtime; ``load_runtime`` unless the pool's
owner supplies another (a runtime kind of its own, or one that wraps the standard ones)."""


class VersionState(enum.StrEnum):
    LOADING = "LOADING"
    READY = "READY"
    UNHEALTHY = "UNHEALTHY"
    """A batch ran past the compute timeout; not served while a fresh runtime loads."""
    FAILED = "FAILED"
    UNLOADING = "UNLOADING"


@dataclass(slots=True)
class LoadedVersion:
    tenant: str
    model: str
    version: str
    signature: Signature
    config: VersionConfig
    metrics: VersionMetrics
    state: VersionState = VersionState.LOADING
    error: str | None = None
    runtime: Runtime | None = None
    batcher: Batcher | None = None
    threads: ComputeThreads | None = None
    loaded: asyncio.Event = field(default_factory=asyncio.Event)
    sha256: str = ""
    """The artifact's digest."""
    inflight: int = 0
    max_body_bytes: int = -1
    """The largest request body this version has a use for (0: no bound of its own);
    computed on first use by ``InferenceService.body_limit``."""
    """Requests routed here and not yet answered; an unload waits for them."""
    plan: RequestPlan | None = None
    """How this version's common requests are decoded straight into batcher arrays; None
    when every request takes the general path (see ``serving.request_plan``)."""
    window: RequestStats = field(default_factory=RequestStats)
    """Cumulative requests, errors and latency of this version in this process (the rollout
    guard sums these over replicas); shared by every load of the same version."""
    record: VersionRecord | None = None
    """What this entry was loaded from: a reload after a hang loads it again."""

    @property
    def label(self) -> str:
        return f"model '{self.model}' version '{self.version}'"

    @property
    def key(self) -> tuple[str, str]:
        return (self.tenant, self.model)

    @property
    def identity(self) -> str:
        """Version number and artifact digest: what names this version's answers anywhere."""
        return f"{self.version}:{self.sha256}"


class ModelPool:
    def __init__(
        self,
        artifacts: ArtifactStore,
        metrics: Metrics,
        features: FeatureJoinFactory | None = None,
        runtimes: RuntimeLoader = load_runtime,
    ) -> None:
        self._artifacts = artifacts
        self._metrics = metrics
        self._features = features
        self._runtimes = runtimes
        self._tasks: set[asyncio.Task[None]] = set()
        # Keyed by (tenant, model): two tenants' models of the same name never meet.
        self._versions: dict[tuple[str, str], dict[str, LoadedVersion]] = {}
        self._serving: dict[tuple[str, str], LoadedVersion] = {}
        self._windows: dict[tuple[str, str, str], RequestStats] = {}
        self._load_errors: dict[tuple[str, str, str], str] = {}

    def get(self, tenant: str, model: str, version: str) -> LoadedVersion | None:
        return self._versions.get((tenant, model), {}).get(version)

    def versions_of(self, tenant: str, model: str) -> list[LoadedVersion]:
        versions = self._versions.get((tenant, model), {}).values()
        return sorted(versions, key=lambda v: int(v.version))

    def load_error(self, tenant: str, model: str, version: str) -> str | None:
        """Why the last load of this version failed here (None if it never failed or since
        loaded fine); kept after the failed entry is unloaded."""
        return self._load_errors.get((tenant, model, version))

    def windows(self) -> list[tuple[str, str, str, RequestStats]]:
        """Every version's cumulative window in this process (loaded now or before)."""
        return [(t, m, v, w) for (t, m, v), w in self._windows.items()]

    def all(self) -> list[LoadedVersion]:
        return [v for versions in self._versions.values() for v in versions.values()]

    def newest_ready(self, tenant: str, model: str) -> LoadedVersion | None:
        """The version unpinned requests go to (cached: the request path asks every time)."""
        return self._serving.get((tenant, model))

    def _refresh_serving(self, tenant: str, model: str) -> None:
        ready = [v for v in self.versions_of(tenant, model) if v.state is VersionState.READY]
        if ready:
            self._serving[(tenant, model)] = ready[-1]
        else:
            self._serving.pop((tenant, model), None)

    async def load(self, record: VersionRecord, *, why: str | None = None) -> LoadedVersion:
        """Load and warm ``record``; returns once it is READY or FAILED (never raises).

        ``why``: shown as the version's reason while it loads (a reload says what it repairs)."""
        existing = self.get(record.tenant, record.model, record.version)
        if existing is not None and existing.state in (VersionState.LOADING, VersionState.READY):
            await existing.loaded.wait()
            return existing
        try:
            config, unreadable = VersionConfig.model_validate(record.config), ""
        except ValidationError as exc:
            # Pushed by a newer modelport (a field this one does not know) or edited by hand:
            # this version fails to load; the server and every other version carry on.
            config, unreadable = VersionConfig(), _unreadable_config(exc)
        window = self._windows.setdefault(
            (record.tenant, record.model, record.version), RequestStats()
        )
        entry = LoadedVersion(
            tenant=record.tenant,
            model=record.model,
            version=record.version,
            signature=Signature.from_dict(record.signature),
            config=config,
            metrics=self._metrics.for_version(record.tenant, record.model, record.version),
            window=window,
            sha256=record.sha256,
            record=record,
            error=why,
        )
        self._versions.setdefault((record.tenant, record.model), {})[record.version] = entry
        started = time.perf_counter()
        failure: str | None = None
        try:
            if unreadable:
                raise ArtifactError(unreadable)
            await self._start(entry, record)
        except Exception as exc:  # noqa: BLE001 - any load failure leaves the version FAILED
            failure = (
                exc.message if isinstance(exc, ModelportError) else f"{type(exc).__name__}: {exc}"
            )
        try:
            if failure is not None:
                # Stopped outside the ``except`` block: compiled with mypyc, an await that
                # suspends inside one re-raised the handled exception.
                entry.state = VersionState.FAILED
                entry.error = failure
                await self._stop(entry)
                self._load_errors[(entry.tenant, entry.model, entry.version)] = failure
                log.error(
                    "model_load_failed", model=entry.model, version=entry.version, error=failure
                )
            else:
                entry.state = VersionState.READY
                entry.error = None
                self._load_errors.pop((entry.tenant, entry.model, entry.version), None)
                log.info(
                    "model_ready",
                    tenant=entry.tenant,
                    model=entry.model,
                    version=entry.version,
                    seconds=round(time.perf_counter() - started, 3),
                )
        finally:
            self._refresh_serving(entry.tenant, entry.model)
            self._refresh_gauges()
            entry.loaded.set()
        return entry

    async def _start(self, entry: LoadedVersion, record: VersionRecord) -> None:
        def build() -> Runtime:
            path = self._artifacts.materialise(record.artifact_uri, record.sha256)
            return self._runtimes(path, entry.config.runtime)

        def hung(error: ComputeTimeout) -> None:
            self._hung(entry, error)

        join = None
        if entry.config.features is not None:
            if self._features is None:
                raise ArtifactError(f"{entry.label} joins features, and no online store is set up")
            join = await self._features(entry.tenant, entry.config.features)
        runtime = await asyncio.to_thread(build)
        entry.runtime = runtime
        served = runtime.signature
        predict: Predict = runtime.predict
        if join is not None and entry.config.features is not None:
            served = request_signature(runtime.signature, entry.config.features)
            joining = FeatureJoinRuntime(runtime, join, served, entry.label)
            entry.runtime = joining
            predict = joining.answer  # the missing-value counts travel beside the outputs
        if _names_and_types(served) != _names_and_types(entry.signature):
            raise ArtifactError(
                f"{entry.label}: the loaded graph's signature differs from the registered one"
            )
        instances = entry.config.runtime.instances
        entry.threads = ComputeThreads(instances, f"mp-{entry.model}-{entry.version}")
        entry.batcher = Batcher(
            predict,
            entry.config.batching,
            entry.threads,
            instances=instances,
            label=entry.label,
            observer=entry.metrics,
            stacked=entry.signature.batchable,
            compute_timeout_s=entry.config.runtime.compute_timeout_s,
            on_hang=hung,
        )
        entry.batcher.start()
        entry.metrics.watch_queue(entry.batcher)
        if not entry.config.cache.enabled:
            # A cached version's requests take the general path through the response cache.
            entry.plan = RequestPlan.compile(entry.signature)
        for arrays in warmup_requests(entry.signature, entry.config.warmup, entry.model):
            rows = _rows(arrays) if entry.signature.batchable else 1
            await entry.batcher.submit(arrays, rows)

    def _hung(self, entry: LoadedVersion, error: ComputeTimeout) -> None:
        """A batch of ``entry`` ran past its compute timeout (its batcher already refuses
        requests): stop serving it and reload it in the background."""
        if entry.state is not VersionState.READY:
            return  # a load's warmup hung (the load fails), or a reload is under way
        entry.state = VersionState.UNHEALTHY
        entry.error = f"{error.message}; reloading it with a fresh runtime"
        self._refresh_serving(entry.tenant, entry.model)
        self._refresh_gauges()
        log.error(
            "version_unhealthy",
            tenant=entry.tenant,
            model=entry.model,
            version=entry.version,
            compute_timeout_s=entry.config.runtime.compute_timeout_s,
            error=error.message,
        )
        self._spawn(self._reload(entry), f"reload:{entry.model}:{entry.version}")

    async def _reload(self, entry: LoadedVersion) -> None:
        await self._stop(entry)  # batches still running end by their own timers
        record = entry.record
        if entry.state is not VersionState.UNHEALTHY or record is None:
            return  # unloaded meanwhile: nothing to bring back
        timeout = entry.config.runtime.compute_timeout_s
        fresh = await self.load(
            record, why=f"reloading after a batch ran past its compute timeout of {timeout:g} s"
        )
        if fresh.state is VersionState.READY:
            log.info(
                "version_reloaded", tenant=entry.tenant, model=entry.model, version=entry.version
            )
            return
        if fresh is entry or fresh.state is not VersionState.FAILED:
            return
        fresh.error = (
            f"out of rotation: a batch ran past its compute timeout of {timeout:g} s and "
            f"the reload failed: {fresh.error}"
        )
        self._load_errors[(fresh.tenant, fresh.model, fresh.version)] = fresh.error
        log.error(
            "version_out_of_rotation",
            tenant=fresh.tenant,
            model=fresh.model,
            version=fresh.version,
            error=fresh.error,
        )

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("pool_task_failed", task=task.get_name(), exc_info=task.exception())

    async def unload(
        self, tenant: str, model: str, version: str, *, drain_timeout_s: float = 30.0
    ) -> bool:
        """Stop routing to a version, let its in-flight requests finish, then unload it.

        A load of the same version that starts while this one drains gets a fresh entry; the
        draining one then leaves without touching it."""
        key = (tenant, model)
        entry = self._versions.get(key, {}).get(version)
        if entry is None or entry.state is VersionState.UNLOADING:
            return False
        entry.state = VersionState.UNLOADING
        self._refresh_serving(tenant, model)
        deadline = time.monotonic() + drain_timeout_s
        # A plain counter keeps the request path cheap; polling it only costs while draining.
        while entry.inflight > 0 and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        if entry.inflight > 0:
            log.warning(
                "model_drain_timeout", model=model, version=version, inflight=entry.inflight
            )
        versions = self._versions.get(key, {})
        if versions.get(version) is entry:
            del versions[version]
            if not versions:
                self._versions.pop(key, None)
        await self._stop(entry)
        successor = self.get(tenant, model, version)
        if successor is None:
            self._metrics.version_ready.remove(tenant, model, version)
        elif successor.batcher is not None:
            successor.metrics.watch_queue(successor.batcher)
        self._refresh_gauges()
        log.info("model_unloaded", tenant=tenant, model=model, version=version)
        return True

    async def _stop(self, entry: LoadedVersion) -> None:
        if entry.batcher is not None:
            await entry.batcher.close()
        if entry.threads is not None:
            entry.threads.shutdown(wait=False)
        if entry.runtime is not None:
            entry.runtime.close()
            entry.runtime = None
        entry.metrics.unwatch_queue()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5.0)
        for entry in self.all():
            await self.unload(entry.tenant, entry.model, entry.version, drain_timeout_s=5.0)

    def _refresh_gauges(self) -> None:
        ready = 0
        for entry in self.all():
            is_ready = entry.state is VersionState.READY
            ready += is_ready
            self._metrics.version_ready.labels(entry.tenant, entry.model, entry.version).set(
                int(is_ready)
            )
        self._metrics.loaded_versions.set(ready)


def _rows(arrays: dict[str, np.ndarray]) -> int:
    return int(next(iter(arrays.values())).shape[0])


def _names_and_types(signature: Signature) -> tuple[object, ...]:
    return (
        tuple((s.name, s.datatype) for s in signature.inputs),
        tuple((s.name, s.datatype) for s in signature.outputs),
    )


def _unreadable_config(exc: ValidationError) -> str:
    problems = "; ".join(
        f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()
    )
    return (
        f"its stored config cannot be read by this modelport ({problems}); was it pushed by a "
        "newer release? Upgrade this replica, or push the version again with this release"
    )
