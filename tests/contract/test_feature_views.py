"""The feature view store contract, run against SQLite and a real PostgreSQL: versions,
idempotent re-apply, tenant scoping and validation of definitions."""

from __future__ import annotations

import asyncio
import math
import secrets
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from modelport.errors import FeatureViewNotFound, InvalidInput
from modelport.stores.features import FeatureViewStore
from modelport.stores.online import FeatureSpec
from modelport.stores.sql import create_engine

FEATURES = (
    FeatureSpec("clicks", "int", 0),
    FeatureSpec("ctr", "float", 0.0),
    FeatureSpec("active", "bool", None),
    FeatureSpec("segment", "string", "none"),
)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[FeatureViewStore]:
    engine = create_engine(database_url)
    try:
        yield FeatureViewStore(engine)
    finally:
        await engine.dispose()


@pytest.fixture
def tenant() -> str:
    return f"t{secrets.token_hex(4)}"


async def test_first_apply_creates_version_1(store: FeatureViewStore, tenant: str) -> None:
    applied = await store.apply(tenant, "user_stats", "user", FEATURES, 3600, "alice")
    assert applied.created
    view = applied.view
    assert (view.tenant, view.name, view.version, view.entity) == (tenant, "user_stats", 1, "user")
    assert view.features == FEATURES and view.ttl_s == 3600.0
    assert await store.get(tenant, "user_stats") == view
    assert await store.get(tenant, "user_stats", 1) == view


async def test_reapplying_the_same_definition_keeps_the_version(
    store: FeatureViewStore, tenant: str
) -> None:
    await store.apply(tenant, "user_stats", "user", FEATURES, 3600, "alice")
    # Same definition, written differently: an int default of a float feature, an int TTL.
    same = [replace(f, default=0) if f.name == "ctr" else f for f in FEATURES]
    again = await store.apply(tenant, "user_stats", "user", same, 3600.0, "bob")
    assert not again.created
    assert again.view.version == 1
    assert again.view.features[1].default == 0.0 and isinstance(
        again.view.features[1].default, float
    )


@pytest.mark.parametrize(
    "change",
    [
        {"ttl_s": 60.0},
        {"entity": "account"},
        {"features": (*FEATURES, FeatureSpec("score", "float", None))},
        {"features": FEATURES[:3]},
        {"features": (FEATURES[1], FEATURES[0], *FEATURES[2:])},
        {"features": (replace(FEATURES[0], dtype="float", default=0.0), *FEATURES[1:])},
        {"features": (replace(FEATURES[0], default=5), *FEATURES[1:])},
    ],
    ids=["ttl", "entity", "added", "removed", "reordered", "dtype", "default"],
)
async def test_a_changed_definition_adds_a_version_and_keeps_the_old_one(
    store: FeatureViewStore, tenant: str, change: dict[str, Any]
) -> None:
    base: dict[str, Any] = {"entity": "user", "features": FEATURES, "ttl_s": 3600.0}
    first = (await store.apply(tenant, "v", actor="a", **base)).view
    changed = await store.apply(tenant, "v", actor="a", **{**base, **change})
    assert changed.created and changed.view.version == 2
    assert await store.get(tenant, "v") == changed.view
    assert await store.get(tenant, "v", 1) == first
    # Going back to the first definition is a change too: version 3, equal to version 1.
    back = await store.apply(tenant, "v", actor="a", **base)
    assert back.created and back.view.version == 3
    assert replace(back.view, version=1) == first


async def test_concurrent_applies_of_one_definition_make_one_version(
    store: FeatureViewStore, tenant: str
) -> None:
    results = await asyncio.gather(
        *(store.apply(tenant, "user_stats", "user", FEATURES, 60, "a") for _ in range(5))
    )
    assert {r.view.version for r in results} == {1}
    assert sum(r.created for r in results) == 1


async def test_list_gives_the_latest_version_of_each_view_of_the_tenant(
    store: FeatureViewStore, tenant: str
) -> None:
    await store.apply(tenant, "b_view", "user", FEATURES, 60, "a")
    await store.apply(tenant, "a_view", "item", FEATURES, 60, "a")
    await store.apply(tenant, "b_view", "user", FEATURES, 120, "a")
    await store.apply(tenant + "x", "c_view", "user", FEATURES, 60, "a")
    views = await store.list(tenant)
    assert [(v.name, v.version, v.ttl_s) for v in views] == [
        ("a_view", 1, 60.0),
        ("b_view", 2, 120.0),
    ]
    assert await store.list(f"t{secrets.token_hex(4)}") == []


async def test_another_tenants_view_and_a_missing_version_are_not_found(
    store: FeatureViewStore, tenant: str
) -> None:
    await store.apply(tenant, "user_stats", "user", FEATURES, 60, "a")
    with pytest.raises(FeatureViewNotFound, match="'user_stats' does not exist"):
        await store.get(tenant + "x", "user_stats")
    with pytest.raises(FeatureViewNotFound, match="version 2"):
        await store.get(tenant, "user_stats", 2)


def _spec(**kw: Any) -> FeatureSpec:
    return FeatureSpec(**{"name": "f", "dtype": "float", "default": None, **kw})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "User"}, "feature view name 'User'"),
        ({"name": "1abc"}, "feature view name '1abc'"),
        ({"name": "a-b"}, "feature view name 'a-b'"),
        ({"name": "a:b"}, "feature view name 'a:b'"),
        ({"name": "x" * 64}, "is not allowed"),
        ({"name": ""}, "is not allowed"),
        ({"entity": "User Id"}, "entity name"),
        ({"features": []}, "at least one feature"),
        ({"features": [_spec(), _spec()]}, "'f' appears twice"),
        ({"features": [_spec(name="Bad")]}, "feature name 'Bad'"),
        ({"features": [_spec(dtype="double")]}, "dtype 'double' is not one of float, int"),
        ({"features": [_spec(dtype="int", default="3")]}, "expected int, got string '3'"),
        ({"features": [_spec(dtype="int", default=1.5)]}, "expected int, got float 1.5"),
        ({"features": [_spec(dtype="int", default=2**63)]}, "signed 64-bit"),
        ({"features": [_spec(dtype="float", default=True)]}, "expected float, got bool"),
        ({"features": [_spec(dtype="float", default=math.nan)]}, "must be finite"),
        ({"features": [_spec(dtype="bool", default=1)]}, "expected bool, got int 1"),
        ({"features": [_spec(dtype="string", default=5)]}, "expected string, got int 5"),
        ({"features": [_spec(dtype="string", default=[1])]}, "got a JSON list"),
        ({"ttl_s": 0}, "ttl_s must be > 0"),
        ({"ttl_s": -1.0}, "ttl_s must be > 0"),
        ({"ttl_s": math.inf}, "ttl_s must be > 0"),
        ({"ttl_s": math.nan}, "ttl_s must be > 0"),
        ({"ttl_s": 1e12}, "at most"),
        ({"ttl_s": True}, "ttl_s must be a number"),
    ],
)
async def test_an_invalid_definition_is_refused_and_nothing_is_stored(
    store: FeatureViewStore, tenant: str, kwargs: dict[str, Any], message: str
) -> None:
    definition: dict[str, Any] = {
        "name": "user_stats",
        "entity": "user",
        "features": FEATURES,
        "ttl_s": 60.0,
        **kwargs,
    }
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace("[", r"\[")):
        await store.apply(tenant, actor="a", **definition)
    assert await store.list(tenant) == []
