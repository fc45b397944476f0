"""What one feature push may carry, and what a tenant may keep: pushes past a limit are
refused naming the limit, and nothing of them is stored."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from modelport.errors import PayloadTooLarge, StorageQuotaExceeded
from modelport.services.features import FeatureService, PushLimits
from modelport.stores.features import FeatureViewStore
from modelport.stores.online import FeatureSpec
from modelport.stores.online_memory import MemoryOnlineStore
from modelport.stores.sql import create_engine, migrate

FEATURES = [FeatureSpec(f"f{i}", "float", 0.0) for i in range(8)] + [
    FeatureSpec("segment", "string", "")
]
LIMITS = PushLimits(rows=50, values=100, string_chars=32)


@pytest.fixture
async def service(database_url: str) -> AsyncIterator[FeatureService]:
    await migrate(database_url)
    engine = create_engine(database_url)
    online = MemoryOnlineStore(engine, max_tenant_bytes=4_000)
    await online.load()
    try:
        yield FeatureService(FeatureViewStore(engine), online, limits=LIMITS)
    finally:
        await online.close()
        await engine.dispose()


@pytest.fixture
async def tenant(service: FeatureService) -> str:
    name = f"t{secrets.token_hex(4)}"
    await service.apply_view(name, "user_stats", "user", FEATURES, 3600.0, "tests")
    return name


def rows(count: int, **values: Any) -> list[dict[str, Any]]:
    now = time.time()
    return [{"entity": f"u{i}", "values": values, "event_timestamp": now} for i in range(count)]


async def stored(service: FeatureService, tenant: str, count: int) -> list[str]:
    found = await service.get_features(
        tenant, ["user_stats:f0"], {"user": [f"u{i}" for i in range(count)]}
    )
    return [r.features["user_stats:f0"].status for r in found]


async def test_a_push_of_too_many_rows_is_refused_with_the_limit(
    service: FeatureService, tenant: str
) -> None:
    with pytest.raises(PayloadTooLarge, match=r"at most 50 rows.*got 51.*FEATURE_PUSH_MAX_ROWS"):
        await service.push(tenant, "user_stats", rows(51, f0=1.0))
    assert await stored(service, tenant, 1) == ["missing"]


async def test_a_push_of_too_many_values_is_refused_with_the_limit(
    service: FeatureService, tenant: str
) -> None:
    wide = {f"f{i}": 1.0 for i in range(8)}
    assert (await service.push(tenant, "user_stats", rows(12, **wide))).written == 12  # 96
    with pytest.raises(PayloadTooLarge, match=r"at most 100 feature values.*got 104 in 13 rows"):
        await service.push(tenant, "user_stats", rows(13, **wide))


async def test_a_string_value_past_the_limit_is_refused_naming_the_field(
    service: FeatureService, tenant: str
) -> None:
    assert (await service.push(tenant, "user_stats", rows(1, segment="s" * 32))).written == 1
    with pytest.raises(PayloadTooLarge, match=r"rows\[0\]\.values\.segment.*at most 32 char"):
        await service.push(tenant, "user_stats", rows(1, segment="s" * 33))


async def test_a_push_past_the_tenant_storage_cap_is_refused_and_stores_nothing(
    service: FeatureService, tenant: str
) -> None:
    # Each record: 2-3 bytes of key and 46 of JSON; 4,000 bytes hold some 80.
    now = time.time()
    for start in (0, 40):
        batch = [
            {"entity": f"u{start + i}", "values": {"segment": "s" * 32}, "event_timestamp": now}
            for i in range(40)
        ]
        await service.push(tenant, "user_stats", batch)
    more = [
        {"entity": f"v{i}", "values": {"segment": "s" * 32, "f0": 2.0}, "event_timestamp": now}
        for i in range(40)
    ]
    with pytest.raises(StorageQuotaExceeded, match="over its cap of 4000 bytes"):
        await service.push(tenant, "user_stats", more)
    found = await service.get_features(tenant, ["user_stats:f0"], {"user": ["v0", "v39"]})
    assert [r.features["user_stats:f0"].status for r in found] == ["missing", "missing"]
