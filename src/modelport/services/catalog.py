"""The catalog's use cases: write, read, delete and list a tenant's products; import NDJSON.

An import answers per line. Each line is checked on its own (``services.product_input``) and
written with up to ``chunk`` others in one transaction; a bad line is reported with its number
and reason and leaves the others alone, and a good one is written whole or not at all. Two
lines with one id are written in order, the later one winning.
"""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError

from modelport.errors import InvalidInput, ProductNotFound
from modelport.services.product_input import ProductIn, ProductLine, problems
from modelport.stores.catalog import (
    CatalogStore,
    Filters,
    IfMatch,
    Product,
    ProductFields,
    Written,
)

MAX_PAGE = 1000
#: Most lines one import request may carry (its body is capped at 64 MiB too).
MAX_IMPORT_LINES = 100_000


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Product]
    next_cursor: str | None
    """Where the next page starts; None when this one reached the end."""


@dataclass(slots=True)
class ImportReport:
    counts: dict[str, int] = field(
        default_factory=lambda: {"created": 0, "updated": 0, "unchanged": 0, "failed": 0}
    )
    results: list[dict[str, Any]] = field(default_factory=list)
    """One per non-blank line: line (1-based), id, status, and version or reason."""

    def to_json(self) -> dict[str, Any]:
        return {**self.counts, "results": self.results}

    def add(self, line: int, product_id: str | None, status: str, **extra: Any) -> None:
        self.counts[status] += 1
        self.results.append({"line": line, "id": product_id, "status": status, **extra})


def fields_of(product: ProductIn) -> ProductFields:
    return ProductFields(
        title=product.title,
        description=product.description,
        brand=product.brand,
        category=tuple(product.category),
        attributes=dict(product.attributes),
        price_amount=None if product.price is None else product.price.amount,
        currency=None if product.price is None else product.price.currency,
        availability=product.availability,
        images=tuple(product.images),
    )


def encode_cursor(product: Product) -> str:
    raw = orjson.dumps([product.updated_at.isoformat(), product.id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, last_id = orjson.loads(raw)
        when = dt.datetime.fromisoformat(at)
        if not isinstance(last_id, str) or when.tzinfo is None:
            raise ValueError(cursor)
    except (ValueError, TypeError, orjson.JSONDecodeError):
        raise InvalidInput(
            "cursor is not one this API returned; pass next_cursor from the previous page "
            "unchanged, or leave it out to start from the beginning"
        ) from None
    return when, last_id


class CatalogService:
    def __init__(self, store: CatalogStore, *, chunk: int = 500) -> None:
        self._store = store
        self._chunk = chunk

    async def put(
        self, tenant: str, product_id: str, product: ProductIn, if_match: IfMatch | None = None
    ) -> Written:
        return await self._store.upsert(tenant, product_id, fields_of(product), if_match)

    async def get(self, tenant: str, product_id: str) -> Product:
        product = await self._store.get(tenant, product_id)
        if product is None or product.deleted:
            raise ProductNotFound(product_id)
        return product

    async def delete(
        self, tenant: str, product_id: str, if_match: IfMatch | None = None
    ) -> Product:
        return await self._store.delete(tenant, product_id, if_match)

    async def list(
        self, tenant: str, filters: Filters, cursor: str | None = None, limit: int = 100
    ) -> Page:
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}; got {limit}")
        if (
            filters.min_price is not None
            and filters.max_price is not None
            and filters.min_price > filters.max_price
        ):
            raise InvalidInput(
                f"min_price ({filters.min_price}) is above max_price ({filters.max_price})"
            )
        after = None if cursor is None else decode_cursor(cursor)
        items = await self._store.list(tenant, filters, after, limit + 1)
        more = len(items) > limit
        items = items[:limit]
        return Page(items, encode_cursor(items[-1]) if more else None)

    async def is_empty(self, tenant: str) -> bool:
        """Whether the tenant never wrote a product."""
        return not await self._store.list(tenant, Filters(include_deleted=True), None, 1)

    async def import_ndjson(self, tenant: str, body: bytes) -> ImportReport:
        """Upsert every valid line of ``body`` (one JSON product with its id per line)."""
        lines = body.split(b"\n")
        if len(lines) > MAX_IMPORT_LINES + 1:
            raise InvalidInput(
                f"an import takes at most {MAX_IMPORT_LINES} lines; got {len(lines)}: "
                "split the file (modelport catalog import does)"
            )
        report = ImportReport()
        chunk: dict[str, tuple[int, ProductFields]] = {}
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                line = ProductLine.model_validate_json(raw)
            except ValidationError as exc:
                report.add(number, _id_of(raw), "failed", reason=problems(exc))
                continue
            if line.id in chunk or len(chunk) >= self._chunk:
                await self._flush(tenant, chunk, report)
            chunk[line.id] = (number, fields_of(line))
        await self._flush(tenant, chunk, report)
        if not report.results:
            raise InvalidInput(
                "the body holds no product: send NDJSON, one product with its id per line"
            )
        report.results.sort(key=lambda r: int(r["line"]))
        return report

    async def _flush(
        self, tenant: str, chunk: dict[str, tuple[int, ProductFields]], report: ImportReport
    ) -> None:
        if not chunk:
            return
        items = [(pid, fields) for pid, (_, fields) in chunk.items()]
        for (pid, (number, _)), written in zip(
            chunk.items(), await self._store.upsert_many(tenant, items), strict=True
        ):
            report.add(number, pid, written.outcome, version=written.product.version)
        chunk.clear()


def _id_of(raw: bytes) -> str | None:
    """The id a bad line names, when it names one, so the report can say which product."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    found = value.get("id") if isinstance(value, dict) else None
    return found[:128] if isinstance(found, str) else None
