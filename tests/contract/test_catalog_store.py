"""The catalog store against SQLite and a real PostgreSQL: versions, the outbox message of
every change, tombstones, If-Match, listing order and filters, bulk writes."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from modelport.errors import PreconditionFailed, ProductNotFound
from modelport.stores.catalog import CatalogStore, Filters, IfMatch, ProductFields
from modelport.stores.outbox import CATALOG
from modelport.stores.sql import create_engine
from modelport.stores.sql.schema import outbox

KNIFE = ProductFields(
    title="Chef's knife 20 cm",
    description="Forged steel.",
    brand="Hoffmann",
    category=("Home", "Kitchen", "Knives"),
    attributes={"blade_cm": 20, "dishwasher_safe": False, "colors": ["black"]},
    price_amount=4999,
    currency="EUR",
    availability="in_stock",
    images=("https://img.example/knife.jpg",),
)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def store(engine: AsyncEngine) -> CatalogStore:
    return CatalogStore(engine)


@pytest.fixture
def tenant() -> str:
    return f"t{secrets.token_hex(4)}"


async def messages(engine: AsyncEngine, tenant: str) -> list[tuple[str, dict[str, object]]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(outbox.c.key, outbox.c.payload)
            .where(outbox.c.tenant == tenant, outbox.c.topic == CATALOG)
            .order_by(outbox.c.id)
        )
        return [(r.key, r.payload) for r in rows]


async def test_every_change_has_a_new_version_and_one_outbox_message(
    store: CatalogStore, engine: AsyncEngine, tenant: str
) -> None:
    created = await store.upsert(tenant, "sku-1", KNIFE)
    assert (created.outcome, created.product.version) == ("created", 1)
    same = await store.upsert(tenant, "sku-1", KNIFE)
    assert (same.outcome, same.product.version) == ("unchanged", 1)
    cheaper = await store.upsert(tenant, "sku-1", replace(KNIFE, price_amount=3999))
    assert (cheaper.outcome, cheaper.product.version) == ("updated", 2)
    assert cheaper.product.created_at == created.product.created_at
    assert cheaper.product.updated_at > created.product.updated_at

    tombstone = await store.delete(tenant, "sku-1")
    assert tombstone.deleted and tombstone.version == 3
    sent = await messages(engine, tenant)
    assert [k for k, _ in sent] == [f"{tenant}:sku-1:1", f"{tenant}:sku-1:2", f"{tenant}:sku-1:3"]
    assert sent[1][1]["price"] == {"amount": 3999, "currency": "EUR"}
    assert sent[2][1] == {
        "id": "sku-1",
        "deleted": True,
        "version": 3,
        "updated_at": tombstone.updated_at.isoformat(),
    }

    # Deleted: a second delete finds nothing; writing the id again creates it, versions go on.
    with pytest.raises(ProductNotFound):
        await store.delete(tenant, "sku-1")
    again = await store.upsert(tenant, "sku-1", KNIFE)
    assert (again.outcome, again.product.version, again.product.deleted) == ("created", 4, False)


async def test_if_match_writes_only_over_the_version_it_names(
    store: CatalogStore, engine: AsyncEngine, tenant: str
) -> None:
    with pytest.raises(PreconditionFailed, match="does not exist"):
        await store.upsert(tenant, "sku-1", KNIFE, IfMatch(any=True))
    await store.upsert(tenant, "sku-1", KNIFE)
    await store.upsert(tenant, "sku-1", replace(KNIFE, title="v2"), IfMatch(frozenset({1})))
    with pytest.raises(PreconditionFailed, match="at version 2"):
        await store.upsert(tenant, "sku-1", replace(KNIFE, title="v3"), IfMatch(frozenset({1})))
    with pytest.raises(PreconditionFailed):
        await store.delete(tenant, "sku-1", IfMatch(frozenset({1})))
    current = await store.get(tenant, "sku-1")
    assert current is not None and (current.fields.title, current.version) == ("v2", 2)
    assert len(await messages(engine, tenant)) == 2


async def test_concurrent_conditional_writes_of_one_version_let_one_through(
    store: CatalogStore, engine: AsyncEngine, tenant: str
) -> None:
    await store.upsert(tenant, "sku-1", KNIFE)
    results = await asyncio.gather(
        *(
            store.upsert(tenant, "sku-1", replace(KNIFE, title=f"t{i}"), IfMatch(frozenset({1})))
            for i in range(6)
        ),
        return_exceptions=True,
    )
    won = [r for r in results if not isinstance(r, BaseException)]
    assert len(won) == 1, results
    assert all(isinstance(r, PreconditionFailed) for r in results if r not in won)
    assert len(await messages(engine, tenant)) == 2


async def test_listing_pages_in_update_order_and_filters(store: CatalogStore, tenant: str) -> None:
    await store.upsert(tenant, "a", KNIFE)
    await store.upsert(tenant, "b", replace(KNIFE, category=("Home", "Kitchenware"), brand="Zen"))
    await store.upsert(tenant, "c", replace(KNIFE, category=("Home",), price_amount=100))
    await store.upsert(tenant, "d", replace(KNIFE, availability="preorder", price_amount=None))
    await store.delete(tenant, "d")

    async def ids(filters: Filters, limit: int = 100) -> list[str]:
        found, after = [], None
        while True:
            page = await store.list(tenant, filters, after, limit)
            found += [p.id for p in page]
            if len(page) < limit:
                return found
            after = (page[-1].updated_at, page[-1].id)

    assert await ids(Filters(), limit=1) == ["a", "b", "c"]
    assert await ids(Filters(include_deleted=True), limit=2) == ["a", "b", "c", "d"]
    assert await ids(Filters(category=("Home", "Kitchen"))) == ["a"]
    assert await ids(Filters(category=("Home",))) == ["a", "b", "c"]
    assert await ids(Filters(category=("home",))) == []
    assert await ids(Filters(brand="Zen")) == ["b"]
    assert await ids(Filters(min_price=101, max_price=5000)) == ["a", "b"]
    assert await ids(Filters(max_price=100, currency="EUR")) == ["c"]
    assert await ids(Filters(availability=("preorder",), include_deleted=True)) == ["d"]
    second = (await store.list(tenant, Filters(), None, 2))[1]
    assert await ids(Filters(updated_since=second.updated_at)) == ["b", "c"]
    assert await store.list(tenant + "x", Filters(), None, 10) == []


async def test_a_bulk_write_creates_updates_and_keeps_in_one_transaction(
    store: CatalogStore, engine: AsyncEngine, tenant: str
) -> None:
    await store.upsert(tenant, "kept", KNIFE)
    await store.upsert(tenant, "changed", KNIFE)
    written = await store.upsert_many(
        tenant,
        [
            ("kept", KNIFE),
            ("changed", replace(KNIFE, title="new title")),
            ("new", replace(KNIFE, attributes={})),
        ],
    )
    assert [(w.product.id, w.outcome, w.product.version) for w in written] == [
        ("kept", "unchanged", 1),
        ("changed", "updated", 2),
        ("new", "created", 1),
    ]
    new = await store.get(tenant, "new")
    assert new is not None and new.fields == replace(KNIFE, attributes={})
    assert [k for k, _ in await messages(engine, tenant)][-2:] == [
        f"{tenant}:changed:2",
        f"{tenant}:new:1",
    ]


async def test_search_reads_live_products_by_id_and_scans_every_tenant_in_key_order(
    engine: AsyncEngine, tenant: str
) -> None:
    nudges: list[int] = []
    store = CatalogStore(engine, on_commit=lambda: nudges.append(1))
    other = f"{tenant}-other"
    await store.upsert(tenant, "b", KNIFE)
    await store.upsert(tenant, "a", KNIFE)
    await store.upsert(tenant, "a", KNIFE)  # unchanged: nothing to announce
    await store.upsert(other, "a", replace(KNIFE, title="theirs"))
    await store.delete(tenant, "b")

    assert len(nudges) == 4
    assert set(await store.get_many(tenant, ["a", "b", "zz"])) == {"a"}  # b is a tombstone
    assert (await store.get_many(other, ["a"]))["a"].fields.title == "theirs"
    scanned: list[tuple[str, str]] = []
    after = (tenant, "")
    while page := await store.scan_live(after, 1):
        scanned += [(p.tenant, p.id) for p in page]
        after = (page[-1].tenant, page[-1].id)
        if page[-1].tenant > other:
            break
    assert [s for s in scanned if s[0] in (tenant, other)] == [(tenant, "a"), (other, "a")]
