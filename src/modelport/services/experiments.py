"""Experiments: define, start, stop and re-run them; assign units; record exposures; analyse.

A unit's variant is ``routing.assignment.choose(salt, unit, weights)``: nothing is stored per
unit, and every replica agrees. Variants, weights, unit, surface, layer and salt are fixed once
an experiment has started; changing them takes a new run (a new salt, results from zero), so a
unit is never silently moved to another variant in the middle of a run.

``assign`` is on the request path of the surfaces it covers: it reads the running experiments
of a (tenant, surface) from a cache kept for ``cache_ttl_s`` (a start or stop on another
replica is seen within it) and hashes once. ``expose`` only hands the exposure to the
recorder, which writes it off the request path; after each write the guardrails of the
experiments written to are checked, at most once per ``guardrail_interval_s`` each.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import structlog

from modelport.errors import Conflict, ExperimentNotFound, InvalidInput
from modelport.routing.assignment import BUCKETS, choose, layer_bucket
from modelport.services.experiment_input import (
    ExperimentIn,
    ExperimentPatch,
    NewRunIn,
    VariantIn,
    check_layer,
    check_surface,
    check_unit,
    check_variants,
    parse,
)
from modelport.services.experiment_results import analyse, breach
from modelport.services.exposures import ExposureRecorder
from modelport.stores.experiments import (
    DRAFT,
    RUNNING,
    STOPPED,
    Experiment,
    ExperimentStore,
    Exposure,
    ExposureStore,
    Variant,
)

log = structlog.get_logger("modelport.experiments")

#: Fields fixed once an experiment has started; a new run changes variants (and weights).
_FIXED = ("variants", "control", "unit", "unit_key", "surface", "layer", "salt")
GUARDRAIL = "guardrail"
"""Who the history names when the guardrail stops an experiment."""


@dataclass(frozen=True, slots=True)
class Assignment:
    experiment_id: str
    run: int
    variant: str
    target: dict[str, Any]
    unit: str
    """The unit's value (a user id, a session id, a custom key's value)."""


class ExperimentService:
    def __init__(
        self,
        store: ExperimentStore,
        exposures: ExposureStore,
        *,
        cache_ttl_s: float = 1.0,
        guardrail_interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._exposures = exposures
        self.recorder = ExposureRecorder(exposures, on_written=self._check_guardrails)
        self._ttl = cache_ttl_s
        self._guardrail_every = guardrail_interval_s
        self._clock = clock
        self._running: dict[tuple[str, str], tuple[float, list[Experiment]]] = {}
        self._checked: dict[tuple[str, str], float] = {}

    async def close(self) -> None:
        await self.recorder.close()

    # ----------------------------------------------------------- definitions

    async def create(
        self, tenant: str, body: ExperimentIn | bytes | dict[str, Any], actor: str
    ) -> Experiment:
        spec = parse(ExperimentIn, body, "experiment")
        check_surface(spec.surface)
        check_unit(spec.unit, spec.unit_key)
        check_layer(spec.layer)
        control = check_variants(spec.surface, spec.variants, spec.control)
        now = _now()
        experiment = Experiment(
            tenant=tenant,
            id=spec.id,
            name=spec.name or spec.id,
            description=spec.description,
            surface=spec.surface,
            unit=spec.unit,
            unit_key=spec.unit_key,
            status=DRAFT,
            run=1,
            salt=spec.salt or secrets.token_hex(8),
            variants=_variants(spec.variants),
            control=control,
            layer=None if spec.layer is None else spec.layer.name,
            layer_start=0 if spec.layer is None else spec.layer.start,
            layer_end=BUCKETS if spec.layer is None else spec.layer.end,
            guardrail=None if spec.guardrail is None else spec.guardrail.model_dump(),
            history=(_entry("created", actor, 1, now),),
            version=1,
            created_at=now,
            updated_at=now,
        )
        await self._store.create(experiment)
        return experiment

    async def get(self, tenant: str, experiment_id: str) -> Experiment:
        found = await self._store.get(tenant, experiment_id)
        if found is None:
            raise ExperimentNotFound(experiment_id)
        return found

    async def list(self, tenant: str, status: str | None = None) -> list[Experiment]:
        if status is not None and status not in (DRAFT, RUNNING, STOPPED):
            raise InvalidInput(f"status is one of {DRAFT}, {RUNNING}, {STOPPED}")
        return await self._store.list(tenant, status)

    async def update(
        self,
        tenant: str,
        experiment_id: str,
        body: ExperimentPatch | bytes | dict[str, Any],
        actor: str,
    ) -> Experiment:
        patch = parse(ExperimentPatch, body, "experiment change")
        changed = patch.model_fields_set
        current = await self.get(tenant, experiment_id)
        fixed = sorted(changed & set(_FIXED))
        if fixed and current.status != DRAFT:
            raise Conflict(
                f"experiment '{experiment_id}' has started (run {current.run}): its "
                f"{', '.join(fixed)} change only with a new run, so that no unit moves to "
                f"another variant mid-run. POST /v1/experiments/{experiment_id}/runs with "
                '{"variants": [...]} starts one: a new salt, units assigned afresh, results '
                "from zero"
            )
        surface = patch.surface if "surface" in changed and patch.surface else current.surface
        check_surface(surface)
        unit = patch.unit if "unit" in changed and patch.unit else current.unit
        unit_key = (
            patch.unit_key if "unit_key" in changed or "unit" in changed else current.unit_key
        )
        check_unit(unit, unit_key)
        check_layer(patch.layer)
        variants = (
            patch.variants
            if patch.variants is not None
            else [VariantIn.model_validate(v.to_json()) for v in current.variants]
        )
        control = check_variants(
            surface, variants, patch.control if "control" in changed else current.control
        )
        layer = (
            (current.layer, current.layer_start, current.layer_end)
            if "layer" not in changed
            else (None, 0, BUCKETS)
            if patch.layer is None
            else (patch.layer.name, patch.layer.start, patch.layer.end)
        )
        guardrail = current.guardrail
        if "guardrail" in changed:
            guardrail = None if patch.guardrail is None else patch.guardrail.model_dump()
        updated = replace(
            current,
            name=current.name if patch.name is None else patch.name,
            description=current.description if patch.description is None else patch.description,
            guardrail=guardrail,
            surface=surface,
            unit=unit,
            unit_key=unit_key,
            variants=_variants(variants),
            control=control,
            salt=patch.salt or current.salt,
            layer=layer[0],
            layer_start=layer[1],
            layer_end=layer[2],
        )
        entry = _entry("edited", actor, current.run, _now(), fields=sorted(changed))
        return await self._write(updated, current, entry)

    async def delete(self, tenant: str, experiment_id: str) -> None:
        current = await self.get(tenant, experiment_id)
        if current.status == RUNNING:
            raise Conflict(
                f"experiment '{experiment_id}' is running; stop it first "
                f"(POST /v1/experiments/{experiment_id}/stop)"
            )
        await self._store.delete(tenant, experiment_id)

    # ----------------------------------------------------------- lifecycle

    async def start(self, tenant: str, experiment_id: str, actor: str) -> Experiment:
        current = await self.get(tenant, experiment_id)
        if current.status == RUNNING:
            return current
        await self._refuse_overlap(current)
        started = replace(current, status=RUNNING)
        return await self._write(started, current, _entry("started", actor, current.run, _now()))

    async def stop(
        self, tenant: str, experiment_id: str, actor: str, reason: str | None = None
    ) -> Experiment:
        current = await self.get(tenant, experiment_id)
        if current.status != RUNNING:
            return current
        entry = _entry("stopped", actor, current.run, _now(), reason=reason)
        return await self._write(replace(current, status=STOPPED), current, entry)

    async def new_run(
        self,
        tenant: str,
        experiment_id: str,
        body: NewRunIn | bytes | dict[str, Any],
        actor: str,
    ) -> Experiment:
        spec = parse(NewRunIn, body, "new run")
        current = await self.get(tenant, experiment_id)
        control = check_variants(current.surface, spec.variants, spec.control)
        salt = spec.salt or secrets.token_hex(8)
        if salt == current.salt:
            raise InvalidInput("a new run takes a new salt; leave salt out to get a random one")
        run = replace(
            current,
            status=RUNNING,
            run=current.run + 1,
            salt=salt,
            variants=_variants(spec.variants),
            control=control,
        )
        await self._refuse_overlap(run)
        weights = {v.name: v.weight for v in run.variants}
        entry = _entry("new_run", actor, run.run, _now(), weights=weights)
        return await self._write(run, current, entry)

    async def _refuse_overlap(self, experiment: Experiment) -> None:
        """Running experiments of one surface must share a layer, and the running
        experiments of a layer must take disjoint bucket ranges: no unit in two at once."""
        for other in await self._store.list(experiment.tenant, RUNNING):
            if other.id == experiment.id:
                continue
            same_layer = experiment.layer is not None and other.layer == experiment.layer
            overlap = (
                experiment.layer_start < other.layer_end
                and other.layer_start < experiment.layer_end
            )
            if (other.surface == experiment.surface and not same_layer) or (same_layer and overlap):
                raise Conflict(
                    f"experiment '{other.id}' is running on {other.surface}"
                    + (f" in layer {other.layer}" if other.layer else "")
                    + f": stop it, or put both in one layer with disjoint ranges (it has "
                    f"[{other.layer_start}, {other.layer_end}))"
                )

    async def _write(self, new: Experiment, read: Experiment, entry: dict[str, Any]) -> Experiment:
        written = replace(
            new,
            version=read.version + 1,
            updated_at=_now(),
            history=(*read.history, entry),
        )
        if not await self._store.replace(written, read.version):
            raise Conflict(
                f"experiment '{read.id}' changed while this request ran; read it and retry"
            )
        self._forget(read.tenant)
        log.info(
            "experiment_changed",
            tenant=read.tenant,
            experiment=read.id,
            action=entry["action"],
            by=entry["by"],
            status=written.status,
            run=written.run,
        )
        return written

    def _forget(self, tenant: str) -> None:
        for key in [k for k in self._running if k[0] == tenant]:
            del self._running[key]

    # ----------------------------------------------------------- serving

    async def assign(
        self, tenant: str, surface: str, units: Mapping[str, str]
    ) -> Assignment | None:
        """The variant of the running experiment covering ``surface`` that the caller's unit
        falls in, or None. ``units``: what the request knows, by unit kind (``"user"``,
        ``"session"``, or a custom unit's key)."""
        key = (tenant, surface)
        now = self._clock()
        cached = self._running.get(key)
        if cached is None or cached[0] <= now:
            running = [e for e in await self._store.list(tenant, RUNNING) if e.surface == surface]
            self._running[key] = cached = (now + self._ttl, running)
        for experiment in cached[1]:
            kind = experiment.unit_key if experiment.unit == "custom" else experiment.unit
            unit = units.get(kind or experiment.unit)
            if not unit:
                continue
            if experiment.layer is not None and not (
                experiment.layer_start
                <= layer_bucket(experiment.layer, unit)
                < experiment.layer_end
            ):
                continue
            variant = experiment.variants[choose(experiment.salt, unit, experiment.weights)]
            return Assignment(experiment.id, experiment.run, variant.name, variant.target, unit)
        return None

    def expose(
        self,
        tenant: str,
        assignment: Assignment,
        request_id: str,
        *,
        outcome: str = "ok",
        latency_ms: float | None = None,
    ) -> None:
        """Record that ``request_id`` was answered under ``assignment`` (``outcome``: "ok" or
        "error"); returns at once, the write happens off the request path."""
        self.recorder.record(
            Exposure(
                tenant=tenant,
                experiment_id=assignment.experiment_id,
                request_id=request_id,
                run=assignment.run,
                variant=assignment.variant,
                unit=assignment.unit,
                outcome=outcome,
                latency_ms=latency_ms,
                exposed_at=_now(),
            )
        )

    # ----------------------------------------------------------- analysis

    async def results(self, tenant: str, experiment_id: str) -> dict[str, Any]:
        experiment = await self.get(tenant, experiment_id)
        tallies = await self._exposures.tallies(tenant, experiment_id, experiment.run)
        reason = breach(experiment, tallies)
        if reason is not None and experiment.status == RUNNING:
            experiment = await self._guardrail_stop(experiment, reason)
        return analyse(experiment, tallies)

    async def _check_guardrails(self, written: set[tuple[str, str]]) -> None:
        now = self._clock()
        for tenant, experiment_id in written:
            if self._checked.get((tenant, experiment_id), -1e18) + self._guardrail_every > now:
                continue
            self._checked[(tenant, experiment_id)] = now
            experiment = await self._store.get(tenant, experiment_id)
            if experiment is None or experiment.status != RUNNING or not experiment.guardrail:
                continue
            tallies = await self._exposures.tallies(tenant, experiment_id, experiment.run)
            reason = breach(experiment, tallies)
            if reason is not None:
                await self._guardrail_stop(experiment, reason)

    async def _guardrail_stop(self, experiment: Experiment, reason: str) -> Experiment:
        log.warning(
            "experiment_guardrail_stopped",
            tenant=experiment.tenant,
            experiment=experiment.id,
            reason=reason,
        )
        try:
            return await self.stop(experiment.tenant, experiment.id, GUARDRAIL, reason)
        except Conflict:  # changed meanwhile: whoever changed it decided
            return await self.get(experiment.tenant, experiment.id)


def _variants(variants: list[VariantIn]) -> tuple[Variant, ...]:
    return tuple(
        Variant(v.name, v.weight, v.target.model_dump(exclude_none=True)) for v in variants
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _entry(action: str, actor: str, run: int, at: dt.datetime, **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"at": at.isoformat().replace("+00:00", "Z"), "action": action}
    entry["by"], entry["run"] = actor, run
    entry.update({k: v for k, v in extra.items() if v is not None})
    return entry
