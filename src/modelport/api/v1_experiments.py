"""API of experiments: ``/v1/experiments`` (reads need ``read``, writes ``write``).

Another tenant's experiment answers like a missing one (404). Variants and weights are fixed
once an experiment has started; ``POST /v1/experiments/{id}/runs`` changes them with a new run.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Path, Query
from starlette.responses import Response

from modelport.api.access import ReadTenant, Writer
from modelport.api.deps import services
from modelport.api.responses import JsonResponse
from modelport.services.experiment_input import ID_PATTERN, ExperimentIn, ExperimentPatch, NewRunIn
from modelport.stores.experiments import Experiment
from modelport.wiring import Services

router = APIRouter(prefix="/v1/experiments", tags=["experiments"])
ServicesDep = Annotated[Services, Depends(services)]
ExperimentId = Annotated[
    str, Path(min_length=1, max_length=64, pattern=f"^{ID_PATTERN}$", description="Its id.")
]
_ONE: dict[int | str, dict[str, Any]] = {200: {"description": "The experiment with its history."}}


def _out(experiment: Experiment, status_code: int = 200) -> Response:
    return JsonResponse(to_json(experiment), status_code=status_code)


def to_json(e: Experiment) -> dict[str, Any]:
    return {
        "id": e.id,
        "name": e.name,
        "description": e.description,
        "surface": e.surface,
        "unit": e.unit,
        "unit_key": e.unit_key,
        "status": e.status,
        "run": e.run,
        "salt": e.salt,
        "variants": [v.to_json() for v in e.variants],
        "control": e.control,
        "layer": None
        if e.layer is None
        else {"name": e.layer, "start": e.layer_start, "end": e.layer_end},
        "guardrail": e.guardrail,
        "history": list(e.history),
        "version": e.version,
        "created_at": e.created_at.isoformat(),
        "updated_at": e.updated_at.isoformat(),
    }


@router.post("", summary="Define an experiment (a draft until started)", status_code=201)
async def create_experiment(
    body: Annotated[ExperimentIn, Body()], svc: ServicesDep, who: Writer
) -> Response:
    tenant, actor = who
    return _out(await svc.experiments.create(tenant, body, actor), 201)


@router.get("", summary="List the tenant's experiments")
async def list_experiments(
    svc: ServicesDep,
    tenant: ReadTenant,
    status: Annotated[Literal["draft", "running", "stopped"] | None, Query()] = None,
) -> Response:
    found = await svc.experiments.list(tenant, status)
    return JsonResponse({"experiments": [to_json(e) for e in found]})


@router.get("/{experiment_id}", summary="An experiment with its history", responses=_ONE)
async def get_experiment(
    experiment_id: ExperimentId, svc: ServicesDep, tenant: ReadTenant
) -> Response:
    return _out(await svc.experiments.get(tenant, experiment_id))


@router.patch(
    "/{experiment_id}",
    summary="Change its name, description or guardrail (anything, while a draft)",
    responses={409: {"description": "Variants or weights of a started experiment."}},
)
async def update_experiment(
    experiment_id: ExperimentId,
    body: Annotated[ExperimentPatch, Body()],
    svc: ServicesDep,
    who: Writer,
) -> Response:
    tenant, actor = who
    return _out(await svc.experiments.update(tenant, experiment_id, body, actor))


@router.delete("/{experiment_id}", summary="Delete an experiment that is not running")
async def delete_experiment(experiment_id: ExperimentId, svc: ServicesDep, who: Writer) -> Response:
    await svc.experiments.delete(who[0], experiment_id)
    return Response(status_code=204)


@router.post("/{experiment_id}/start", summary="Start (or resume) its current run")
async def start_experiment(experiment_id: ExperimentId, svc: ServicesDep, who: Writer) -> Response:
    tenant, actor = who
    return _out(await svc.experiments.start(tenant, experiment_id, actor))


@router.post("/{experiment_id}/stop", summary="Stop it: no unit is assigned any more")
async def stop_experiment(experiment_id: ExperimentId, svc: ServicesDep, who: Writer) -> Response:
    tenant, actor = who
    return _out(await svc.experiments.stop(tenant, experiment_id, actor))


@router.post(
    "/{experiment_id}/runs",
    summary="Start a new run with new variants or weights (a new salt, results from zero)",
)
async def new_run(
    experiment_id: ExperimentId,
    body: Annotated[NewRunIn, Body()],
    svc: ServicesDep,
    who: Writer,
) -> Response:
    tenant, actor = who
    return _out(await svc.experiments.new_run(tenant, experiment_id, body, actor))


@router.get(
    "/{experiment_id}/results",
    summary="Per-variant exposures, click-through and conversion with intervals; SRM check",
)
async def experiment_results(
    experiment_id: ExperimentId, svc: ServicesDep, tenant: ReadTenant
) -> Response:
    return JsonResponse(await svc.experiments.results(tenant, experiment_id))
