from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from modelport.api.deps import services
from modelport.container import Services
from modelport.observability.metrics import CONTENT_TYPE

router = APIRouter(tags=["operations"])


@router.get("/metrics", response_class=Response)
async def metrics(svc: Annotated[Services, Depends(services)]) -> Response:
    return Response(svc.metrics.render(), media_type=CONTENT_TYPE)
