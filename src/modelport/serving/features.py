"""Features joined into inference: entity keys in, feature tensors to the model.

A version whose config declares ``features`` is served with a *request signature* in which each
feature-filled model input is replaced by the entity-key inputs (BYTES ``[N]``, one key per
row). :class:`FeatureJoinRuntime` wraps the version's runtime: for every batch the batcher forms
it reads the features of all rows' entities from the online store in one round trip (in the
worker thread, like the model itself), assembles the FP32 tensors, and calls the model.

Besides the model's outputs it returns, per row, the assembled tensors (``features:<input>``,
which a request may ask to see). How many values each row lacked (missing or expired) is not a
tensor: a batch joined in the batch answers with a :class:`~modelport.serving.batching.Joined`
that carries the counts beside the outputs, and the batcher hands each request its rows of
both. The inference service turns the counts into a refusal when the version says
``on_missing: reject``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import structlog

from modelport.errors import FeatureStoreUnavailable, InvalidInput
from modelport.serving.batching import Answer, Arrays, Joined
from modelport.serving.config import FeaturesConfig
from modelport.serving.runtimes.base import Runtime
from modelport.serving.signature import Signature, TensorSpec
from modelport.stores.breaker import Breaker, Call
from modelport.stores.online import FeatureView, NumberRead, OnlineStore, ViewRead
from modelport.stores.online_records import numbers

log = structlog.get_logger("modelport.features")

FEATURE_OUTPUT_PREFIX = "features:"
_NUMERIC = ("float", "int", "bool")
_RNG = random.Random()  # noqa: S311 - log sampling, not security


def parse_feature_ref(ref: str) -> tuple[str, str]:
    view, sep, feature = ref.partition(":")
    if not sep or not view or not feature:
        raise InvalidInput(f"feature {ref!r} must be written 'view:feature'")
    return view, feature


def referenced_views(config: FeaturesConfig) -> list[str]:
    """The views a features config reads, in first-use order."""
    seen: dict[str, None] = {}
    for spec in config.inputs.values():
        for ref in spec.features:
            seen.setdefault(parse_feature_ref(ref)[0], None)
    return list(seen)


def request_signature(model_signature: Signature, config: FeaturesConfig) -> Signature:
    """What callers send: the model's inputs minus the feature-filled ones, plus one BYTES
    ``[-1]`` input per entity. Raises InvalidInput when the config does not fit the model."""
    specs = {s.name: s for s in model_signature.inputs}
    for name, spec in config.inputs.items():
        model_input = specs.get(name)
        if model_input is None:
            raise InvalidInput(
                f"features fill input '{name}', which the model does not have "
                f"(its inputs: {', '.join(sorted(specs))})"
            )
        if model_input.datatype != "FP32" or len(model_input.shape) != 2:
            raise InvalidInput(
                f"features can fill FP32 [N, F] inputs; '{name}' is {model_input.datatype} "
                f"{list(model_input.shape)}"
            )
        width = model_input.shape[1]
        if width not in (-1, len(spec.features)):
            raise InvalidInput(
                f"input '{name}' takes {width} values per row; {len(spec.features)} "
                "features are configured for it"
            )
    kept = [s for s in model_signature.inputs if s.name not in config.inputs]
    for entity, input_name in config.entities.items():
        if input_name in specs:
            raise InvalidInput(
                f"entity '{entity}' key input '{input_name}' collides with a model input"
            )
        kept.append(TensorSpec(input_name, "BYTES", (-1,)))
    return Signature(tuple(kept), model_signature.outputs)


def check_views(config: FeaturesConfig, views: Mapping[str, FeatureView]) -> None:
    """Every referenced feature exists, is numeric, and its view's entity has a key input."""
    for input_name, spec in config.inputs.items():
        for ref in spec.features:
            view_name, feature = parse_feature_ref(ref)
            view = views.get(view_name)
            if view is None:
                raise InvalidInput(f"feature view '{view_name}' does not exist")
            found = view.spec(feature)
            if found is None:
                raise InvalidInput(f"feature view '{view_name}' has no feature '{feature}'")
            if found.dtype not in _NUMERIC:
                raise InvalidInput(
                    f"feature '{ref}' is {found.dtype}; input '{input_name}' needs numbers"
                )
            if view.entity not in config.entities:
                raise InvalidInput(
                    f"feature view '{view_name}' is keyed by entity '{view.entity}'; map it to "
                    "a request input in features.entities"
                )


@dataclass(frozen=True, slots=True)
class _Column:
    view: int
    """Index into the join's views."""
    feature: str


class FeatureJoin:
    """The join of one model version: which views, which columns, which defaults."""

    def __init__(
        self,
        config: FeaturesConfig,
        views: Mapping[str, FeatureView],
        store: OnlineStore,
        on_error: Callable[[], None] | None = None,
    ) -> None:
        check_views(config, views)
        self.config = config
        self._store = store
        self._on_error = on_error
        self._breaker = Breaker()
        self._views: list[FeatureView] = []
        self._view_features: list[list[str]] = []
        index: dict[str, int] = {}
        self._inputs: dict[str, list[_Column]] = {}
        for input_name, spec in config.inputs.items():
            columns: list[_Column] = []
            for ref in spec.features:
                view_name, feature = parse_feature_ref(ref)
                view = views[view_name]
                if view_name not in index:
                    index[view_name] = len(self._views)
                    self._views.append(view)
                    self._view_features.append([])
                position = index[view_name]
                if feature not in self._view_features[position]:
                    self._view_features[position].append(feature)
                columns.append(_Column(position, feature))
            self._inputs[input_name] = columns
        self._entity_inputs = dict(config.entities)
        self._entity_input_names = frozenset(config.entities.values())
        self._default_rows = [
            np.array([_default(view, feature) for feature in features], dtype=np.float32)
            for view, features in zip(self._views, self._view_features, strict=True)
        ]
        # Per input: (view, tensor positions, view columns), so a batch fills a tensor with
        # one numpy gather per view rather than value by value.
        self._widths = {name: len(columns) for name, columns in self._inputs.items()}
        self._gathers: dict[str, list[tuple[int, np.ndarray, np.ndarray]]] = {}
        for input_name, columns in self._inputs.items():
            by_view: dict[int, tuple[list[int], list[int]]] = {}
            for position, column in enumerate(columns):
                cols = by_view.setdefault(column.view, ([], []))
                cols[0].append(position)
                cols[1].append(self._view_features[column.view].index(column.feature))
            self._gathers[input_name] = [
                (v, np.array(pos, dtype=np.intp), np.array(col, dtype=np.intp))
                for v, (pos, col) in by_view.items()
            ]

    @property
    def feature_inputs(self) -> list[str]:
        return list(self._inputs)

    def holds_keys(self, arrays: Mapping[str, np.ndarray]) -> bool:
        """Whether ``arrays`` are a request's (entity keys still to join) rather than the
        model inputs a join already built."""
        return not self._entity_input_names.isdisjoint(arrays)

    def reads(self, arrays: Mapping[str, np.ndarray]) -> list[ViewRead]:
        reads: list[ViewRead] = []
        for view, features in zip(self._views, self._view_features, strict=True):
            keys = arrays[self._entity_inputs[view.entity]].reshape(-1)
            reads.append(
                ViewRead(
                    view,
                    tuple(features),
                    tuple(
                        k.decode("utf-8", errors="replace") if type(k) is bytes else _key(k)
                        for k in keys
                    ),
                )
            )
        return reads

    def fetch_blocking(
        self, arrays: Mapping[str, np.ndarray]
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The batch's model inputs, read in one round trip. While the store is unreachable,
        every value counts as missing (``on_missing: default`` serves the views' defaults;
        ``reject`` fails the batch with 503); after a failure a :class:`Breaker` leaves the
        store alone for a back-off (1 s, doubling up to 10 s) so that an outage costs no
        latency, then lets one batch probe it."""
        reads = self.reads(arrays)
        call = self._breaker.enter()
        if call is Call.SKIP:
            return self._degraded(arrays, reads, None)
        try:
            numbers = self._store.read_numbers_blocking(reads)
        except FeatureStoreUnavailable as exc:
            return self._failed(call, arrays, reads, exc)
        self._breaker.leave(call, ok=True)
        return self.assemble(arrays, numbers)

    async def fetch(
        self, arrays: Mapping[str, np.ndarray]
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """As :meth:`fetch_blocking`, on the event loop (for a request, not a batch)."""
        reads = self.reads(arrays)
        call = self._breaker.enter()
        if call is Call.SKIP:
            return self._degraded(arrays, reads, None)
        try:
            numbers = await self._store.read_numbers(reads)
        except FeatureStoreUnavailable as exc:
            return self._failed(call, arrays, reads, exc)
        self._breaker.leave(call, ok=True)
        return self.assemble(arrays, numbers)

    def _failed(
        self,
        call: Call,
        arrays: Mapping[str, np.ndarray],
        reads: Sequence[ViewRead],
        error: FeatureStoreUnavailable,
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """A read failed: open the breaker and serve the degraded answer."""
        self._breaker.failed()
        self._breaker.leave(call, ok=False)
        return self._degraded(arrays, reads, error)

    def _degraded(
        self,
        arrays: Mapping[str, np.ndarray],
        reads: Sequence[ViewRead],
        error: FeatureStoreUnavailable | None,
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        if self._on_error is not None:
            self._on_error()
        if error is not None:
            log.warning("feature_store_unavailable", error=error.message)
        if self.config.on_missing == "reject":
            raise error or FeatureStoreUnavailable(
                "the online feature store is unreachable; retry shortly"
            )
        return self.assemble(arrays, numbers(reads, [[None] * len(read.keys) for read in reads]))

    def assemble(
        self,
        arrays: Mapping[str, np.ndarray],
        numbers: Sequence[NumberRead],
        now: float | None = None,
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Model inputs (request inputs minus entity keys, plus the feature tensors) and, per
        row, how many values were not present, with a few array operations per view and
        batch. A value is present when its record is within its view's TTL and carries it as
        a number; anything else takes the view's default."""
        at = time.time() if now is None else now
        rows = next(iter(arrays.values())).shape[0]
        missing = np.zeros(rows, dtype=np.int32)
        matrices: list[np.ndarray] = []
        for view, defaults, (stamps, values) in zip(
            self._views, self._default_rows, numbers, strict=True
        ):
            # NaN stamps (no record) compare false: such rows are stale like expired ones.
            absent = np.isnan(values)
            stale = ~(at - stamps <= view.ttl_s)
            if stale.any():
                absent[stale] = True
            missing += absent.sum(axis=1, dtype=np.int32)
            matrices.append(np.where(absent, defaults, values))
        return self._model_inputs(arrays, rows, matrices), missing

    def _model_inputs(
        self, arrays: Mapping[str, np.ndarray], rows: int, matrices: Sequence[np.ndarray]
    ) -> dict[str, np.ndarray]:
        inputs = {k: v for k, v in arrays.items() if k not in self._entity_input_names}
        for input_name, gathers in self._gathers.items():
            tensor = np.empty((rows, self._widths[input_name]), dtype=np.float32)
            for view_index, positions, columns in gathers:
                tensor[:, positions] = matrices[view_index][:, columns]
            inputs[input_name] = tensor
        return inputs


ViewGetter = Callable[[str, str, int | None], Awaitable[FeatureView | None]]
"""``(tenant, view, version)`` -> the view (latest when version is None), or None."""


async def build_join(
    tenant: str,
    config: FeaturesConfig,
    get_view: ViewGetter,
    store: OnlineStore,
    on_error: Callable[[], None] | None = None,
) -> FeatureJoin:
    """The join of a registered version: the views at the versions it was registered with."""
    views: dict[str, FeatureView] = {}
    for name in referenced_views(config):
        version = config.view_versions.get(name)
        view = await get_view(tenant, name, version)
        if view is None:
            at = "" if version is None else f" version {version}"
            raise InvalidInput(f"feature view '{name}'{at} does not exist")
        views[name] = view
    return FeatureJoin(config, views, store, on_error)


class FeatureJoinRuntime:
    """A runtime that joins features before calling the model (see the module docstring)."""

    def __init__(self, inner: Runtime, join: FeatureJoin, signature: Signature, label: str) -> None:
        self._inner = inner
        self._join = join
        self._signature = signature
        self._label = label

    @property
    def signature(self) -> Signature:
        return self._signature

    async def prefetch(self, arrays: Arrays) -> tuple[Arrays, np.ndarray, bytes]:
        """Join one request's features now, for a version whose answers are cached: the values
        are part of the cache key. Returns what to submit to the batcher (the model's inputs,
        which :meth:`answer` then takes as they are), per row how many values were missing,
        and the bytes that identify the values."""
        model_inputs, missing = await self._join.fetch(arrays)
        identity = (
            b"".join(model_inputs[name].tobytes() for name in self._join.feature_inputs)
            + missing.tobytes()
        )
        self._maybe_log_sample(arrays, model_inputs)
        return model_inputs, missing, identity

    def check(self, inputs: Arrays) -> None:
        self._inner.check(
            {k: v for k, v in inputs.items() if k in self._inner.signature.input_specs}
        )

    def answer(self, inputs: Arrays) -> Answer:
        """What the batcher calls. A batch of entity keys is joined here and answered with a
        :class:`Joined` (outputs and per-row missing counts); a batch that :meth:`prefetch`
        joined (its requests hold the model inputs) is answered with the outputs alone, its
        counts being known already."""
        if not self._join.holds_keys(inputs):
            return self._outputs(inputs)
        model_inputs, missing = self._join.fetch_blocking(inputs)
        self._maybe_log_sample(inputs, model_inputs)
        return Joined(self._outputs(model_inputs), missing)

    def predict(self, inputs: Arrays) -> Arrays:
        """The :class:`Runtime` contract: the outputs of :meth:`answer`, without the counts."""
        answer = self.answer(inputs)
        return answer.outputs if isinstance(answer, Joined) else answer

    def _outputs(self, model_inputs: Arrays) -> Arrays:
        outputs = dict(self._inner.predict(model_inputs))
        for name in self._join.feature_inputs:
            outputs[FEATURE_OUTPUT_PREFIX + name] = model_inputs[name]
        return outputs

    def _maybe_log_sample(self, inputs: Arrays, model_inputs: Arrays) -> None:
        rate = self._join.config.log_sample_rate
        if rate > 0:
            self._log_sample(inputs, model_inputs, rate)

    def _log_sample(
        self, inputs: Mapping[str, np.ndarray], model_inputs: Mapping[str, np.ndarray], rate: float
    ) -> None:
        rows = next(iter(model_inputs.values())).shape[0]
        for r in range(rows):
            if _RNG.random() >= rate:
                continue
            log.info(
                "feature_sample",
                model=self._label,
                entities={
                    entity: _key(inputs[name][r])
                    for entity, name in self._join.config.entities.items()
                },
                features={
                    name: [round(float(x), 6) for x in model_inputs[name][r]]
                    for name in self._join.feature_inputs
                },
            )

    def close(self) -> None:
        self._inner.close()


def _default(view: FeatureView, feature: str) -> float:
    spec = view.spec(feature)
    return 0.0 if spec is None or spec.default is None else float(spec.default)


def _key(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)
