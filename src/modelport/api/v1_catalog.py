"""API of the catalog: a tenant's products, written one by one or imported as NDJSON.

Reads need the ``read`` scope, writes ``write``; another tenant's product answers like a
missing one (404). A product's ``ETag`` is its version (``"3"``): ``If-None-Match`` on a read
answers 304 while it is current, ``If-Match`` on a write answers 412 unless it still is.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from pydantic import BaseModel
from starlette.responses import Response

from modelport.api.access import ReadTenant, WriteImportTenant, WriteTenant
from modelport.api.deps import services
from modelport.api.idempotency import (
    IDEMPOTENCY_RESPONSES,
    IdempotencyKey,
    answer_once,
    request_hash,
)
from modelport.api.responses import JsonResponse
from modelport.errors import InvalidInput
from modelport.services.catalog import MAX_IMPORT_LINES, MAX_PAGE
from modelport.services.product_input import (
    MAX_AMOUNT,
    SKU_HELP,
    SKU_PATTERN,
    Availability,
    PriceIn,
    ProductIn,
    check_sku,
    parse_product,
)
from modelport.stores.catalog import Filters, IfMatch, Product
from modelport.wiring import Services

router = APIRouter(prefix="/v1/catalog", tags=["catalog"])
ServicesDep = Annotated[Services, Depends(services)]

ProductId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=128,
        description=f"The product's id (SKU): {SKU_HELP}.",
        # In the schema only: the route checks it itself, with a message that says the rule.
        json_schema_extra={"pattern": f"^{SKU_PATTERN}$"},
    ),
]
IfMatchHeader = Annotated[
    str | None,
    Header(
        alias="If-Match",
        description='Write only if the product is at this ETag (e.g. "3"), or exists ("*").',
    ),
]
IfNoneMatchHeader = Annotated[
    str | None,
    Header(alias="If-None-Match", description="304 while the product is at this ETag."),
]
_ETAG = re.compile(r'^(W/)?"([^"]*)"$')
_LIST_PARAMETERS = frozenset(
    {
        "cursor",
        "limit",
        "category",
        "brand",
        "min_price",
        "max_price",
        "currency",
        "availability",
        "updated_since",
        "include_deleted",
    }
)


class ProductOut(BaseModel):
    id: str
    title: str
    description: str
    brand: str | None
    category: list[str]
    attributes: dict[str, Any]
    price: PriceIn | None
    availability: Availability
    images: list[str]
    version: int
    deleted: bool
    created_at: dt.datetime
    updated_at: dt.datetime


class TombstoneOut(BaseModel):
    id: str
    deleted: bool
    version: int
    updated_at: dt.datetime


class PageOut(BaseModel):
    items: list[ProductOut | TombstoneOut]
    next_cursor: str | None


class LineOut(BaseModel):
    line: int
    id: str | None
    status: str
    """created, updated, unchanged or failed."""
    version: int | None = None
    reason: str | None = None


class ImportOut(BaseModel):
    created: int
    updated: int
    unchanged: int
    failed: int
    results: list[LineOut]


def _product_schema() -> dict[str, Any]:
    schema = ProductIn.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)  # PriceIn is a component already (ProductOut uses it)
    return schema


@router.put(
    "/products/{product_id}",
    summary="Create or replace a product",
    response_model=ProductOut,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _product_schema()}},
        }
    },
    responses={
        201: {"description": "Created.", "model": ProductOut},
        412: {
            "description": "If-Match does not name the product's current ETag, or "
            "If-None-Match names it (or is * and the product exists)."
        },
    },
)
async def put_product(
    product_id: ProductId,
    request: Request,
    svc: ServicesDep,
    tenant: WriteTenant,
    if_match: IfMatchHeader = None,
    if_none_match: Annotated[
        str | None,
        Header(
            alias="If-None-Match",
            description='Write only if the product does not exist ("*"), or is not at this ETag.',
        ),
    ] = None,
) -> Response:
    # Checked here rather than by FastAPI, so that PUT and import say the same about a product.
    product = parse_product(await request.body())
    condition = _if_match(if_match)
    if condition is None and if_none_match is not None and if_none_match.strip():
        condition = replace(_if_match(if_none_match) or IfMatch(), negate=True)
    written = await svc.catalog.put(tenant, _sku(product_id), product, condition)
    response = _product(written.product, 201 if written.outcome == "created" else 200)
    if written.outcome == "created":
        response.headers["Location"] = f"/v1/catalog/products/{product_id}"
    return response


@router.get(
    "/products/{product_id}",
    summary="Read a product",
    response_model=ProductOut,
    responses={304: {"description": "If-None-Match names the current ETag."}},
)
async def get_product(
    product_id: ProductId,
    svc: ServicesDep,
    tenant: ReadTenant,
    if_none_match: IfNoneMatchHeader = None,
) -> Response:
    product = await svc.catalog.get(tenant, _sku(product_id))
    if if_none_match is not None and _none_match(if_none_match, product.version):
        return Response(status_code=304, headers={"ETag": _etag(product)})
    return _product(product)


@router.delete(
    "/products/{product_id}",
    summary="Delete a product (a tombstone stays, for listings with include_deleted)",
    response_model=TombstoneOut,
    responses={412: {"description": "If-Match does not name the product's current ETag."}},
)
async def delete_product(
    product_id: ProductId, svc: ServicesDep, tenant: WriteTenant, if_match: IfMatchHeader = None
) -> Response:
    return _product(await svc.catalog.delete(tenant, _sku(product_id), _if_match(if_match)))


@router.get(
    "/products",
    summary="List products, least recently changed first, a page at a time",
    response_model=PageOut,
)
async def list_products(
    request: Request,
    svc: ServicesDep,
    tenant: ReadTenant,
    cursor: Annotated[
        str | None, Query(max_length=1024, description="next_cursor of the previous page.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    category: Annotated[
        str | None,
        Query(
            max_length=1024,
            description='A category path prefix by whole levels: "Home > Kitchen" lists '
            '"Home > Kitchen" and everything below it.',
        ),
    ] = None,
    brand: Annotated[str | None, Query(max_length=256)] = None,
    min_price: Annotated[
        int | None, Query(ge=0, le=MAX_AMOUNT, description="In minor units.")
    ] = None,
    max_price: Annotated[
        int | None, Query(ge=0, le=MAX_AMOUNT, description="In minor units.")
    ] = None,
    currency: Annotated[str | None, Query(pattern=r"^[A-Z]{3}$")] = None,
    availability: Annotated[
        list[Availability] | None, Query(description="Any of these (repeat the parameter).")
    ] = None,
    updated_since: Annotated[
        str | None,
        Query(
            max_length=64,
            description="Only products changed at or after this time (ISO-8601; UTC if it "
            "names no offset).",
            json_schema_extra={"format": "date-time"},
        ),
    ] = None,
    include_deleted: Annotated[
        bool, Query(description="Include tombstones of deleted products (for sync).")
    ] = False,
) -> JsonResponse:
    unknown = sorted(set(request.query_params) - _LIST_PARAMETERS)
    if unknown:
        # A misspelt filter would otherwise list everything, silently.
        raise InvalidInput(
            f"unknown query parameter {unknown[0]!r}; the filters are "
            + ", ".join(sorted(_LIST_PARAMETERS))
        )
    levels = tuple(level.strip() for level in category.split(">")) if category else ()
    if any(not level for level in levels):
        raise InvalidInput(f"category {category!r} has an empty level; e.g. Home > Kitchen")
    since = None if updated_since is None else _time(updated_since)
    filters = Filters(
        category=levels,
        brand=brand,
        min_price=min_price,
        max_price=max_price,
        currency=currency,
        availability=tuple(availability or ()),
        updated_since=since,
        include_deleted=include_deleted,
    )
    page = await svc.catalog.list(tenant, filters, cursor, limit)
    return JsonResponse(
        {"items": [p.to_json() for p in page.items], "next_cursor": page.next_cursor}
    )


@router.post(
    "/import",
    summary=f"Create or replace products from NDJSON (one product with its id per line, at "
    f"most {MAX_IMPORT_LINES} lines); answers per line",
    response_model=ImportOut,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/x-ndjson": {
                    "schema": {"type": "string", "description": "One JSON product per line."}
                }
            },
        }
    },
    responses=dict(IDEMPOTENCY_RESPONSES),
)
async def import_products(
    request: Request,
    svc: ServicesDep,
    tenant: WriteImportTenant,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    body = await request.body()

    async def run() -> Response:
        report = await svc.catalog.import_ndjson(tenant, body)
        return JsonResponse(report.to_json())

    return await answer_once(
        svc.idempotency, tenant, idempotency_key, request_hash(request, body), run
    )


# ---------------------------------------------------------------------- helpers


def _sku(product_id: str) -> str:
    try:
        return check_sku(product_id)
    except ValueError as exc:  # PydanticCustomError is a ValueError
        raise InvalidInput(f"product_id: {exc}") from None


def _time(raw: str) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidInput(
            f"updated_since: an ISO-8601 time such as 2026-12-01T00:00:00Z; got {raw!r}"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _etag(product: Product) -> str:
    return f'"{product.version}"'


def _product(product: Product, status: int = 200) -> JsonResponse:
    return JsonResponse(product.to_json(), status_code=status, headers={"ETag": _etag(product)})


def _tags(header: str) -> list[tuple[bool, str]]:
    """(weak, opaque tag) of each entity tag in a list header; ``*`` as (False, "*")."""
    tags = []
    for part in header.split(","):
        part = part.strip()
        if part == "*":
            tags.append((False, "*"))
        elif match := _ETAG.match(part):
            tags.append((match.group(1) is not None, match.group(2)))
    return tags


def _if_match(header: str | None) -> IfMatch | None:
    """If-Match compares strongly: a weak tag never matches."""
    if header is None or not header.strip():
        return None  # an empty header names no precondition
    tags = _tags(header)
    versions = frozenset(int(t) for weak, t in tags if not weak and t.isdigit() and len(t) < 10)
    return IfMatch(versions, any=any(t == "*" for _, t in tags))


def _none_match(header: str, version: int) -> bool:
    """If-None-Match compares weakly."""
    return any(t in ("*", str(version)) for _, t in _tags(header))
