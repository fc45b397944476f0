"""The stream contract, run against every backend: the embedded stream on SQLite and on a real
PostgreSQL, and Redis Streams on a real Redis. Each test has topics and tenants of its own."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeout

from modelport.stores.sql import create_engine
from modelport.stores.streams import Message, Outgoing, Stream
from modelport.stores.streams_redis import RedisStream
from modelport.stores.streams_sql import SqlStream
from redis_process import free_port, redis_server
from required_services import service_missing

from .conftest import postgres_database, sqlite_database

REDIS_URL = os.environ.get("MODELPORT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

# --------------------------------------------------------------------------- backends


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return sqlite_database(tmp_path_factory, "streams")


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with postgres_database("streams") as url:
        yield url


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.integration]),
        pytest.param("redis", marks=pytest.mark.integration),
    ]
)
def kind(request: pytest.FixtureRequest) -> tuple[str, str]:
    """The backend, and the database an embedded stream lives in (resolved outside the loop)."""
    if request.param == "redis":
        return "redis", REDIS_URL
    return request.param, str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
async def stream(kind: tuple[str, str]) -> AsyncIterator[Stream]:
    name, url = kind
    if name == "redis":
        async with redis_stream(url) as opened:
            yield opened
        return
    engine = create_engine(url)
    opened = SqlStream(engine, poll_s=0.02)
    try:
        yield opened
    finally:
        await opened.close()
        await engine.dispose()


@asynccontextmanager
async def redis_stream(url: str) -> AsyncIterator[RedisStream]:
    """Keys under a prefix of this test's own, deleted afterwards."""
    client = Redis.from_url(url, socket_timeout=2)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        await client.aclose()
        service_missing("Redis", url, exc)
    prefix = f"mp-test-{secrets.token_hex(4)}:s"
    opened = RedisStream.from_url(url, prefix=prefix)
    try:
        yield opened
    finally:
        await opened.close()
        keys = [key async for key in client.scan_iter(f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture
def topic() -> str:
    return f"t{secrets.token_hex(6)}"


@pytest.fixture
def tenant() -> str:
    return f"acme-{secrets.token_hex(4)}"


def outgoing(tenant: str, *keys: str) -> list[Outgoing]:
    return [Outgoing(tenant, key, {"key": key, "n": i}) for i, key in enumerate(keys)]


def keys_of(messages: list[Message]) -> list[str]:
    return [m.key for m in messages]


async def read_all(stream: Stream, topic: str, group: str, consumer: str) -> list[Message]:
    """Everything the group has not delivered yet, batch by batch."""
    out: list[Message] = []
    while batch := await stream.read(topic, group, consumer, 4, 0):
        out.extend(batch)
    return out


# --------------------------------------------------------------------------- delivery


async def test_a_group_reads_messages_in_publish_order_with_their_content(
    stream: Stream, topic: str, tenant: str
) -> None:
    await stream.publish(topic, outgoing(tenant, "a", "b"))
    await stream.publish(topic, outgoing(tenant, "c", "d", "e"))

    messages = await stream.read(topic, "features", "w1", 10, 0)

    assert keys_of(messages) == ["a", "b", "c", "d", "e"]
    first = messages[0]
    assert (first.tenant, first.payload, first.attempts) == (tenant, {"key": "a", "n": 0}, 1)
    assert first.published_at.tzinfo is not None
    assert len({m.id for m in messages}) == 5
    assert await stream.read(topic, "features", "w1", 10, 0) == []


async def test_read_returns_at_most_count_and_continues_where_it_stopped(
    stream: Stream, topic: str, tenant: str
) -> None:
    await stream.publish(topic, outgoing(tenant, *"abcdefg"))

    first = await stream.read(topic, "g", "w1", 3, 0)
    second = await stream.read(topic, "g", "w1", 3, 0)
    third = await stream.read(topic, "g", "w1", 3, 0)

    assert [keys_of(first), keys_of(second), keys_of(third)] == [
        ["a", "b", "c"],
        ["d", "e", "f"],
        ["g"],
    ]


async def test_an_empty_read_waits_block_s_and_a_publish_wakes_it(
    stream: Stream, topic: str, tenant: str
) -> None:
    started = time.monotonic()
    assert await stream.read(topic, "g", "w1", 10, 0.2) == []
    assert time.monotonic() - started >= 0.19

    waiting = asyncio.create_task(stream.read(topic, "g", "w1", 10, 10.0))
    await asyncio.sleep(0.1)
    started = time.monotonic()
    await stream.publish(topic, outgoing(tenant, "late"))
    assert keys_of(await asyncio.wait_for(waiting, 5)) == ["late"]
    assert time.monotonic() - started < 2.0


async def test_a_group_delivers_each_message_to_one_of_its_consumers(
    stream: Stream, topic: str, tenant: str
) -> None:
    keys = [f"k{i:03d}" for i in range(60)]
    await stream.publish(topic, outgoing(tenant, *keys))

    async def consume(name: str) -> list[str]:
        got: list[str] = []
        while batch := await stream.read(topic, "g", name, 5, 0):
            got.extend(keys_of(batch))
            await asyncio.sleep(0)
        return got

    shares = await asyncio.gather(*(consume(f"w{i}") for i in range(4)))

    delivered = [key for share in shares for key in share]
    assert sorted(delivered) == keys  # all of them, none twice
    for share in shares:
        assert share == sorted(share)  # each consumer sees its share in order


async def test_a_reader_misses_nothing_that_publishers_commit_concurrently(
    stream: Stream, topic: str, tenant: str
) -> None:
    # On PostgreSQL a message id is drawn before its transaction commits: publishers that
    # committed out of id order would put a message behind a position a group already passed.
    keys = [f"p{p}-{b}-{i}" for p in range(6) for b in range(15) for i in range(4)]
    done = asyncio.Event()

    async def publisher(p: int) -> None:
        for b in range(15):
            await stream.publish(topic, outgoing(tenant, *(f"p{p}-{b}-{i}" for i in range(4))))
            await asyncio.sleep(0)

    async def reader() -> list[str]:
        got: list[str] = []
        while not done.is_set():
            got.extend(keys_of(await stream.read(topic, "g", "w1", 50, 0.01)))
        return got + keys_of(await read_all(stream, topic, "g", "w1"))

    reading = asyncio.create_task(reader())
    await asyncio.gather(*(publisher(p) for p in range(6)))
    done.set()

    assert sorted(await reading) == sorted(keys)


async def test_every_group_gets_every_message(stream: Stream, topic: str, tenant: str) -> None:
    await stream.publish(topic, outgoing(tenant, "a", "b", "c"))

    features = await read_all(stream, topic, "features", "w1")
    counters = await read_all(stream, topic, "counters", "w1")

    assert keys_of(features) == keys_of(counters) == ["a", "b", "c"]


async def test_a_group_created_late_starts_at_the_topic_start(
    stream: Stream, topic: str, tenant: str
) -> None:
    await stream.publish(topic, outgoing(tenant, "a"))
    assert keys_of(await read_all(stream, topic, "early", "w1")) == ["a"]
    await stream.publish(topic, outgoing(tenant, "b"))

    assert keys_of(await read_all(stream, topic, "late", "w1")) == ["a", "b"]


async def test_topics_are_separate(stream: Stream, topic: str, tenant: str) -> None:
    other = f"{topic}x"
    await stream.publish(topic, outgoing(tenant, "mine"))
    await stream.publish(other, outgoing(tenant, "theirs"))

    assert keys_of(await read_all(stream, topic, "g", "w1")) == ["mine"]
    assert keys_of(await read_all(stream, other, "g", "w1")) == ["theirs"]


# --------------------------------------------------------------------------- pending


async def test_a_follower_reads_after_its_own_position_without_a_group(
    stream: Stream, topic: str, tenant: str
) -> None:
    assert await stream.last_id(topic) is None
    assert await stream.read_after(topic, None, 10, 0) == []
    await stream.publish(topic, outgoing(tenant, "a", "b", "c"))

    first = await stream.read_after(topic, None, 2, 0)
    rest = await stream.read_after(topic, first[-1].id, 10, 0)
    again = await stream.read_after(topic, None, 10, 0)  # nothing was consumed

    assert keys_of(first) == ["a", "b"] and keys_of(rest) == ["c"]
    assert keys_of(again) == ["a", "b", "c"]
    assert await stream.last_id(topic) == rest[-1].id
    assert await stream.read_after(topic, rest[-1].id, 10, 0) == []
    # Following creates no group: what groups read is untouched.
    assert keys_of(await read_all(stream, topic, "features", "w1")) == ["a", "b", "c"]


async def test_a_waiting_follower_is_woken_by_a_publish(
    stream: Stream, topic: str, tenant: str
) -> None:
    await stream.publish(topic, outgoing(tenant, "a"))
    position = await stream.last_id(topic)
    waiting = asyncio.create_task(stream.read_after(topic, position, 10, 5.0))
    await asyncio.sleep(0.1)
    started = time.monotonic()
    await stream.publish(topic, outgoing(tenant, "b"))

    assert keys_of(await waiting) == ["b"]
    assert time.monotonic() - started < 2.0


async def test_ack_removes_messages_from_pending(stream: Stream, topic: str, tenant: str) -> None:
    await stream.publish(topic, outgoing(tenant, "a", "b", "c"))
    messages = await stream.read(topic, "g", "w1", 10, 0)
    assert await stream.lag(topic, "g") == 3

    await stream.ack(topic, "g", [messages[0].id, messages[2].id])

    assert await stream.lag(topic, "g") == 1
    await asyncio.sleep(0.05)
    reclaimed = await stream.claim_stale(topic, "g", "w2", 0.01, 10)
    assert keys_of(reclaimed) == ["b"]


async def test_claim_stale_hands_an_idle_consumers_messages_to_another_counting_attempts(
    stream: Stream, topic: str, tenant: str
) -> None:
    await stream.publish(topic, outgoing(tenant, "a", "b", "c"))
    await stream.read(topic, "g", "dead-worker", 10, 0)

    assert await stream.claim_stale(topic, "g", "w2", 60.0, 10) == []  # not idle long enough
    await asyncio.sleep(0.6)
    claimed = await stream.claim_stale(topic, "g", "w2", 0.5, 2)
    rest = await stream.claim_stale(topic, "g", "w2", 0.5, 10)

    assert keys_of(claimed) == ["a", "b"]
    assert keys_of(rest) == ["c"]
    assert {m.attempts for m in claimed + rest} == {2}
    assert claimed[0].payload == {"key": "a", "n": 0}
    # Just claimed: not idle any more, so a third consumer gets nothing.
    assert await stream.claim_stale(topic, "g", "w3", 0.5, 10) == []

    await asyncio.sleep(0.6)
    again = await stream.claim_stale(topic, "g", "w3", 0.5, 10)
    assert [(m.key, m.attempts) for m in again] == [("a", 3), ("b", 3), ("c", 3)]
    await stream.ack(topic, "g", [m.id for m in again])
    assert await stream.lag(topic, "g") == 0


async def test_concurrent_claimers_never_share_a_message(
    stream: Stream, topic: str, tenant: str
) -> None:
    keys = [f"k{i:02d}" for i in range(30)]
    await stream.publish(topic, outgoing(tenant, *keys))
    assert len(await read_all(stream, topic, "g", "dead-worker")) == 30
    await asyncio.sleep(0.6)

    shares = await asyncio.gather(
        *(stream.claim_stale(topic, "g", f"w{i}", 0.5, 10) for i in range(3))
    )
    # What they left: on SQLite they see the same candidates and the first one takes them.
    rest = await stream.claim_stale(topic, "g", "w9", 0.5, 30)

    claimed = [key for share in [*shares, rest] for key in keys_of(share)]
    assert sorted(claimed) == keys


# --------------------------------------------------------------------------- dead letters


async def test_a_dead_letter_keeps_the_message_and_its_last_error(
    stream: Stream, topic: str, tenant: str
) -> None:
    await stream.publish(topic, outgoing(tenant, "good", "poison"))
    good, poison = await stream.read(topic, "g", "w1", 10, 0)
    await stream.ack(topic, "g", [good.id])

    await stream.dead_letter(topic, "g", poison, "ValueError: no such item")

    assert await stream.lag(topic, "g") == 0  # no longer pending
    [letter] = await stream.dead_letters(tenant, topic, "g", 10)
    assert (letter.topic, letter.group, letter.tenant, letter.key) == (topic, "g", tenant, "poison")
    assert (letter.payload, letter.attempts) == ({"key": "poison", "n": 1}, 1)
    assert letter.error == "ValueError: no such item"
    assert letter.failed_at.tzinfo is not None
    assert await stream.dead_letters(tenant, topic, "other-group", 10) == []
    assert await stream.dead_letters(tenant, None, None, 10) == [letter]
    assert await stream.claim_stale(topic, "g", "w2", 0.0, 10) == []


async def test_dead_letters_list_in_failure_order_up_to_limit(
    stream: Stream, topic: str, tenant: str
) -> None:
    await stream.publish(topic, outgoing(tenant, "a", "b", "c"))
    for message in await stream.read(topic, "g", "w1", 10, 0):
        await stream.dead_letter(topic, "g", message, f"failed {message.key}")

    assert [d.key for d in await stream.dead_letters(tenant, topic, None, 2)] == ["a", "b"]
    assert [d.error for d in await stream.dead_letters(tenant, None, "g", 10)] == [
        "failed a",
        "failed b",
        "failed c",
    ]


async def test_replay_publishes_dead_letters_again_and_removes_them(
    stream: Stream, topic: str, tenant: str
) -> None:
    await stream.publish(topic, outgoing(tenant, "a", "b"))
    for message in await stream.read(topic, "g", "w1", 10, 0):
        await stream.dead_letter(topic, "g", message, "boom")
    letters = await stream.dead_letters(tenant, topic, "g", 10)

    assert await stream.replay(tenant, [letters[0].id, "no-such-id"]) == 1

    [again] = await stream.read(topic, "g", "w1", 10, 0)
    assert (again.key, again.payload, again.tenant, again.attempts) == (
        "a",
        {"key": "a", "n": 0},
        tenant,
        1,
    )
    assert [d.key for d in await stream.dead_letters(tenant, topic, "g", 10)] == ["b"]
    assert await stream.replay(tenant, [letters[0].id]) == 0  # replayed once only


async def test_drop_deletes_dead_letters(stream: Stream, topic: str, tenant: str) -> None:
    await stream.publish(topic, outgoing(tenant, "a", "b"))
    for message in await stream.read(topic, "g", "w1", 10, 0):
        await stream.dead_letter(topic, "g", message, "boom")
    letters = await stream.dead_letters(tenant, topic, "g", 10)

    assert await stream.drop(tenant, [d.id for d in letters]) == 2
    assert await stream.dead_letters(tenant, topic, "g", 10) == []
    assert await stream.drop(tenant, [d.id for d in letters]) == 0
    assert await stream.read(topic, "g", "w1", 10, 0) == []


async def test_another_tenants_dead_letters_are_invisible_and_untouchable(
    stream: Stream, topic: str, tenant: str
) -> None:
    other = f"{tenant}-other"
    await stream.publish(topic, outgoing(tenant, "mine"))
    await stream.publish(topic, outgoing(other, "theirs"))
    for message in await stream.read(topic, "g", "w1", 10, 0):
        await stream.dead_letter(topic, "g", message, "boom")
    [mine] = await stream.dead_letters(tenant, None, None, 10)
    [theirs] = await stream.dead_letters(other, None, None, 10)

    assert (mine.key, theirs.key) == ("mine", "theirs")
    assert await stream.replay(other, [mine.id]) == 0
    assert await stream.drop(other, [mine.id]) == 0
    assert await stream.dead_letters(tenant, None, None, 10) == [mine]
    assert await stream.read(topic, "g", "w1", 10, 0) == []


# --------------------------------------------------------------------------- lag


async def test_lag_counts_unread_and_unacknowledged_messages(
    stream: Stream, topic: str, tenant: str
) -> None:
    assert await stream.lag(topic, "g") == 0
    await stream.publish(topic, outgoing(tenant, "a", "b", "c", "d"))
    assert await stream.lag(topic, "g") == 4  # the group does not exist yet: all unread

    read = await stream.read(topic, "g", "w1", 3, 0)
    assert await stream.lag(topic, "g") == 4  # 3 pending + 1 unread
    await stream.ack(topic, "g", [m.id for m in read])
    assert await stream.lag(topic, "g") == 1
    assert await stream.lag(topic, "other") == 4

    await stream.ack(topic, "g", [m.id for m in await stream.read(topic, "g", "w1", 3, 0)])
    assert await stream.lag(topic, "g") == 0


# --------------------------------------------------------------------------- retention


async def test_trim_deletes_only_what_every_group_has_acknowledged(
    stream: Stream, topic: str, tenant: str
) -> None:
    await stream.publish(topic, outgoing(tenant, "a", "b", "c"))
    assert await stream.trim(topic) == 0  # no group yet: all of it is still to be read
    first = await stream.read(topic, "g1", "w1", 10, 0)
    await stream.ack(topic, "g1", [first[0].id, first[1].id])  # "c" stays pending
    [a] = await stream.read(topic, "g2", "w1", 1, 0)
    await stream.ack(topic, "g2", [a.id])  # "b" and "c" not read yet

    assert await stream.trim(topic) == 1  # "a" only

    assert await stream.lag(topic, "g1") == 1
    assert await stream.lag(topic, "g2") == 2
    late = await read_all(stream, topic, "late", "w1")
    assert keys_of(late) == ["b", "c"]
    await asyncio.sleep(0.05)
    assert keys_of(await stream.claim_stale(topic, "g1", "w2", 0.01, 10)) == ["c"]

    for group, ids in (
        ("g1", [first[2].id]),
        ("g2", [m.id for m in await read_all(stream, topic, "g2", "w1")]),
        ("late", [m.id for m in late]),
    ):
        await stream.ack(topic, group, ids)
    await stream.publish(topic, outgoing(tenant, "d"))
    assert await stream.trim(topic) == 2  # "b" and "c"; "d" is still to be read
    assert await stream.lag(topic, "g1") == 1
    assert keys_of(await read_all(stream, topic, "g2", "w1")) == ["d"]
    assert keys_of(await read_all(stream, topic, "another", "w1")) == ["d"]


# --------------------------------------------------------------------------- Redis only


@pytest.mark.integration
async def test_a_hung_redis_fails_commands_after_the_timeout_instead_of_holding_them() -> None:
    port = free_port()
    with redis_server(port) as process:
        stream = RedisStream.from_url(f"redis://127.0.0.1:{port}/0", timeout_s=0.5)
        try:
            await stream.publish("t", outgoing("acme", "a"))
            assert keys_of(await stream.read("t", "g", "w1", 10, 0)) == ["a"]
            started = time.monotonic()
            # A wait longer than the socket allows is shortened rather than failed.
            assert await stream.read("t", "g", "w1", 10, 5.0) == []
            assert time.monotonic() - started < 2.0

            process.send_signal(signal.SIGSTOP)
            try:
                started = time.monotonic()
                with pytest.raises(RedisTimeout):
                    await stream.publish("t", outgoing("acme", "b"))
                assert time.monotonic() - started < 10.0
            finally:
                process.send_signal(signal.SIGCONT)
        finally:
            await stream.close()
