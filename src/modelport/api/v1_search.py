"""API of search: ``POST /v1/search`` (the ``read`` scope).

The body is checked by pydantic (shape, types, bounds: 400 with the field named) and by the
search service (rules across fields). The answer names the request id the edge assigned, so
events (click, purchase) can refer to the search they came from.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from modelport.api.access import ReadTenant
from modelport.api.deps import RequestId, services
from modelport.api.responses import JsonResponse
from modelport.errors import NotFound
from modelport.services.product_input import MAX_AMOUNT, Availability
from modelport.services.search import (
    MAX_K,
    MAX_OFFSET,
    MAX_QUERY_CHARS,
    SearchAnswer,
    SearchHit,
    SearchRequest,
)
from modelport.stores.search_filter import SearchFilter
from modelport.wiring import Services

router = APIRouter(prefix="/v1/search", tags=["search"])
ServicesDep = Annotated[Services, Depends(services)]

AttributeValue = Annotated[str, Field(max_length=256)] | int | float | bool


class FiltersIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    category: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        default_factory=list,
        max_length=16,
        description='A category path prefix, whole levels: ["Home"] matches Home > Kitchen.',
    )
    brands: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        default_factory=list, max_length=100, description="Any of these brands."
    )
    min_price: int | None = Field(
        default=None, ge=0, le=MAX_AMOUNT, description="In minor units (cents)."
    )
    max_price: int | None = Field(default=None, ge=0, le=MAX_AMOUNT)
    availability: list[Availability] = Field(default_factory=list, max_length=8)
    attributes: dict[Annotated[str, Field(min_length=1, max_length=128)], AttributeValue] = Field(
        default_factory=dict,
        max_length=32,
        description="Each attribute must equal the value (or, for a list, contain it).",
    )

    def to_filter(self) -> SearchFilter:
        return SearchFilter(
            category=tuple(self.category),
            brands=tuple(self.brands),
            min_price=self.min_price,
            max_price=self.max_price,
            availability=tuple(self.availability),
            attributes=tuple(self.attributes.items()),
        )


class SearchIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    mode: Literal["hybrid", "semantic", "lexical"] = "hybrid"
    filters: FiltersIn = Field(default_factory=FiltersIn)
    facets: list[str] = Field(
        default_factory=list,
        max_length=16,
        description="Facet counts to return: brand, category, availability, attributes.NAME.",
    )
    k: int = Field(default=10, ge=1, le=MAX_K, description="Hits per page.")
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET, description="Hits to skip (paging).")
    rrf_k: float | None = Field(
        default=None, gt=0, le=100_000, description="The RRF constant (hybrid; default 60)."
    )
    rerank: bool | None = Field(
        default=None,
        description="Re-score with the tenant's rerank model (default: when it declares one).",
    )
    include_products: bool = Field(default=True, description="Each hit carries its product.")


@router.post("", summary="Search the tenant's catalog (hybrid, semantic or lexical)")
async def search(
    body: Annotated[SearchIn, Body()],
    svc: ServicesDep,
    tenant: ReadTenant,
    request_id: RequestId,
) -> Response:
    request = SearchRequest(
        query=body.query,
        mode=body.mode,
        where=body.filters.to_filter(),
        facets=tuple(body.facets),
        k=body.k,
        offset=body.offset,
        rrf_k=body.rrf_k,
        rerank=body.rerank,
        include_products=body.include_products,
    )
    if svc.search is None:
        raise NotFound("search is off on this server (MODELPORT_SEARCH_INDEX=false)")
    answer = await svc.search.search(tenant, request, request_id)
    return JsonResponse(to_json(answer))


def to_json(answer: SearchAnswer) -> dict[str, Any]:
    return {
        "request_id": answer.request_id,
        "mode": answer.mode,
        "hits": [_hit(h) for h in answer.hits],
        "facets": answer.facets,
        "candidates": answer.candidates,
        "rrf_k": answer.rrf_k,
        "timings_ms": answer.timings_ms,
        "warnings": answer.warnings,
    }


def _hit(hit: SearchHit) -> dict[str, Any]:
    return {
        "id": hit.id,
        "score": hit.score,
        "semantic": None
        if hit.semantic is None
        else {"rank": hit.semantic.rank, "score": hit.semantic.score},
        "lexical": None
        if hit.lexical is None
        else {"rank": hit.lexical.rank, "score": hit.lexical.score},
        "rerank": hit.rerank,
        "product": hit.product,
    }
