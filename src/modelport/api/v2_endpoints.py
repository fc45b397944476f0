"""Open Inference Protocol v2 over HTTP: server and model metadata, health, repository.

Inference itself is served by ``v2_infer`` (a bare ASGI handler, behind the same edge);
``api.openapi`` documents it.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Response
from pydantic import BaseModel, Field, StrictBool

from modelport import __version__
from modelport.api.access import Public, ReadTenant, WriteTenant
from modelport.api.deps import services
from modelport.api.responses import JsonResponse
from modelport.services.repository import ServedMetadata
from modelport.wiring import Services

router = APIRouter(prefix="/v2", tags=["inference"])

ServicesDep = Annotated[Services, Depends(services)]

_PLATFORMS = {"onnx": "onnxruntime_onnx", "text-embedding": "modelport_text_embedding"}


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ReadyStatus(BaseModel):
    name: str
    ready: bool


class ServerReady(BaseModel):
    ready: bool


_NOT_READY: dict[int | str, dict[str, Any]] = {
    503: {"description": "not ready", "model": ReadyStatus}
}


class RepositoryIndexRequest(BaseModel):
    ready: StrictBool = Field(default=False, description="Only list versions that are READY.")


class RepositoryIndexEntry(BaseModel):
    name: str
    version: str | None
    state: str
    reason: str


@router.get("", response_model=ServerMetadata, dependencies=[Public])
async def server_metadata(svc: ServicesDep) -> dict[str, Any]:
    return {
        "name": svc.settings.server_name,
        "version": __version__,
        "extensions": ["binary_tensor_data", "model_repository"],
    }


@router.get("/health/live", dependencies=[Public])
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get(
    "/health/ready",
    response_model=ServerReady,
    responses={503: {"description": "not ready", "model": ServerReady}},
    dependencies=[Public],
)
async def ready(svc: ServicesDep) -> Response:
    is_ready = await svc.repository.server_ready()
    return JsonResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


def _metadata(served: ServedMetadata) -> dict[str, Any]:
    record = served.record
    signature = record.signature
    return {
        "name": record.model,
        "versions": served.versions,
        "platform": _PLATFORMS.get(record.config.get("runtime", {}).get("kind", "onnx"), "onnx"),
        "inputs": signature["inputs"],
        "outputs": signature["outputs"],
    }


@router.get("/models/{model}", response_model=ModelMetadata)
async def model_metadata(model: str, tenant: ReadTenant, svc: ServicesDep) -> dict[str, Any]:
    return _metadata(await svc.repository.metadata(tenant, model))


@router.get("/models/{model}/versions/{version}", response_model=ModelMetadata)
async def version_metadata(
    model: str, version: str, tenant: ReadTenant, svc: ServicesDep
) -> dict[str, Any]:
    return _metadata(await svc.repository.metadata(tenant, model, version))


async def _ready_response(svc: Services, tenant: str, model: str, version: str | None) -> Response:
    is_ready = await svc.repository.ready(tenant, model, version)
    return JsonResponse({"name": model, "ready": is_ready}, status_code=200 if is_ready else 503)


@router.get("/models/{model}/ready", response_model=ReadyStatus, responses=_NOT_READY)
async def model_ready(model: str, tenant: ReadTenant, svc: ServicesDep) -> Response:
    return await _ready_response(svc, tenant, model, None)


@router.get(
    "/models/{model}/versions/{version}/ready", response_model=ReadyStatus, responses=_NOT_READY
)
async def version_ready(model: str, version: str, tenant: ReadTenant, svc: ServicesDep) -> Response:
    return await _ready_response(svc, tenant, model, version)


@router.post("/repository/index", response_model=list[RepositoryIndexEntry], tags=["repository"])
async def repository_index(
    tenant: ReadTenant,
    svc: ServicesDep,
    body: Annotated[RepositoryIndexRequest | None, Body()] = None,
) -> list[dict[str, Any]]:
    entries = await svc.repository.index(tenant, ready_only=bool(body and body.ready))
    return [_entry(e) for e in entries]


def _entry(e: Any) -> dict[str, Any]:
    return {"name": e.name, "version": e.version, "state": e.state, "reason": e.reason}


@router.post("/repository/models/{model}/load", tags=["repository"])
async def repository_load(model: str, tenant: WriteTenant, svc: ServicesDep) -> dict[str, Any]:
    entry = await svc.repository.load(tenant, model)
    return {"name": entry.model, "version": entry.version, "state": entry.state.value}


@router.post("/repository/models/{model}/unload", tags=["repository"])
async def repository_unload(model: str, tenant: WriteTenant, svc: ServicesDep) -> dict[str, Any]:
    versions = await svc.repository.unload(tenant, model)
    return {"name": model, "unloaded": versions}
