"""The relay from the outbox to the stream, on SQLite and a real PostgreSQL: what commits is
published in commit order, what rolls back never is, and one replica relays at a time."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncEngine

from modelport.services.relay import Relay
from modelport.stores.events import EventStore
from modelport.stores.leases import LeaseStore
from modelport.stores.outbox import CATALOG, EVENTS, Outbox, enqueue
from modelport.stores.sql import create_engine
from modelport.stores.streams import Message
from modelport.stores.streams_redis import RedisStream
from modelport.stores.streams_sql import SqlStream
from redis_process import free_port, redis_server
from required_services import service_missing

REDIS_URL = os.environ.get("MODELPORT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


class Rollback(Exception):
    """Raised inside a transaction to roll it back."""


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    opened = create_engine(database_url)
    try:
        yield opened
    finally:
        await opened.dispose()


@pytest.fixture
async def stream(engine: AsyncEngine) -> SqlStream:
    return SqlStream(engine, poll_s=0.02)


@pytest.fixture
async def drained(engine: AsyncEngine, stream: SqlStream) -> Outbox:
    """The outbox, emptied of what earlier tests left (the database is the module's)."""
    outbox = Outbox(engine)
    await Relay(outbox, stream, batch_size=1000, interval_s=1).drain()
    return outbox


@pytest.fixture
def tenant() -> str:
    return f"acme-{secrets.token_hex(4)}"


async def commit(engine: AsyncEngine, tenant: str, topic: str, *keys: str) -> None:
    async with engine.begin() as conn:
        await enqueue(conn, tenant, topic, [(key, {"key": key}) for key in keys])


async def published(relay: Relay, count: int) -> None:
    """Wait (at most 5 s) until the running ``relay`` has published and deleted ``count``."""
    for _ in range(100):
        if relay.published >= count:
            return
        await asyncio.sleep(0.05)


async def everything(stream: SqlStream, topic: str, tenant: str) -> list[Message]:
    """What a fresh group reads of ``tenant``'s messages on ``topic``."""
    group = f"g{secrets.token_hex(4)}"
    out: list[Message] = []
    while batch := await stream.read(topic, group, "w", 100, 0):
        out.extend(m for m in batch if m.tenant == tenant)
    return out


async def test_committed_rows_reach_the_stream_in_order_and_rolled_back_ones_never(
    engine: AsyncEngine, stream: SqlStream, drained: Outbox, tenant: str
) -> None:
    await commit(engine, tenant, EVENTS, "e1", "e2")
    with pytest.raises(Rollback):
        async with engine.begin() as conn:
            await enqueue(conn, tenant, EVENTS, [("lost", {"key": "lost"})])
            raise Rollback
    await commit(engine, tenant, EVENTS, "e3")
    relay = Relay(drained, stream, batch_size=100, interval_s=1)

    assert await relay.run_once() == 3

    published = await everything(stream, EVENTS, tenant)
    assert [(m.key, m.payload, m.tenant) for m in published] == [
        ("e1", {"key": "e1"}, tenant),
        ("e2", {"key": "e2"}, tenant),
        ("e3", {"key": "e3"}, tenant),
    ]
    assert await drained.size() == 0
    assert await relay.run_once() == 0


async def test_each_row_goes_to_its_topic(
    engine: AsyncEngine, stream: SqlStream, drained: Outbox, tenant: str
) -> None:
    await commit(engine, tenant, EVENTS, "e1")
    await commit(engine, tenant, CATALOG, "p1")
    await commit(engine, tenant, EVENTS, "e2")

    await Relay(drained, stream, batch_size=100, interval_s=1).run_once()

    assert [m.key for m in await everything(stream, EVENTS, tenant)] == ["e1", "e2"]
    assert [m.key for m in await everything(stream, CATALOG, tenant)] == ["p1"]


async def test_a_run_moves_at_most_one_batch(
    engine: AsyncEngine, stream: SqlStream, drained: Outbox, tenant: str
) -> None:
    await commit(engine, tenant, EVENTS, *(f"e{i}" for i in range(5)))
    relay = Relay(drained, stream, batch_size=2, interval_s=1)

    assert [await relay.run_once() for _ in range(4)] == [2, 2, 1, 0]
    assert [m.key for m in await everything(stream, EVENTS, tenant)] == [f"e{i}" for i in range(5)]


async def test_the_running_relay_publishes_what_commits_without_being_asked(
    engine: AsyncEngine, stream: SqlStream, drained: Outbox, tenant: str
) -> None:
    relay = Relay(drained, stream, batch_size=100, interval_s=0.05)
    group = f"g{secrets.token_hex(4)}"
    await stream.read(EVENTS, group, "w", 1000, 0)  # the group starts here
    relay.start()
    try:
        await commit(engine, tenant, EVENTS, "e1")
        relay.nudge()
        got = await stream.read(EVENTS, group, "w", 10, 5.0)
        await published(relay, 1)
    finally:
        await relay.close()

    assert [(m.tenant, m.key) for m in got] == [(tenant, "e1")]
    assert (relay.published, await drained.size()) == (1, 0)


def event_row(event_id: str) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC)
    return {
        "event_id": event_id, "type": "view", "user_id": "u", "session_id": None,
        "item_ids": ["p"], "occurred_at": now, "request_id": None, "properties": {},
        "received_at": now,
    }  # fmt: skip


async def test_events_handed_over_as_they_commit_reach_the_stream_once_and_leave_no_rows(
    engine: AsyncEngine, stream: SqlStream, drained: Outbox, tenant: str
) -> None:
    store = EventStore(engine)
    relay = Relay(drained, stream, batch_size=100, interval_s=0.05, remove=store.remove_outbox)
    store.listener = relay
    group = f"g{secrets.token_hex(4)}"
    await stream.read(EVENTS, group, "w", 1000, 0)  # the group starts here
    relay.start()
    try:
        # Concurrent batches go in group commits; a retried id is stored and announced once.
        batches = [[f"e{b}-{i}" for i in range(20)] for b in range(5)] + [["e0-0", "e9-0"]]
        await asyncio.gather(
            *(
                store.append(tenant, [event_row(i) for i in ids], [{"id": i} for i in ids])
                for ids in batches
            )
        )
        await published(relay, 101)
        got: list[Message] = []
        while batch := await stream.read(EVENTS, group, "w", 1000, 0):
            got.extend(m for m in batch if m.tenant == tenant)
    finally:
        await relay.close()
        await store.close()

    keys = [m.key for m in got]
    assert sorted(keys) == sorted({f"{tenant}:{i}" for ids in batches for i in ids})
    assert len(keys) == len(set(keys)) == 101
    assert await drained.size() == 0


async def test_one_replica_relays_at_a_time_and_another_takes_over_when_it_stops(
    engine: AsyncEngine, stream: SqlStream, drained: Outbox, tenant: str
) -> None:
    leases = LeaseStore(engine)
    first = Relay(drained, stream, batch_size=100, interval_s=1, leases=leases, replica="a")
    second = Relay(drained, stream, batch_size=100, interval_s=1, leases=leases, replica="b")
    await commit(engine, tenant, EVENTS, "e1")

    assert await first.tick() == 1
    await commit(engine, tenant, EVENTS, "e2")
    assert await second.tick() == 0  # "a" holds the lease
    assert (first.leader, second.leader) == (True, False)

    await first.close()  # a replica that shuts down hands the lease back
    assert await second.tick() == 1
    assert second.leader
    assert [m.key for m in await everything(stream, EVENTS, tenant)] == ["e1", "e2"]
    await second.close()


class CountingLeases(LeaseStore):
    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self.asked = 0

    async def acquire(self, name: str, holder: str, ttl_s: float) -> bool:
        self.asked += 1
        return await super().acquire(name, holder, ttl_s)


async def test_a_replica_without_the_lease_waits_for_the_interval_rather_than_spinning(
    engine: AsyncEngine, stream: SqlStream, drained: Outbox
) -> None:
    leases = CountingLeases(engine)
    first = Relay(drained, stream, batch_size=100, interval_s=1, leases=leases, replica="a")
    second = Relay(drained, stream, batch_size=100, interval_s=1, leases=leases, replica="b")
    await first.tick()
    leases.asked = 0
    second.start()
    await asyncio.sleep(0.3)
    assert not second.leader
    assert leases.asked <= 2, leases.asked
    await second.close()
    await first.close()


async def test_a_stopped_relay_leaves_rows_for_the_next(
    engine: AsyncEngine, stream: SqlStream, drained: Outbox, tenant: str
) -> None:
    relay = Relay(drained, stream, batch_size=100, interval_s=0.05)
    relay.start()
    await relay.close()
    await commit(engine, tenant, EVENTS, "e1")
    await asyncio.sleep(0.1)

    assert await drained.size() == 1
    assert await Relay(drained, stream, batch_size=100, interval_s=1).run_once() == 1


async def test_the_relay_trims_what_every_group_has_acknowledged(
    engine: AsyncEngine, stream: SqlStream, drained: Outbox, tenant: str
) -> None:
    topic = f"t{secrets.token_hex(6)}"
    relay = Relay(drained, stream, batch_size=100, interval_s=1, trim_interval_s=0)
    await commit(engine, tenant, topic, "e1", "e2")
    await relay.tick()
    read = await stream.read(topic, "features", "w", 10, 0)
    await stream.ack(topic, "features", [m.id for m in read])
    await commit(engine, tenant, topic, "e3")

    await relay.tick()  # publishes e3, then trims e1 and e2

    assert [m.key for m in await stream.read(topic, "late", "w", 10, 0)] == ["e3"]
    assert await stream.lag(topic, "features") == 1


@pytest.mark.integration
async def test_while_the_stream_is_down_rows_wait_in_the_outbox_and_go_out_when_it_returns(
    engine: AsyncEngine, drained: Outbox, tenant: str
) -> None:
    port = free_port()
    stream = RedisStream.from_url(f"redis://127.0.0.1:{port}/0")
    relay = Relay(drained, stream, batch_size=100, interval_s=0.05)
    await commit(engine, tenant, EVENTS, "e1", "e2")
    relay.start()
    try:
        await asyncio.sleep(0.3)  # a few rounds against a Redis that is not there
        assert await drained.size() == 2
        with redis_server(port):
            await published(relay, 2)
            got = await stream.read(EVENTS, "features", "w", 10, 0)
    finally:
        await relay.close()
        await stream.close()

    assert [(m.tenant, m.key) for m in got] == [(tenant, "e1"), (tenant, "e2")]
    assert await drained.size() == 0


@pytest.mark.integration
async def test_when_one_topic_fails_to_publish_what_went_out_before_it_is_not_sent_again(
    engine: AsyncEngine, drained: Outbox, tenant: str
) -> None:
    prefix = f"mp-test-{secrets.token_hex(4)}:s"
    stream = RedisStream.from_url(REDIS_URL, prefix=prefix)
    client = Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        await client.aclose()
        await stream.close()
        service_missing("Redis", REDIS_URL, exc)
    relay = Relay(drained, stream, batch_size=100, interval_s=1)
    await commit(engine, tenant, EVENTS, "e1")
    await commit(engine, tenant, CATALOG, "p1")
    await commit(engine, tenant, EVENTS, "e2")
    await client.set(stream.topic_key(CATALOG), "not a stream")  # XADD to it fails
    try:
        with pytest.raises(RedisError):
            await relay.run_once()
        assert (relay.published, await drained.size()) == (1, 2)  # e1 went out

        await client.delete(stream.topic_key(CATALOG))
        assert await relay.run_once() == 2
        events = await stream.read(EVENTS, "features", "w", 10, 0)
        catalog = await stream.read(CATALOG, "search", "w", 10, 0)
    finally:
        await stream.close()
        keys = [key async for key in client.scan_iter(f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()

    assert [m.key for m in events] == ["e1", "e2"]  # e1 once
    assert [m.key for m in catalog] == ["p1"]
