from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from modelport.api.access import AdminDep
from modelport.api.deps import services
from modelport.observability.metrics import CONTENT_TYPE
from modelport.wiring import Services

router = APIRouter(tags=["operations"])


@router.get("/metrics", response_class=Response)
async def metrics(_caller: AdminDep, svc: Annotated[Services, Depends(services)]) -> Response:
    """Prometheus metrics of every tenant: the platform admin key reads them (as a scraper's
    bearer token) unless authentication is off."""
    return Response(svc.metrics.render(), media_type=CONTENT_TYPE)
