"""Inference: resolve the version, validate before queueing, batch, shape the answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import structlog

from modelport.errors import (
    DeadlineExceeded,
    InferenceFailed,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    ModelportError,
    NotFound,
    PayloadTooLarge,
    QueueFull,
    VersionNotFound,
)
from modelport.routing.policy import Route
from modelport.routing.table import RouteTable
from modelport.serving.batching import Answer, Joined
from modelport.serving.cache_key import cache_key
from modelport.serving.codec import InferRequest, decode_document
from modelport.serving.config import FeaturesConfig
from modelport.serving.features import FEATURE_OUTPUT_PREFIX, FeatureJoinRuntime
from modelport.serving.pool import LoadedVersion, ModelPool, VersionState
from modelport.serving.request_size import request_size_limit
from modelport.serving.signature import validate_inputs
from modelport.stores.registry import RegistryStore

if TYPE_CHECKING:
    from modelport.services.cache import ResponseCache
    from modelport.services.shadow import ShadowRunner
    from modelport.serving.batcher import Batcher

log = structlog.get_logger("modelport.inference")


@dataclass(slots=True)
class InferResult:
    model: str
    version: str
    outputs: list[tuple[str, np.ndarray, bool]]
    id: str | None
    cache: str | None = None
    """``hit`` or ``miss`` for a version with the response cache on; None otherwise."""


class InferenceService:
    def __init__(
        self,
        pool: ModelPool,
        registry: RegistryStore,
        default_timeout_s: float,
        routes: RouteTable | None = None,
        shadow: ShadowRunner | None = None,
        cache: ResponseCache | None = None,
    ) -> None:
        self._pool = pool
        self._registry = registry
        self._default_timeout_s = default_timeout_s
        self._routes = routes if routes is not None else RouteTable()
        self._shadow = shadow
        self._cache = cache

    async def resolve(self, tenant: str, model: str, version: str | None) -> LoadedVersion:
        """The loaded version that serves ``model`` (newest READY one unless pinned)."""
        if version is None:
            if (tenant, model) in self._routes.pending:
                raise ModelNotReady(
                    f"model '{model}' is loading the versions its routing names; retry shortly"
                )
            entry = self._pool.newest_ready(tenant, model)
            if entry is not None:
                return entry
            loading = self._pool.versions_of(tenant, model)
            if loading:
                states = ", ".join(
                    f"{v.version}: {v.state.value}" + (f", {v.error}" if v.error else "")
                    for v in loading
                )
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

    async def _resolve_alias(self, tenant: str, model: str, alias: str) -> LoadedVersion:
        routing = self._routes.get(tenant, model)
        version = None if routing is None else routing.aliases.get(alias)
        if version is None:
            if await self._registry.get_model(tenant, model) is None:
                raise ModelNotFound(model)
            if (tenant, model) in self._routes.pending | self._routes.switching:
                raise ModelNotReady(f"model '{model}' is loading its aliases; retry shortly")
            raise NotFound(f"model '{model}' has no alias '{alias}'")
        return await self.resolve(tenant, model, version)

    def body_limit(self, tenant: str, model: str, version: str | None, alias: str | None) -> int:
        """The largest body a request for this target may send, read before the body is:
        the most any version it could go to accepts. 0 when no loaded version answers for
        it here (``check_target`` then says why, or lets the request through)."""
        routing = None
        if version is None:
            if "@" in model:
                model, _, alias = model.partition("@")
            routing = self._routes.installed.get((tenant, model))
            if alias is not None:
                version = None if routing is None else routing.aliases.get(alias)
                if version is None:
                    return 0
        if version is not None:
            return _body_limit(self._pool.get(tenant, model, version))
        if routing is not None and routing.route is not None:
            return max(
                _body_limit(self._pool.get(tenant, model, v)) for v in routing.route.versions
            )
        return _body_limit(self._pool.newest_ready(tenant, model))

    async def check_target(
        self, tenant: str, model: str, version: str | None, alias: str | None
    ) -> None:
        """Raise what a request for this target would get (not found, not ready) when nothing
        here serves it, before its body is read."""
        if alias is None and "@" in model:
            model, _, alias = model.partition("@")
        if alias is not None and version is None:
            await self._resolve_alias(tenant, model, alias)
        else:
            await self.resolve(tenant, model, version)

    def infer_document(
        self,
        tenant: str,
        model: str,
        version: str | None,
        doc: Any,
        binary: memoryview,
        *,
        alias: str | None = None,
        routing_key: str | None = None,
        max_rows: int = 0,
    ) -> Coroutine[Any, Any, InferResult]:
        """``infer`` for a parsed request document and its binary data: await what it returns.

        A plain JSON request to a version that has a request plan (no response cache) and a
        route without shadow or fallback goes from the document straight to the batcher;
        anything else is decoded in full and served by ``infer``. Not a coroutine itself, so
        a request suspends through one frame fewer; a document the general decoder refuses
        raises ``InvalidInput`` here, before anything is awaited."""
        if alias is None and not binary:
            entry = self._planned_target(tenant, model, version, routing_key)
            if entry is not None and entry.plan is not None:
                planned = entry.plan.arrays(doc)
                if planned is not None:
                    if max_rows and planned[1] > max_rows:
                        raise _too_many_rows(tenant, planned[1], max_rows)
                    return self._run_planned(entry, planned[0], planned[1], doc.get("id"))
        request = decode_document(doc, binary)
        return self.infer(
            tenant,
            model,
            version,
            request,
            alias=alias,
            routing_key=routing_key,
            max_rows=max_rows,
        )

    def _planned_target(
        self, tenant: str, model: str, version: str | None, routing_key: str | None
    ) -> LoadedVersion | None:
        """The READY version a request goes to, when finding it needs no lookup and its route
        neither mirrors nor falls back; None sends the request the general way."""
        if version is not None:
            entry = self._pool.get(tenant, model, version)
        else:
            if "@" in model:
                return None
            routing = self._routes.installed.get((tenant, model))
            if routing is not None and routing.route is not None:
                route = routing.route
                if route.shadow_version is not None or route.fallback_version is not None:
                    return None
                entry = self._pool.get(tenant, model, route.choose(routing_key))
            elif (tenant, model) in self._routes.pending:
                return None
            else:
                entry = self._pool.newest_ready(tenant, model)
        if entry is None or entry.state is not VersionState.READY:
            return None
        return entry

    async def _run_planned(
        self,
        entry: LoadedVersion,
        arrays: dict[str, np.ndarray],
        rows: int,
        request_id: str | None,
    ) -> InferResult:
        """Queue a request the version's plan decoded (and so validated) and await it."""
        started = time.perf_counter()
        entry.metrics.fast_plan()
        entry.inflight += 1
        try:
            batcher, runtime = entry.batcher, entry.runtime
            if batcher is None or runtime is None:
                raise ModelNotReady(f"{entry.label} is not loaded")
            runtime.check(arrays)
            outputs = await batcher.enqueue(arrays, rows, batcher.now() + self._default_timeout_s)
            if isinstance(outputs, Joined):
                outputs = _joined_outputs(entry, outputs)
        except ModelportError as exc:
            _count_failure(entry, exc, started)
            raise
        except asyncio.CancelledError:
            entry.metrics.request("cancelled", time.perf_counter() - started)
            raise
        finally:
            entry.inflight -= 1
        _count_success(entry, started)
        return InferResult(
            entry.model,
            entry.version,
            [(name, outputs[name], False) for name in entry.signature.output_names],
            request_id,
        )

    async def infer(
        self,
        tenant: str,
        model: str,
        version: str | None,
        request: InferRequest,
        *,
        alias: str | None = None,
        routing_key: str | None = None,
        max_rows: int = 0,
    ) -> InferResult:
        """Serve ``request``; ``max_rows``: the tenant's quota on rows per request (0: none)."""
        started = time.perf_counter()
        if max_rows:
            rows = max((t.shape[0] if t.shape else 1 for t in request.inputs), default=0)
            if rows > max_rows:
                raise _too_many_rows(tenant, rows, max_rows)
        if alias is None and "@" in model:
            model, _, alias = model.partition("@")
            if not alias:
                raise InvalidInput("'model@alias' needs an alias after '@'")
        route: Route | None = None
        entry: LoadedVersion | None = None
        if version is not None:
            entry = await self.resolve(tenant, model, version)
        elif alias is not None:
            entry = await self._resolve_alias(tenant, model, alias)
        else:
            routing = self._routes.installed.get((tenant, model))
            if routing is not None and routing.route is not None:
                route = routing.route
                key = routing_key
                if key is None and route.sticky_key is not None:
                    raw = request.parameters.get(route.sticky_key)
                    key = None if raw is None else str(raw)
                chosen = route.choose(key)
                entry = self._pool.get(tenant, model, chosen)
                if entry is None or entry.state is not VersionState.READY:
                    entry = await self.resolve(tenant, model, chosen)
            else:
                # The common case (unrouted, a READY version cached in the pool) stays sync.
                if (tenant, model) not in self._routes.pending:
                    entry = self._pool.newest_ready(tenant, model)
                if entry is None:
                    entry = await self.resolve(tenant, model, None)
        try:
            result, arrays, rows, outputs = await self._run(entry, request, started)
        except ModelportError as exc:
            fallback = self._fallback(route, entry, exc)
            if fallback is None:
                raise
            entry.metrics.fallback()
            log.info(
                "infer_fallback",
                model=model,
                version=entry.version,
                fallback=fallback.version,
                error=exc.message,
            )
            result, arrays, rows, outputs = await self._run(fallback, request, started)
            return result
        if route is not None and route.shadow_version is not None and self._shadow is not None:
            self._shadow.maybe_mirror(
                entry, route, arrays, rows, outputs, time.perf_counter() - started
            )
        return result

    def _fallback(
        self, route: Route | None, entry: LoadedVersion, exc: ModelportError
    ) -> LoadedVersion | None:
        if route is None or route.fallback_version is None:
            return None
        if route.fallback_version == entry.version or not isinstance(exc, _RETRYABLE):
            return None
        fallback = self._pool.get(entry.tenant, entry.model, route.fallback_version)
        if fallback is None or fallback.state is not VersionState.READY:
            return None
        return fallback

    async def _run(
        self, entry: LoadedVersion, request: InferRequest, started: float
    ) -> tuple[InferResult, dict[str, np.ndarray], int, dict[str, np.ndarray]]:
        """Validate, queue and await one request on ``entry``; count its outcome.

        The request path's hot loop: everything up to the batcher's future is synchronous and
        the future is awaited here, so a request suspends through as few frames as possible."""
        entry.metrics.general_path()
        # Counted from routing to answer: an unload waits for this to reach zero.
        entry.inflight += 1
        try:
            signature = entry.signature
            arrays = validate_inputs(signature, request.inputs, entry.model)
            wanted = _wanted(entry, request)
            rows = next(iter(arrays.values())).shape[0] if signature.batchable else 1
            batcher, runtime = entry.batcher, entry.runtime
            if batcher is None or runtime is None:
                raise ModelNotReady(f"{entry.label} is not loaded")
            runtime.check(arrays)
            deadline = batcher.now() + self._timeout(request)
            cached: str | None = None
            outputs: Answer
            if self._cache is not None and entry.config.cache.enabled:
                submit, extra = arrays, b""
                if isinstance(runtime, FeatureJoinRuntime):
                    submit, missing, extra = await runtime.prefetch(arrays)
                    _refuse_missing(entry, missing)
                outputs, cached = await self._cached(
                    self._cache, entry, batcher, arrays, rows, deadline, extra, submit
                )
            else:
                outputs = await batcher.enqueue(arrays, rows, deadline)
            if isinstance(outputs, Joined):
                outputs = _joined_outputs(entry, outputs)
            if entry.config.features is not None:
                wanted = _with_features(entry.config.features, request, wanted)
        except ModelportError as exc:
            _count_failure(entry, exc, started)
            raise
        except asyncio.CancelledError:
            entry.metrics.request("cancelled", time.perf_counter() - started)
            raise
        finally:
            entry.inflight -= 1
        _count_success(entry, started)
        result = InferResult(
            entry.model,
            entry.version,
            [(name, outputs[name], binary) for name, binary in wanted],
            request.id,
            cached,
        )
        return result, arrays, rows, outputs

    async def _cached(
        self,
        cache: ResponseCache,
        entry: LoadedVersion,
        batcher: Batcher,
        arrays: dict[str, np.ndarray],
        rows: int,
        deadline: float,
        extra: bytes = b"",
        submit: dict[str, np.ndarray] | None = None,
    ) -> tuple[Answer, str | None]:
        """The answer through the response cache, and ``hit`` or ``miss``.

        ``extra``: whatever else the answer depends on, hashed into the key with the inputs
        (the feature values joined into the request; ``submit`` then holds the model inputs
        built from them). A feature-joined version is not cached without them: a key without
        the values would serve answers built on values that have since changed. The version
        part of the key carries the artifact's digest, so two registries sharing one Redis
        never serve each other's answers."""
        submit = arrays if submit is None else submit
        if entry.config.features is not None and not extra:
            return await batcher.submit(submit, rows, deadline), None
        config = entry.config.cache
        key = cache_key(entry.tenant, entry.model, entry.identity, arrays, extra)
        # What is cached is outputs alone: a batch answers with a ``Joined`` only when it
        # joins entity keys itself, and these inputs hold none (a feature-joined version's
        # were joined by ``prefetch``, its counts already checked).
        compute = cast(
            "Callable[[], Awaitable[dict[str, np.ndarray]]]",
            partial(batcher.submit, submit, rows, deadline),
        )
        outputs, status = await cache.get_or_compute(
            entry.tenant,
            entry.model,
            entry.version,
            key,
            config.ttl_s,
            config.shared,
            compute,
        )
        return outputs, "miss" if status == "miss" else "hit"

    def _timeout(self, request: InferRequest) -> float:
        raw = request.parameters.get("timeout_ms")
        if raw is None:
            return self._default_timeout_s
        if isinstance(raw, bool) or not isinstance(raw, int | float) or raw <= 0:
            raise InvalidInput("parameters.timeout_ms must be a positive number of milliseconds")
        return float(raw) / 1000.0


def _body_limit(entry: LoadedVersion | None) -> int:
    if entry is None or entry.state is not VersionState.READY:
        return 0
    limit = entry.max_body_bytes
    if limit < 0:
        limit = entry.max_body_bytes = request_size_limit(entry.signature, entry.config) or 0
    return limit if limit > 0 else UNBOUNDED


def _too_many_rows(tenant: str, rows: int, max_rows: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"request has {rows} rows; tenant '{tenant}' may send at most {max_rows} "
        "(its max_rows quota)"
    )


#: What ``body_limit`` answers for a version whose requests have no size of their own.
UNBOUNDED = 2**62


def _wanted(entry: LoadedVersion, request: InferRequest) -> list[tuple[str, bool]]:
    """The outputs to answer with, and whether each travels as binary data."""
    names = entry.signature.output_names
    if request.outputs is None:
        binary = request.binary_output
        return [(name, binary) for name in names]
    wanted = []
    for out in request.outputs:
        if out.name not in names:
            raise InvalidInput(
                f"model '{entry.model}' has no output '{out.name}'; its outputs are "
                f"{', '.join(names)}"
            )
        wanted.append((out.name, request.binary_output if out.binary is None else out.binary))
    return wanted


def _with_features(
    features: FeaturesConfig, request: InferRequest, wanted: list[tuple[str, bool]]
) -> list[tuple[str, bool]]:
    """Add the joined feature tensors to the answer when the request asks
    (``return_features``)."""
    if request.parameters.get("return_features") is True:
        wanted = wanted + [
            (FEATURE_OUTPUT_PREFIX + name, request.binary_output) for name in features.inputs
        ]
    return wanted


def _joined_outputs(entry: LoadedVersion, answer: Joined) -> dict[str, np.ndarray]:
    """The outputs of a request whose features were joined in its batch, once its rows'
    missing-value counts pass ``on_missing``."""
    _refuse_missing(entry, answer.missing)
    return answer.outputs


def _refuse_missing(entry: LoadedVersion, missing: np.ndarray) -> None:
    """With ``on_missing: reject``, refuse a request whose rows lacked feature values."""
    features = entry.config.features
    if features is not None and features.on_missing == "reject" and missing.any():
        rows = [int(r) for r in np.flatnonzero(missing)[:10]]
        raise InvalidInput(
            f"{entry.label} needs every feature value (on_missing: reject); row(s) {rows} "
            f"lack {int(missing.sum())} value(s) in the online store"
        )


#: Failures that say something about the version, not the request: worth one retry elsewhere.
_RETRYABLE = (InferenceFailed, DeadlineExceeded, QueueFull, ModelNotReady)
#: Outcomes that are the caller's mistake; they do not count against a version's error rate.
_CLIENT_OUTCOMES = frozenset({"invalid_input"})


def _count_success(entry: LoadedVersion, started: float) -> None:
    seconds = time.perf_counter() - started
    entry.metrics.request("ok", seconds)
    entry.window.record(True, seconds)


def _count_failure(entry: LoadedVersion, exc: ModelportError, started: float) -> None:
    seconds = time.perf_counter() - started
    name = _outcome(exc)
    entry.metrics.request(name, seconds)
    if name not in _CLIENT_OUTCOMES:
        entry.window.record(False, seconds)


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
