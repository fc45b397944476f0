"""The online store contract, run against every backend: memory persisted to SQLite, memory
persisted to a real PostgreSQL, and a real Redis."""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from modelport.errors import FeatureStoreUnavailable, StorageQuotaExceeded
from modelport.stores.online import (
    FeatureRow,
    FeatureSpec,
    FeatureValue,
    FeatureView,
    OnlineStore,
    ViewRead,
    WriteResult,
)
from modelport.stores.online_memory import MemoryOnlineStore
from modelport.stores.online_redis import RedisOnlineStore
from modelport.stores.sql import create_engine
from required_services import service_missing

from .conftest import postgres_database, sqlite_database

REDIS_URL = os.environ.get("MODELPORT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
GRACE_S = 60.0

SPECS = (
    FeatureSpec("clicks", "int", 0),
    FeatureSpec("ctr", "float", 0.5),
    FeatureSpec("active", "bool", False),
    FeatureSpec("segment", "string", "none"),
)


# --------------------------------------------------------------------------- backends


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return sqlite_database(tmp_path_factory, "online")


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with postgres_database("online") as url:
        yield url


@dataclass
class Backend:
    """A store, a way to open a second instance on the same state (a restart), and a tenant
    of its own."""

    kind: str
    store: OnlineStore
    reopen: Callable[[], Awaitable[OnlineStore]]
    tenant: str
    redis: Redis | None = None
    prefix: str = ""

    def view(
        self,
        name: str = "user_stats",
        ttl_s: float = 3600.0,
        tenant: str | None = None,
        entity: str = "user",
    ) -> FeatureView:
        return FeatureView(tenant or self.tenant, name, 1, entity, SPECS, ttl_s)


@pytest.fixture(
    params=[
        "memory-sqlite",
        pytest.param("memory-postgres", marks=[pytest.mark.postgres, pytest.mark.integration]),
        pytest.param("redis", marks=pytest.mark.integration),
    ]
)
def kind(request: pytest.FixtureRequest) -> tuple[str, str]:
    """The backend, and the database a memory backend persists to (resolved outside the loop)."""
    if request.param == "redis":
        return "redis", ""
    return request.param, str(request.getfixturevalue(request.param[len("memory-") :] + "_url"))


@asynccontextmanager
async def memory_backend(
    kind: str, url: str, max_tenant_bytes: int | None = None
) -> AsyncIterator[Backend]:
    engine = create_engine(url)
    opened: list[OnlineStore] = []

    async def reopen() -> OnlineStore:
        store = MemoryOnlineStore(engine, grace_s=GRACE_S, max_tenant_bytes=max_tenant_bytes)
        await store.load()
        opened.append(store)
        return store

    try:
        yield Backend(kind, await reopen(), reopen, f"t{secrets.token_hex(4)}")
    finally:
        for store in opened:
            await store.close()
        await engine.dispose()


@asynccontextmanager
async def redis_backend_at(url: str, max_tenant_bytes: int | None = None) -> AsyncIterator[Backend]:
    """Keys under a prefix of this test's own, deleted afterwards."""
    client = Redis.from_url(url, socket_timeout=2)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        await client.aclose()
        service_missing("Redis", url, exc)
    prefix = f"mp-test-{secrets.token_hex(4)}:f"
    opened: list[OnlineStore] = []

    async def reopen() -> OnlineStore:
        store = RedisOnlineStore.from_url(
            url, prefix=prefix, grace_s=GRACE_S, max_tenant_bytes=max_tenant_bytes
        )
        await store.load()
        opened.append(store)
        return store

    try:
        yield Backend("redis", await reopen(), reopen, f"t{secrets.token_hex(4)}", client, prefix)
    finally:
        for store in opened:
            await store.close()
        keys = [key async for key in client.scan_iter(f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture
async def backend(kind: tuple[str, str]) -> AsyncIterator[Backend]:
    name, url = kind
    opened = redis_backend_at(REDIS_URL) if name == "redis" else memory_backend(name, url)
    async with opened as backend:
        yield backend


#: The storage cap of the ``capped`` backends, in bytes (``stored_bytes`` per record).
CAP = 2_000


@pytest.fixture
async def capped(kind: tuple[str, str]) -> AsyncIterator[Backend]:
    """A backend whose tenants may store at most ``CAP`` bytes."""
    name, url = kind
    opened = redis_backend_at(REDIS_URL, CAP) if name == "redis" else memory_backend(name, url, CAP)
    async with opened as backend:
        yield backend


@pytest.fixture
async def redis_backend() -> AsyncIterator[Backend]:
    async with redis_backend_at(REDIS_URL) as backend:
        yield backend


def read_of(view: FeatureView, *keys: str, features: tuple[str, ...] | None = None) -> ViewRead:
    return ViewRead(view, features or tuple(s.name for s in view.features), keys)


async def read_one(
    store: OnlineStore, view: FeatureView, key: str, now: float | None = None
) -> Mapping[str, FeatureValue]:
    return (await store.read([read_of(view, key)], now))[0][0]


def values_of(row: Mapping[str, FeatureValue]) -> dict[str, object]:
    return {name: v.value for name, v in row.items()}


ROW = {"clicks": 2**62, "ctr": 0.125, "active": True, "segment": 'héllo ✓ "quoted" :x:'}


# --------------------------------------------------------------------------- values


async def test_each_dtype_round_trips_with_its_type_and_event_time(backend: Backend) -> None:
    view = backend.view()
    ts = time.time() - 1.234567
    result = await backend.store.write(view, [FeatureRow("u1", ROW, ts)])
    assert result == WriteResult(written=1, stale=0)
    row = await read_one(backend.store, view, "u1")
    assert values_of(row) == ROW
    assert [type(v.value) for v in row.values()] == [int, float, bool, str]
    assert {v.status for v in row.values()} == {"present"}
    assert {v.event_ts for v in row.values()} == {ts}


async def test_an_unknown_key_reads_as_missing_with_the_defaults(backend: Backend) -> None:
    row = await read_one(backend.store, backend.view(), "nobody")
    assert row == {s.name: FeatureValue(s.default, "missing", None) for s in SPECS}


async def test_a_feature_the_row_did_not_carry_reads_as_missing(backend: Backend) -> None:
    view = backend.view()
    ts = time.time()
    await backend.store.write(view, [FeatureRow("u1", {"clicks": 3}, ts)])
    row = await read_one(backend.store, view, "u1")
    assert row["clicks"] == FeatureValue(3, "present", ts)
    assert row["ctr"] == FeatureValue(0.5, "missing", None)
    assert row["segment"] == FeatureValue("none", "missing", None)


async def test_a_read_row_holds_the_features_asked_for_in_their_order(backend: Backend) -> None:
    view = backend.view()
    ts = time.time() - 2.5
    await backend.store.write(view, [FeatureRow("u1", {"clicks": 3, "ctr": 0.25}, ts)])
    read = read_of(view, "u1", "nobody", features=("segment", "ctr"))
    row, absent = (await backend.store.read([read]))[0]
    assert list(row) == ["segment", "ctr"]
    assert len(row) == 2
    assert dict(row) == {
        "segment": FeatureValue("none", "missing", None),
        "ctr": FeatureValue(0.25, "present", ts),
    }
    assert (row.status, row.event_ts) == ("present", ts)
    assert (absent.status, absent.event_ts) == ("missing", None)
    assert dict(absent) == {
        "segment": FeatureValue("none", "missing", None),
        "ctr": FeatureValue(0.5, "missing", None),
    }
    with pytest.raises(KeyError):
        row["clicks"]  # stored, but not asked for
    assert "clicks" not in row and "ctr" in row
    assert row.get("clicks") is None
    for read in (row, absent):
        assert read.to_dict() == {name: read[name] for name in read}


async def test_a_row_replaces_the_whole_previous_record(backend: Backend) -> None:
    view = backend.view()
    now = time.time()
    await backend.store.write(view, [FeatureRow("u1", ROW, now - 2)])
    await backend.store.write(view, [FeatureRow("u1", {"ctr": 0.75}, now - 1)])
    row = await read_one(backend.store, view, "u1")
    assert row["ctr"] == FeatureValue(0.75, "present", now - 1)
    assert row["clicks"].status == "missing"


async def test_a_value_past_its_ttl_reads_as_expired_then_missing(backend: Backend) -> None:
    view = backend.view(ttl_s=0.2)
    ts = time.time()
    await backend.store.write(view, [FeatureRow("u1", ROW, ts)])
    assert (await read_one(backend.store, view, "u1", now=ts + 0.1))["ctr"].status == "present"
    await asyncio.sleep(0.3)
    row = await read_one(backend.store, view, "u1")  # the clock, not a given `now`
    assert row["ctr"] == FeatureValue(0.5, "expired", ts)
    assert row["clicks"] == FeatureValue(0, "expired", ts)
    late = await read_one(backend.store, view, "u1", now=ts + 0.2 + GRACE_S + 1)
    assert late["ctr"] == FeatureValue(0.5, "missing", None)
    # All at once or one by one: the same values.
    for read in (row, late):
        assert read.to_dict() == {name: read[name] for name in read}


async def test_the_reading_view_ttl_decides_expiry(backend: Backend) -> None:
    short, long = backend.view(ttl_s=10.0), backend.view(ttl_s=1000.0)
    ts = time.time() - 30
    await backend.store.write(short, [FeatureRow("u1", ROW, ts)])
    assert (await read_one(backend.store, short, "u1"))["ctr"].status == "expired"
    assert (await read_one(backend.store, long, "u1"))["ctr"].status == "present"


# --------------------------------------------------------------------------- ordering


async def test_an_older_event_never_overwrites_a_newer_one(backend: Backend) -> None:
    view = backend.view()
    now = time.time()
    await backend.store.write(view, [FeatureRow("u1", {"clicks": 2}, now - 1)])
    result = await backend.store.write(view, [FeatureRow("u1", {"clicks": 1}, now - 5)])
    assert result == WriteResult(written=0, stale=1)
    assert (await read_one(backend.store, view, "u1"))["clicks"] == FeatureValue(
        2, "present", now - 1
    )


async def test_within_one_batch_the_newest_event_wins_in_any_order(backend: Backend) -> None:
    view = backend.view()
    now = time.time()
    newest_first = [
        FeatureRow("a", {"clicks": 3}, now - 1),
        FeatureRow("a", {"clicks": 1}, now - 3),
        FeatureRow("a", {"clicks": 2}, now - 2),
    ]
    oldest_first = [
        FeatureRow("b", {"clicks": 1}, now - 3),
        FeatureRow("b", {"clicks": 2}, now - 2),
        FeatureRow("b", {"clicks": 3}, now - 1),
    ]
    assert await backend.store.write(view, newest_first) == WriteResult(written=1, stale=2)
    assert await backend.store.write(view, oldest_first) == WriteResult(written=3, stale=0)
    rows = (await backend.store.read([read_of(view, "a", "b")]))[0]
    assert [r["clicks"].value for r in rows] == [3, 3]


async def test_concurrent_writes_keep_the_newest_event(backend: Backend) -> None:
    view = backend.view()
    now = time.time()
    stamps = [now - i for i in range(30)]
    random.Random(7).shuffle(stamps)
    await asyncio.gather(
        *(
            backend.store.write(view, [FeatureRow("u1", {"clicks": int(now - ts)}, ts)])
            for ts in stamps
        )
    )
    assert (await read_one(backend.store, view, "u1"))["clicks"] == FeatureValue(0, "present", now)
    restarted = await backend.reopen()
    assert (await read_one(restarted, view, "u1"))["clicks"] == FeatureValue(0, "present", now)


async def test_rewriting_the_same_row_is_idempotent(backend: Backend) -> None:
    view = backend.view()
    row = FeatureRow("u1", ROW, time.time())
    first = await backend.store.write(view, [row])
    again = await backend.store.write(view, [row, row])
    assert first == WriteResult(written=1, stale=0)
    assert again == WriteResult(written=2, stale=0)
    assert values_of(await read_one(backend.store, view, "u1")) == ROW


async def test_of_two_rows_with_the_same_event_time_the_later_write_is_kept(
    backend: Backend,
) -> None:
    view = backend.view()
    ts = time.time()
    await backend.store.write(view, [FeatureRow("u1", {"clicks": 1}, ts)])
    assert await backend.store.write(view, [FeatureRow("u1", {"clicks": 2}, ts)]) == WriteResult(
        written=1, stale=0
    )
    assert (await read_one(backend.store, view, "u1"))["clicks"].value == 2


# --------------------------------------------------------------------------- isolation, reads


async def test_tenants_and_views_are_isolated(backend: Backend) -> None:
    mine, theirs = backend.view(), backend.view(tenant=backend.tenant + "x")
    other_view = backend.view(name="user_other")
    ts = time.time()
    await backend.store.write(mine, [FeatureRow("u1", {"clicks": 1}, ts)])
    await backend.store.write(theirs, [FeatureRow("u1", {"clicks": 2}, ts)])
    assert (await read_one(backend.store, mine, "u1"))["clicks"].value == 1
    assert (await read_one(backend.store, theirs, "u1"))["clicks"].value == 2
    assert (await read_one(backend.store, other_view, "u1"))["clicks"].status == "missing"


async def test_many_entities_of_many_views_in_one_read_align_with_the_keys(
    backend: Backend,
) -> None:
    views = [backend.view(name=f"view_{i}") for i in range(3)]
    items = backend.view(name="item_stats", entity="item")
    ts = time.time()
    for n, view in enumerate(views):
        rows = [FeatureRow(f"u{k}", {"clicks": k * 10 + n}, ts) for k in range(0, 60, 2)]
        await backend.store.write(view, rows)
    await backend.store.write(items, [FeatureRow("i1", {"segment": "shoes"}, ts)])
    keys = tuple(f"u{k}" for k in [5, 4, 0, 59, 58, 4, *range(10, 50)])
    reads = [*(read_of(v, *keys, features=("clicks",)) for v in views), read_of(items, "i1", "i2")]
    result = await backend.store.read(reads)
    assert len(result) == 4
    for n, rows in enumerate(result[:3]):
        assert len(rows) == len(keys)
        for key, row in zip(keys, rows, strict=True):
            k = int(key[1:])
            expected = FeatureValue(k * 10 + n, "present", ts) if k % 2 == 0 else None
            assert list(row) == ["clicks"]
            assert row["clicks"] == (expected or FeatureValue(0, "missing", None)), key
    assert [r["segment"].value for r in result[3]] == ["shoes", "none"]
    assert await backend.store.read([]) == []
    assert await backend.store.read([read_of(items)]) == [[]]


async def test_a_read_of_thousands_of_keys_stays_aligned(backend: Backend) -> None:
    """Past 1,000 keys the Redis backend splits a read into several script calls."""
    views = [backend.view(name="big_a"), backend.view(name="big_b")]
    ts = time.time()
    for n, view in enumerate(views):
        rows = [FeatureRow(f"e{k}", {"clicks": k + n}, ts) for k in range(0, 1500, 3)]
        assert (await backend.store.write(view, rows)).written == 500
    keys = tuple(f"e{k}" for k in reversed(range(1500)))
    reads = [read_of(v, *keys, features=("clicks",)) for v in views]
    blocking = await asyncio.to_thread(backend.store.read_blocking, reads, ts)
    for result in (await backend.store.read(reads, ts), blocking):
        for n, rows in enumerate(result):
            assert [r["clicks"].value for r in rows] == [
                int(key[1:]) + n if int(key[1:]) % 3 == 0 else 0 for key in keys
            ]


def expected_numbers(rows: list[Mapping[str, FeatureValue]], features: tuple[str, ...]) -> Any:
    """What read_numbers should hold for rows that ``read`` returned (at a time when every
    record is within its TTL): NaN where a value is missing or not a number."""
    table = [
        [
            float(v.value)
            if v.status == "present" and isinstance(v.value, int | float)
            else float("nan")
            for v in (row[f] for f in features)
        ]
        for row in rows
    ]
    return np.array(table, dtype=np.float32).reshape(len(rows), len(features))


async def test_read_numbers_holds_what_read_holds_as_float32(backend: Backend) -> None:
    view = backend.view()
    items = backend.view(name="item_stats", entity="item")
    ts = time.time() - 3
    await backend.store.write(
        view,
        [
            FeatureRow("u1", ROW, ts),
            FeatureRow("u2", {"ctr": 0.75}, ts - 1),
            FeatureRow("u3", {"active": False, "segment": "x"}, ts - 2),
        ],
    )
    await backend.store.write(items, [FeatureRow("i1", {"clicks": 7}, ts)])
    features = ("ctr", "clicks", "active", "segment")
    reads = [
        read_of(view, "u2", "nobody", "u1", "u3", features=features),
        read_of(items, "i1", "i2", features=("clicks",)),
        read_of(items, features=("clicks",)),
    ]
    blocking = await asyncio.to_thread(backend.store.read_numbers_blocking, reads)
    as_read = await backend.store.read(reads)
    for numbers in (await backend.store.read_numbers(reads), blocking):
        assert len(numbers) == 3
        stamps = [[float(s) for s in n.event_ts] for n in numbers]
        assert stamps[0][0::2] == [ts - 1, ts] and stamps[0][3] == ts - 2
        assert np.isnan(stamps[0][1]) and np.isnan(stamps[1][1]) and stamps[1][0] == ts
        for got, rows, read in zip(numbers, as_read, reads, strict=True):
            assert got.values.dtype == np.float32
            assert got.values.shape == (len(read.keys), len(read.features))
            np.testing.assert_array_equal(got.values, expected_numbers(rows, read.features))
        # u1: 0.125, 2**62 (as float32), True as 1; a string is not a number.
        np.testing.assert_array_equal(
            numbers[0].values[2], np.array([0.125, 2.0**62, 1.0, np.nan], dtype=np.float32)
        )
    assert await backend.store.read_numbers([]) == []


async def test_read_numbers_gives_a_float_beyond_float32_as_inf(backend: Backend) -> None:
    view = backend.view()
    await backend.store.write(view, [FeatureRow("u1", {"ctr": -1e39, "clicks": 1}, time.time())])
    (got,) = await backend.store.read_numbers([read_of(view, "u1", features=("ctr", "clicks"))])
    np.testing.assert_array_equal(got.values, np.array([[-np.inf, 1]], dtype=np.float32))


async def test_read_numbers_of_thousands_of_keys_stays_aligned(backend: Backend) -> None:
    """Past 1,000 keys the Redis backend splits the read into several script calls, some of
    them carrying the end of one read and the start of the next."""
    views = [backend.view(name="wide_a"), backend.view(name="wide_b")]
    ts = time.time()
    for n, view in enumerate(views):
        rows = [FeatureRow(f"e{k}", {"clicks": k + n, "ctr": 0.5}, ts) for k in range(0, 1300, 3)]
        await backend.store.write(view, rows)
    keys = tuple(f"e{k}" for k in reversed(range(1300)))
    reads = [read_of(v, *keys, features=("clicks", "ctr")) for v in views]
    for numbers in (
        await backend.store.read_numbers(reads),
        await asyncio.to_thread(backend.store.read_numbers_blocking, reads),
    ):
        for n, got in enumerate(numbers):
            present = [int(key[1:]) % 3 == 0 for key in keys]
            clicks = [
                float(int(key[1:]) + n) if p else np.nan
                for key, p in zip(keys, present, strict=True)
            ]
            np.testing.assert_array_equal(got.values[:, 0], np.array(clicks, dtype=np.float32))
            assert [not np.isnan(s) for s in got.event_ts] == present


async def test_read_blocking_from_a_thread_equals_read(backend: Backend) -> None:
    view = backend.view(ttl_s=5.0)
    now = time.time()
    await backend.store.write(
        view, [FeatureRow(f"u{k}", {"clicks": k}, now - k) for k in range(10)]
    )
    reads = [read_of(view, *(f"u{k}" for k in range(12)))]
    results: list[object] = []
    thread = threading.Thread(
        target=lambda: results.append(backend.store.read_blocking(reads, now))
    )
    thread.start()
    thread.join(timeout=10)
    expected = await backend.store.read(reads, now)
    assert results == [expected]
    statuses = [row["clicks"].status for row in expected[0]]
    assert statuses == ["present"] * 6 + ["expired"] * 4 + ["missing"] * 2


async def test_values_survive_a_restart(backend: Backend) -> None:
    view = backend.view()
    ts = time.time()
    await backend.store.write(view, [FeatureRow("u1", ROW, ts), FeatureRow("u2", ROW, ts - 1)])
    await backend.store.write(view, [FeatureRow("u1", {"clicks": 1}, ts - 5)])  # stale
    restarted = await backend.reopen()
    rows = (await restarted.read([read_of(view, "u1", "u2", "u3")]))[0]
    assert [values_of(r) for r in rows[:2]] == [ROW, ROW]
    assert rows[0]["clicks"].event_ts == ts
    assert rows[2]["clicks"].status == "missing"


# --------------------------------------------------------------------------- Redis specifics


@pytest.mark.integration
async def test_redis_keys_follow_the_layout_and_live_ttl_plus_grace(
    redis_backend: Backend,
) -> None:
    view = redis_backend.view(ttl_s=30.0)
    ts = time.time()
    await redis_backend.store.write(view, [FeatureRow("u:1 x", {"clicks": 7}, ts)])
    client = redis_backend.redis
    assert client is not None
    key = f"{redis_backend.prefix}:{redis_backend.tenant}:user_stats:u:1 x"
    stored = await client.hgetall(key)
    assert stored == {b"ts": repr(ts).encode(), b"v": b'{"clicks":7}'}
    ttl_ms = await client.pttl(key)
    assert (30.0 + GRACE_S) * 1000 - 2000 < ttl_ms <= (30.0 + GRACE_S) * 1000
    # The numbers: a 6-byte hash of the feature list, the event time, one float32 per feature
    # of the view in its order (NaN where the row has no value); same expiry.
    numbers_key = f"{redis_backend.prefix}:{redis_backend.tenant}:user_stats/n:u:1 x"
    packed = await client.get(numbers_key)
    assert packed is not None and len(packed) == 6 + 8 + 4 * len(SPECS)
    assert struct.unpack("<d", packed[6:14])[0] == ts
    values = np.frombuffer(packed[14:], dtype="<f4")
    assert values[0] == 7 and np.isnan(values[1:]).all()
    assert abs(await client.pttl(numbers_key) - ttl_ms) < 2000


async def test_the_join_reads_keys_without_usable_numbers_from_their_records(
    redis_backend: Backend,
) -> None:
    old = redis_backend.view()
    ts = time.time()
    await redis_backend.store.write(
        old,
        [FeatureRow("u1", {"clicks": 3, "ctr": 0.25}, ts), FeatureRow("u2", {"ctr": 1.5}, ts)],
    )
    # Version 2 lists its features in another order and adds one: its numbers are packed
    # differently, so u1's and u2's numbers are not its own.
    newer = FeatureView(
        old.tenant,
        old.name,
        2,
        old.entity,
        (FeatureSpec("visits", "int", 0), *reversed(old.features)),
        old.ttl_s,
    )
    client = redis_backend.redis
    assert client is not None
    # A row that predates the numbers keys has none at all.
    await client.delete(f"{redis_backend.prefix}:{redis_backend.tenant}:{old.name}/n:u2")
    read = read_of(newer, "u1", "nobody", "u2", features=("ctr", "visits", "clicks"))
    for numbers in (
        await redis_backend.store.read_numbers([read]),
        await asyncio.to_thread(redis_backend.store.read_numbers_blocking, [read]),
    ):
        (got,) = numbers
        np.testing.assert_array_equal(
            got.values,
            np.array(
                [[0.25, np.nan, 3], [np.nan, np.nan, np.nan], [1.5, np.nan, np.nan]],
                dtype=np.float32,
            ),
        )
        assert got.event_ts[0] == ts and np.isnan(got.event_ts[1]) and got.event_ts[2] == ts
    # A row written by version 2 replaces the numbers: version 1 then reads it from the record.
    await redis_backend.store.write(newer, [FeatureRow("u1", {"visits": 9}, ts + 1)])
    (got,) = await redis_backend.store.read_numbers([read_of(old, "u1", features=("clicks",))])
    assert np.isnan(got.values).all() and got.event_ts[0] == ts + 1
    (got,) = await redis_backend.store.read_numbers([read_of(newer, "u1", features=("visits",))])
    assert got.values[0, 0] == 9


async def test_default_key_prefix_is_mp_f() -> None:
    store = RedisOnlineStore.from_url(REDIS_URL)
    try:
        assert store.key("acme", "user_stats", "u1") == "mp:f:acme:user_stats:u1"
    finally:
        await store.close()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never answers (a hung Redis)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


@pytest.mark.parametrize("hung", [True, False], ids=["hung", "refused"])
async def test_a_failing_redis_raises_unavailable_quickly(silent_server: int, hung: bool) -> None:
    if hung:
        port = silent_server
    else:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]  # closed again: nothing listens there
    store = RedisOnlineStore.from_url(f"redis://127.0.0.1:{port}/0", timeout_s=0.2)
    view = FeatureView("t", "user_stats", 1, "user", SPECS, 60.0)
    try:
        for call in (
            lambda: store.read([read_of(view, "u1")]),
            lambda: store.write(view, [FeatureRow("u1", {"clicks": 1}, time.time())]),
            lambda: asyncio.to_thread(store.read_blocking, [read_of(view, "u1")]),
        ):
            began = time.monotonic()
            with pytest.raises(FeatureStoreUnavailable, match="retry later"):
                await asyncio.wait_for(call(), timeout=5)
            assert time.monotonic() - began < 2.0
    finally:
        await store.close()


# --------------------------------------------------------------------------- storage cap


def record_bytes(row: FeatureRow) -> int:
    """A record's size as the cap counts it: its key and its values as compact JSON."""
    return len(row.entity) + len(json.dumps(row.values, separators=(",", ":")))


def sized_rows(count: int, text: str, ts: float, first: int = 0) -> list[FeatureRow]:
    return [FeatureRow(f"u{first + i}", {"segment": text}, ts) for i in range(count)]


async def test_a_push_past_the_tenant_cap_is_refused_whole_and_says_what_was_exceeded(
    capped: Backend,
) -> None:
    view = capped.view()
    now = time.time()
    assert await capped.store.write(view, sized_rows(15, "x" * 100, now)) == WriteResult(15, 0)

    with pytest.raises(StorageQuotaExceeded) as refused:
        await capped.store.write(view, sized_rows(3, "y" * 100, now, first=15))

    message = refused.value.message
    assert f"tenant '{capped.tenant}'" in message and f"cap of {CAP} bytes" in message
    stored = sum(record_bytes(row) for row in sized_rows(15, "x" * 100, now))
    adding = sum(record_bytes(row) for row in sized_rows(3, "y" * 100, now, first=15))
    assert f"stores {stored} bytes" in message and f"to {stored + adding}," in message
    assert "Nothing was written" in message
    read = await capped.store.read([ViewRead(view, ("segment",), ("u14", "u15"))], now)
    assert [row["segment"].status for row in read[0]] == ["present", "missing"]


async def test_replacing_values_counts_only_the_difference_against_the_cap(
    capped: Backend,
) -> None:
    view = capped.view()
    now = time.time()
    await capped.store.write(view, sized_rows(15, "x" * 100, now))
    # The same entities again, newer and as large: the tenant stores no more than before.
    for step in range(1, 4):
        assert await capped.store.write(view, sized_rows(15, "z" * 100, now + step)) == (
            WriteResult(15, 0)
        )
    # Smaller values free room for new entities.
    await capped.store.write(view, sized_rows(15, "s", now + 5))
    assert await capped.store.write(view, sized_rows(5, "n" * 100, now + 5, first=15)) == (
        WriteResult(5, 0)
    )


async def test_the_cap_is_per_tenant(capped: Backend) -> None:
    now = time.time()
    await capped.store.write(capped.view(), sized_rows(15, "x" * 100, now))
    other = capped.view(tenant=f"t{secrets.token_hex(4)}")
    assert await capped.store.write(other, sized_rows(15, "x" * 100, now)) == WriteResult(15, 0)


async def test_the_stored_total_survives_a_restart(capped: Backend) -> None:
    view = capped.view()
    now = time.time()
    await capped.store.write(view, sized_rows(15, "x" * 100, now))
    reopened = await capped.reopen()
    with pytest.raises(StorageQuotaExceeded):
        await reopened.write(view, sized_rows(3, "y" * 100, now, first=15))


async def test_expired_records_stop_counting_against_the_cap(capped: Backend) -> None:
    view = capped.view(ttl_s=0.05)
    old = time.time() - GRACE_S - 1.0  # already past its TTL and grace period
    await capped.store.write(view, sized_rows(15, "x" * 100, old))
    reopened = await capped.reopen()  # the memory backend drops such records when it starts
    assert await reopened.write(view, sized_rows(15, "y" * 100, time.time(), first=15)) == (
        WriteResult(15, 0)
    )
