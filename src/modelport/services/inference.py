"""Inference: resolve the version, validate before queueing, batch, shape the answer."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np

from modelport.errors import (
    DeadlineExceeded,
    InferenceFailed,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    ModelportError,
    QueueFull,
    VersionNotFound,
)
from modelport.serving.codec import InferRequest
from modelport.serving.pool import LoadedVersion, ModelPool, VersionState
from modelport.serving.signature import validate_inputs
from modelport.stores.registry import RegistryStore


@dataclass(slots=True)
class InferResult:
    model: str
    version: str
    outputs: list[tuple[str, np.ndarray, bool]]
    id: str | None


class InferenceService:
    def __init__(self, pool: ModelPool, registry: RegistryStore, default_timeout_s: float) -> None:
        self._pool = pool
        self._registry = registry
        self._default_timeout_s = default_timeout_s

    async def resolve(self, tenant: str, model: str, version: str | None) -> LoadedVersion:
        """The loaded version that serves ``model`` (newest READY one unless pinned)."""
        if version is None:
            entry = self._pool.newest_ready(tenant, model)
            if entry is not None:
                return entry
            loading = self._pool.versions_of(tenant, model)
            if loading:
                states = ", ".join(f"{v.version}: {v.state.value}" for v in loading)
                raise ModelNotReady(f"model '{model}' has no READY version ({states})")
            if await self._registry.get_model(tenant, model) is None:
                raise ModelNotFound(model)
            raise ModelNotReady(
                f"model '{model}' is registered but not loaded; "
                f"POST /v2/repository/models/{model}/load"
            )
        entry = self._pool.get(tenant, model, version)
        if entry is not None:
            if entry.state is not VersionState.READY:
                detail = f": {entry.error}" if entry.error else ""
                raise ModelNotReady(f"{entry.label} is {entry.state.value}{detail}")
            return entry
        if await self._registry.get_model(tenant, model) is None:
            raise ModelNotFound(model)
        if await self._registry.get_version(tenant, model, version) is None:
            raise VersionNotFound(model, version)
        raise ModelNotReady(
            f"model '{model}' version '{version}' is registered but not loaded; "
            f"POST /v2/repository/models/{model}/load"
        )

    async def infer(
        self, tenant: str, model: str, version: str | None, request: InferRequest
    ) -> InferResult:
        started = time.perf_counter()
        # The common case (unpinned, a READY version cached in the pool) stays synchronous.
        entry = self._pool.newest_ready(tenant, model) if version is None else None
        if entry is None:
            entry = await self.resolve(tenant, model, version)
        try:
            result = await self._infer(entry, request)
        except ModelportError as exc:
            entry.metrics.request(_outcome(exc), time.perf_counter() - started)
            raise
        except asyncio.CancelledError:
            entry.metrics.request("cancelled", time.perf_counter() - started)
            raise
        entry.metrics.request("ok", time.perf_counter() - started)
        return result

    async def _infer(self, entry: LoadedVersion, request: InferRequest) -> InferResult:
        signature = entry.signature
        arrays = validate_inputs(signature, request.inputs, entry.model)
        names = signature.output_names
        if request.outputs is None:
            wanted = [(name, request.binary_output) for name in names]
        else:
            wanted = []
            for out in request.outputs:
                if out.name not in names:
                    raise InvalidInput(
                        f"model '{entry.model}' has no output '{out.name}'; its outputs are "
                        f"{', '.join(names)}"
                    )
                wanted.append(
                    (out.name, request.binary_output if out.binary is None else out.binary)
                )
        rows = next(iter(arrays.values())).shape[0] if signature.batchable else 1
        batcher, runtime = entry.batcher, entry.runtime
        if batcher is None or runtime is None:
            raise ModelNotReady(f"{entry.label} is not loaded")
        runtime.check(arrays)
        loop = asyncio.get_running_loop()
        outputs = await batcher.submit(arrays, rows, loop.time() + self._timeout(request))
        return InferResult(
            entry.model,
            entry.version,
            [(name, outputs[name], binary) for name, binary in wanted],
            request.id,
        )

    def _timeout(self, request: InferRequest) -> float:
        raw = request.parameters.get("timeout_ms")
        if raw is None:
            return self._default_timeout_s
        if isinstance(raw, bool) or not isinstance(raw, int | float) or raw <= 0:
            raise InvalidInput("parameters.timeout_ms must be a positive number of milliseconds")
        return float(raw) / 1000.0


def _outcome(exc: ModelportError) -> str:
    if isinstance(exc, InvalidInput):
        return "invalid_input"
    if isinstance(exc, QueueFull):
        return "queue_full"
    if isinstance(exc, ModelNotReady):
        return "not_ready"
    if isinstance(exc, DeadlineExceeded):
        return "deadline_exceeded"
    if isinstance(exc, InferenceFailed):
        return "inference_failed"
    return "error"
