"""Catalog products in SQL, per tenant, each change announced through the outbox.

Every write (create, change, tombstone) bumps the product's ``version`` and enqueues one
``catalog`` message keyed ``{tenant}:{id}:{version}`` in the same transaction, so the stream
sees exactly the changes that committed. A write whose content equals the stored product's
changes nothing: no new version, no message.

Writes lock the rows they read before deciding: ``SELECT … FOR UPDATE`` on PostgreSQL; on
SQLite, whose driver starts a transaction only at the first write, a no-op ``UPDATE`` first
takes the database's write lock. A conditional write (``If-Match``) is therefore decided on
the version it replaces, whatever runs beside it.

A deleted product keeps its row as a tombstone (``deleted``), with its version moved on: reads
answer it like a missing product, listings with ``include_deleted`` show it, and writing the
id again creates the product anew with the next version (versions, ETags and message keys of
one id never repeat).
"""

from __future__ import annotations

import builtins
import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import and_, bindparam, func, insert, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.elements import ColumnElement

from modelport.errors import PreconditionFailed, ProductNotFound
from modelport.stores.outbox import CATALOG, enqueue
from modelport.stores.sql.schema import catalog_products as products
from modelport.stores.sql.timestamps import as_utc

SEPARATOR = " > "
Outcome = Literal["created", "updated", "unchanged"]


@dataclass(frozen=True, slots=True)
class ProductFields:
    """What a writer sets; the rest (version, timestamps) the store keeps."""

    title: str
    description: str
    brand: str | None
    category: tuple[str, ...]
    attributes: dict[str, Any]
    price_amount: int | None
    currency: str | None
    availability: str
    images: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Product:
    tenant: str
    id: str
    fields: ProductFields
    version: int
    deleted: bool
    created_at: dt.datetime
    updated_at: dt.datetime

    def to_json(self) -> dict[str, Any]:
        """The API's (and the outbox's) form: the product, or its tombstone."""
        if self.deleted:
            return {
                "id": self.id,
                "deleted": True,
                "version": self.version,
                "updated_at": self.updated_at.isoformat(),
            }
        f = self.fields
        return {
            "id": self.id,
            "title": f.title,
            "description": f.description,
            "brand": f.brand,
            "category": list(f.category),
            "attributes": f.attributes,
            "price": None
            if f.price_amount is None
            else {"amount": f.price_amount, "currency": f.currency},
            "availability": f.availability,
            "images": list(f.images),
            "version": self.version,
            "deleted": False,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class IfMatch:
    """An ``If-Match`` precondition: the current version must be one of ``versions``, or
    (``any``, from ``*``) the product must exist. With ``negate`` it is ``If-None-Match``: the
    product must not exist (``*``) or not be at one of ``versions``."""

    versions: frozenset[int] = frozenset()
    any: bool = False
    negate: bool = False

    def allows(self, current: Product | None) -> bool:
        matches = (
            current is not None
            and not current.deleted
            and (self.any or current.version in self.versions)
        )
        return matches != self.negate


@dataclass(frozen=True, slots=True)
class Written:
    product: Product
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class Filters:
    category: tuple[str, ...] = ()
    """A category path prefix, by whole levels."""
    brand: str | None = None
    min_price: int | None = None
    max_price: int | None = None
    currency: str | None = None
    availability: tuple[str, ...] = ()
    updated_since: dt.datetime | None = None
    include_deleted: bool = False


class _Raced(Exception):
    """A product was created by another transaction between our read and our insert."""


#: PostgreSQL: the table's statistics are refreshed once this many rows (and at least as many
#: as it held at the last refresh) were added through this store.
ANALYZE_AFTER_ROWS = 5000


class CatalogStore:
    def __init__(self, engine: AsyncEngine, on_commit: Callable[[], None] | None = None) -> None:
        """``on_commit``: called after each transaction that announced a change (the relay's
        nudge, so the change reaches the stream, and the search index, at once)."""
        self._engine = engine
        self.on_commit = on_commit
        self._sqlite = engine.dialect.name == "sqlite"
        self._added = 0
        self._analyzed_size = 0

    async def get(self, tenant: str, product_id: str) -> Product | None:
        """The product or its tombstone; None if the id was never written."""
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(products).where(products.c.tenant == tenant, products.c.id == product_id)
                )
            ).first()
        return None if row is None else _product(row)

    async def upsert(
        self, tenant: str, product_id: str, fields: ProductFields, if_match: IfMatch | None = None
    ) -> Written:
        for _ in range(5):
            try:
                async with self._engine.begin() as conn:
                    current = (await self._lock(conn, tenant, [product_id])).get(product_id)
                    if if_match is not None and not if_match.allows(current):
                        raise PreconditionFailed(_stale(product_id, current, if_match))
                    [written] = await self._write(
                        conn, tenant, [(product_id, fields)], current_of={product_id: current}
                    )
                self._committed([written])
                return written
            except _Raced:
                continue
        raise PreconditionFailed(f"product '{product_id}' keeps changing; retry the write")

    async def upsert_many(
        self, tenant: str, items: Sequence[tuple[str, ProductFields]]
    ) -> builtins.list[Written]:
        """Several products (distinct ids) in one transaction; falls back to one transaction
        per product when another writer created one of them meanwhile."""
        try:
            async with self._engine.begin() as conn:
                current = await self._lock(conn, tenant, [pid for pid, _ in items])
                written = await self._write(conn, tenant, items, current_of=current)
        except _Raced:
            return [await self.upsert(tenant, pid, fields) for pid, fields in items]
        self._committed(written)
        await self._analyze_when_grown(sum(current[w.product.id] is None for w in written))
        return written

    def _committed(self, written: Sequence[Written]) -> None:
        if self.on_commit is not None and any(w.outcome != "unchanged" for w in written):
            self.on_commit()

    async def _analyze_when_grown(self, added: int) -> None:
        """A bulk load from empty outgrows PostgreSQL's statistics long before autovacuum
        refreshes them; planned on "a few rows", the locking read above scans the tenant's
        every product for each chunk, which makes an import quadratic. Refreshing them as the
        table doubles keeps it on the primary key."""
        if self._sqlite or not added:
            return
        self._added += added
        if self._added >= max(ANALYZE_AFTER_ROWS, self._analyzed_size):
            self._analyzed_size += self._added
            self._added = 0
            async with self._engine.begin() as conn:
                await conn.execute(text("ANALYZE catalog_products"))

    async def delete(
        self, tenant: str, product_id: str, if_match: IfMatch | None = None
    ) -> Product:
        """Leave a tombstone; ``ProductNotFound`` if there is no product to delete."""
        async with self._engine.begin() as conn:
            current = (await self._lock(conn, tenant, [product_id])).get(product_id)
            if current is None or current.deleted:
                raise ProductNotFound(product_id)
            if if_match is not None and not if_match.allows(current):
                raise PreconditionFailed(_stale(product_id, current, if_match))
            now = dt.datetime.now(dt.UTC)
            version = current.version + 1
            await conn.execute(
                update(products)
                .where(products.c.tenant == tenant, products.c.id == product_id)
                .values(deleted=True, version=version, updated_at=now)
            )
            tombstone = Product(
                tenant, product_id, current.fields, version, True, current.created_at, now
            )
            await enqueue(conn, tenant, CATALOG, [(_message_key(tombstone), tombstone.to_json())])
        if self.on_commit is not None:
            self.on_commit()
        return tombstone

    async def list(
        self,
        tenant: str,
        filters: Filters,
        after: tuple[dt.datetime, str] | None,
        limit: int,
    ) -> builtins.list[Product]:
        """Products in (updated_at, id) order, strictly after ``after``."""
        where: list[ColumnElement[bool]] = [products.c.tenant == tenant]
        if after is not None:
            at, last_id = after
            where.append(
                or_(
                    products.c.updated_at > at,
                    and_(products.c.updated_at == at, products.c.id > last_id),
                )
            )
        where += _filters(filters)
        query = (
            select(products)
            .where(*where)
            .order_by(products.c.updated_at, products.c.id)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_product(r) for r in rows]

    async def get_many(self, tenant: str, ids: Sequence[str]) -> dict[str, Product]:
        """The live products among ``ids`` (missing ones and tombstones left out)."""
        if not ids:
            return {}
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(products).where(
                    products.c.tenant == tenant,
                    products.c.id.in_(list(ids)),
                    products.c.deleted.is_(False),
                )
            )
            return {row.id: _product(row) for row in rows}

    async def scan_live(self, after: tuple[str, str] | None, limit: int) -> builtins.list[Product]:
        """Every tenant's live products in (tenant, id) order, strictly after ``after``: what
        a search index is built from when it has no snapshot."""
        query = select(products).where(products.c.deleted.is_(False))
        if after is not None:
            tenant, last_id = after
            query = query.where(
                or_(
                    products.c.tenant > tenant,
                    and_(products.c.tenant == tenant, products.c.id > last_id),
                )
            )
        query = query.order_by(products.c.tenant, products.c.id).limit(limit)
        async with self._engine.connect() as conn:
            return [_product(row) for row in await conn.execute(query)]

    # ------------------------------------------------------------------ internals

    async def _lock(
        self, conn: AsyncConnection, tenant: str, ids: Sequence[str]
    ) -> dict[str, Product | None]:
        query = select(products).where(products.c.tenant == tenant, products.c.id.in_(ids))
        if self._sqlite:
            # A write, even of nothing, starts the transaction and takes SQLite's write lock.
            await conn.execute(
                update(products)
                .where(products.c.tenant == tenant, products.c.id.in_(ids), products.c.version < 0)
                .values(version=products.c.version)
            )
        else:
            # In id order, so that two writers of overlapping products never deadlock.
            query = query.order_by(products.c.id).with_for_update()
        found: dict[str, Product | None] = dict.fromkeys(ids)
        for row in await conn.execute(query):
            found[row.id] = _product(row)
        return found

    async def _write(
        self,
        conn: AsyncConnection,
        tenant: str,
        items: Sequence[tuple[str, ProductFields]],
        *,
        current_of: dict[str, Product | None],
    ) -> builtins.list[Written]:
        now = dt.datetime.now(dt.UTC)
        written: list[Written] = []
        inserts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        for pid, fields in items:
            current = current_of.get(pid)
            if current is not None and not current.deleted and current.fields == fields:
                written.append(Written(current, "unchanged"))
                continue
            if current is None:
                product = Product(tenant, pid, fields, 1, False, now, now)
                inserts.append(_row(product))
                written.append(Written(product, "created"))
            else:
                # A tombstone written again is a new product, its versions going on.
                product = Product(
                    tenant,
                    pid,
                    fields,
                    current.version + 1,
                    False,
                    now if current.deleted else current.created_at,
                    now,
                )
                updates.append({"b_" + k: v for k, v in _row(product).items()})
                written.append(Written(product, "created" if current.deleted else "updated"))
        if inserts:
            try:
                # A savepoint: PostgreSQL aborts the whole transaction on a failed insert.
                async with conn.begin_nested():
                    await conn.execute(insert(products), inserts)
            except IntegrityError:
                raise _Raced from None
        if updates:
            await conn.execute(_UPDATE, updates)
        changed = [w.product for w in written if w.outcome != "unchanged"]
        await enqueue(conn, tenant, CATALOG, [(_message_key(p), p.to_json()) for p in changed])
        return written


def _message_key(product: Product) -> str:
    return f"{product.tenant}:{product.id}:{product.version}"


def _stale(product_id: str, current: Product | None, condition: IfMatch) -> str:
    if condition.negate:
        assert current is not None  # noqa: S101 - If-None-Match fails only on an existing product
        return (
            f"product '{product_id}' exists at version {current.version} (ETag "
            f'"{current.version}"), which If-None-Match excludes; drop If-None-Match to '
            "replace it"
        )
    if current is None or current.deleted:
        return (
            f"product '{product_id}' does not exist, so If-Match cannot match; "
            "drop If-Match to create it"
        )
    return (
        f"product '{product_id}' is at version {current.version} (ETag \"{current.version}\"), "
        "not the one If-Match names; read it again and retry with its ETag"
    )


def _row(p: Product) -> dict[str, Any]:
    f = p.fields
    return {
        "tenant": p.tenant,
        "id": p.id,
        "title": f.title,
        "description": f.description,
        "brand": f.brand,
        "category": SEPARATOR.join(f.category),
        "attributes": f.attributes,
        "price_amount": f.price_amount,
        "currency": f.currency,
        "availability": f.availability,
        "images": list(f.images),
        "version": p.version,
        "deleted": p.deleted,
        "created_at": p.created_at,
        "updated_at": p.updated_at,
    }


def _update_statement() -> Any:
    """One UPDATE for many products: its parameters are ``_row``'s, each prefixed ``b_``."""
    return (
        update(products)
        .where(products.c.tenant == bindparam("b_tenant"), products.c.id == bindparam("b_id"))
        .values(
            {
                c.name: bindparam("b_" + c.name)
                for c in products.columns
                if c.name not in ("tenant", "id")
            }
        )
    )


_UPDATE = _update_statement()


def _product(row: Any) -> Product:
    return Product(
        tenant=row.tenant,
        id=row.id,
        fields=ProductFields(
            title=row.title,
            description=row.description,
            brand=row.brand,
            category=tuple(row.category.split(SEPARATOR)) if row.category else (),
            attributes=row.attributes,
            price_amount=row.price_amount,
            currency=row.currency,
            availability=row.availability,
            images=tuple(row.images),
        ),
        version=row.version,
        deleted=row.deleted,
        created_at=as_utc(row.created_at),
        updated_at=as_utc(row.updated_at),
    )


def _filters(f: Filters) -> builtins.list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if not f.include_deleted:
        where.append(products.c.deleted.is_(False))
    if f.category:
        # Whole levels: "Home" matches "Home" and "Home > Kitchen", not "Homeware". Compared
        # with substr rather than LIKE, which SQLite treats as case-insensitive.
        path = SEPARATOR.join(f.category)
        below = path + SEPARATOR
        where.append(
            or_(
                products.c.category == path,
                func.substr(products.c.category, 1, len(below)) == below,
            )
        )
    if f.brand is not None:
        where.append(products.c.brand == f.brand)
    if f.currency is not None:
        where.append(products.c.currency == f.currency)
    if f.min_price is not None:
        where.append(products.c.price_amount >= f.min_price)
    if f.max_price is not None:
        where.append(products.c.price_amount <= f.max_price)
    if f.availability:
        where.append(products.c.availability.in_(f.availability))
    if f.updated_since is not None:
        where.append(products.c.updated_at >= f.updated_since)
    return where
