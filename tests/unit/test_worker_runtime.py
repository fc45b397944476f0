"""The worker runtime over the embedded stream (SQLite in a temp folder): what an operator sees
when consumers succeed, fail for a while, meet a poison message, die mid-batch or are stopped."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from modelport.observability.metrics import Metrics
from modelport.stores.sql import create_engine, migrate
from modelport.stores.streams import Message, Outgoing
from modelport.stores.streams_sql import SqlStream
from modelport.workers import WorkerRuntime

TENANT = "acme"


class Counting:
    """Applies each message key once (a processed-key set, like the real consumers' markers);
    fails for keys in ``poison``, and for keys in ``flaky`` until they were tried that often."""

    def __init__(self, topic: str, group: str = "counting", shared: InFlight | None = None) -> None:
        self.topic = topic
        self.group = group
        self.applied: list[str] = []
        self.poison: set[str] = set()
        self.hang: set[str] = set()
        self.flaky: dict[str, int] = {}
        self.calls: list[list[str]] = []
        self.delay_s = 0.0
        self.shared = shared or InFlight()

    @property
    def in_flight(self) -> int:
        return self.shared.now

    async def handle(self, messages: list[Message]) -> None:
        self.calls.append([m.key for m in messages])
        self.shared.now += 1
        self.shared.most = max(self.shared.most, self.shared.now)
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            for m in messages:
                if m.key in self.flaky and self.flaky[m.key] > 0:
                    self.flaky[m.key] -= 1
                    raise ConnectionError(f"store blipped on {m.key}")
            if any(m.key in self.hang for m in messages):
                await asyncio.Event().wait()
            for m in messages:
                if m.key in self.poison:
                    raise ValueError(f"cannot apply {m.key}: price is not a number")
            self.applied.extend(m.key for m in messages if m.key not in self.applied)
        finally:
            self.shared.now -= 1


class InFlight:
    """Batches in a consumer's ``handle`` right now, and the most at once."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0


@pytest.fixture
async def stream(tmp_path: Path) -> AsyncIterator[SqlStream]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}"
    await migrate(url)
    engine = create_engine(url)
    try:
        yield SqlStream(engine, poll_s=0.01)
    finally:
        await engine.dispose()


@pytest.fixture
def topic() -> str:
    return f"t{secrets.token_hex(4)}"


def runtime(
    stream: SqlStream, *consumers: Counting, metrics: Metrics | None = None, **options: float
) -> WorkerRuntime:
    settings: dict[str, float] = {
        "batch_size": 10,
        "max_attempts": 3,
        "backoff_base_s": 0.001,
        "backoff_max_s": 0.01,
        "claim_idle_s": 60.0,
        "block_s": 0.02,
    }
    settings.update(options)
    return WorkerRuntime(
        stream,
        list(consumers),
        name="w1",
        concurrency=int(settings.pop("concurrency", 4)),
        batch_size=int(settings.pop("batch_size")),
        max_attempts=int(settings.pop("max_attempts")),
        metrics=metrics,
        **settings,
    )


async def publish(stream: SqlStream, topic: str, keys: list[str]) -> None:
    await stream.publish(topic, [Outgoing(TENANT, k, {"item": k}) for k in keys])


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_every_message_is_applied_and_acknowledged(stream: SqlStream, topic: str) -> None:
    consumer = Counting(topic)
    keys = [f"e{i}" for i in range(35)]
    await publish(stream, topic, keys)
    worker = runtime(stream, consumer)
    worker.start()
    try:
        await until(lambda: _lag_is(stream, consumer, 0))
    finally:
        await worker.close()
    assert consumer.applied == keys
    assert all(len(call) <= 10 for call in consumer.calls)
    assert await stream.dead_letters(TENANT, topic, None, 10) == []


async def test_a_poison_message_is_dead_lettered_and_its_batch_still_applies(
    stream: SqlStream, topic: str
) -> None:
    consumer = Counting(topic)
    consumer.poison = {"e3"}
    keys = [f"e{i}" for i in range(6)]
    await publish(stream, topic, keys)
    worker = runtime(stream, consumer)
    worker.start()
    try:
        await until(lambda: _lag_is(stream, consumer, 0))
    finally:
        await worker.close()
    assert sorted(consumer.applied) == sorted(set(keys) - {"e3"})
    [dead] = await stream.dead_letters(TENANT, topic, "counting", 10)
    assert (dead.key, dead.attempts) == ("e3", 3)
    assert dead.error == "ValueError: cannot apply e3: price is not a number"
    # The whole batch once, then e3 alone for each of its 3 attempts.
    assert consumer.calls.count(["e3"]) == 3


async def test_a_message_that_fails_for_a_while_is_retried_not_dead_lettered(
    stream: SqlStream, topic: str
) -> None:
    consumer = Counting(topic)
    consumer.flaky = {"e1": 3}  # the batch try and two tries alone fail; the third alone works
    await publish(stream, topic, ["e0", "e1", "e2"])
    worker = runtime(stream, consumer)
    worker.start()
    try:
        await until(lambda: _lag_is(stream, consumer, 0))
    finally:
        await worker.close()
    assert sorted(consumer.applied) == ["e0", "e1", "e2"]
    assert await stream.dead_letters(TENANT, topic, None, 10) == []


async def test_messages_a_dead_worker_left_pending_are_taken_over(
    stream: SqlStream, topic: str
) -> None:
    await publish(stream, topic, ["e0", "e1"])
    # A worker that read the batch and died before acknowledging it.
    taken = await stream.read(topic, "counting", "dead-worker", 10, 0)
    assert [m.key for m in taken] == ["e0", "e1"]
    consumer = Counting(topic)
    worker = runtime(stream, consumer, claim_idle_s=0.05)
    worker.start()
    try:
        await until(lambda: _lag_is(stream, consumer, 0))
    finally:
        await worker.close()
    assert consumer.applied == ["e0", "e1"]


async def test_stopping_finishes_the_batch_in_hand_and_reads_no_more(
    stream: SqlStream, topic: str
) -> None:
    consumer = Counting(topic)
    consumer.delay_s = 0.3
    await publish(stream, topic, [f"e{i}" for i in range(20)])
    worker = runtime(stream, consumer)
    worker.start()
    await until(lambda: _true(consumer.in_flight == 1))
    await worker.close()
    # The first batch was applied and acknowledged; the second was never read.
    assert consumer.applied == [f"e{i}" for i in range(10)]
    assert await stream.lag(topic, "counting") == 10
    assert await stream.read(topic, "counting", "w2", 20, 0) != []


async def test_a_stop_during_backoff_leaves_the_message_pending_not_dead(
    stream: SqlStream, topic: str
) -> None:
    consumer = Counting(topic)
    consumer.poison = {"e0"}
    await publish(stream, topic, ["e0"])
    worker = runtime(stream, consumer, max_attempts=5, backoff_base_s=30.0, backoff_max_s=30.0)
    worker.start()
    await until(lambda: _true(len(consumer.calls) == 1))
    started = time.monotonic()
    await worker.close()
    assert time.monotonic() - started < 5
    assert await stream.dead_letters(TENANT, topic, None, 10) == []
    assert await stream.lag(topic, "counting") == 1  # pending, for the next worker


async def test_consumers_share_a_bounded_number_of_batches_in_flight(
    stream: SqlStream, topic: str
) -> None:
    shared = InFlight()
    consumers = [Counting(topic, group=f"g{i}", shared=shared) for i in range(3)]
    for consumer in consumers:
        consumer.delay_s = 0.05
    await publish(stream, topic, [f"e{i}" for i in range(20)])
    worker = runtime(stream, *consumers, concurrency=1)
    worker.start()
    try:
        for consumer in consumers:
            await until(lambda c=consumer: _lag_is(stream, c, 0))  # type: ignore[misc]
    finally:
        await worker.close()
    assert shared.most == 1
    assert all(len(c.applied) == 20 for c in consumers)


def test_two_consumers_of_one_group_are_refused(stream: SqlStream, topic: str) -> None:
    with pytest.raises(ValueError, match="two consumers"):
        runtime(stream, Counting(topic), Counting(topic))


async def _lag_is(stream: SqlStream, consumer: Counting, value: int) -> bool:
    return await stream.lag(consumer.topic, consumer.group) == value


async def _true(value: bool) -> bool:
    return value


async def test_metrics_count_applied_retried_and_dead_messages_and_the_lag(
    stream: SqlStream, topic: str
) -> None:
    metrics = Metrics()
    consumer = Counting(topic)
    consumer.poison = {"e1"}
    await publish(stream, topic, ["e0", "e1", "e2"])
    worker = runtime(stream, consumer, metrics=metrics, lag_interval_s=0.01)
    worker.start()
    try:
        await until(lambda: _lag_is(stream, consumer, 0))
        labels = {"topic": topic, "group": "counting"}
        # The reporter reads the lag on its own clock: wait for it to see the drained group.
        await until(lambda: _true(_sample(metrics, "modelport_stream_lag", labels) == 0.0))
    finally:
        await worker.close()
    assert _sample(metrics, "modelport_stream_processed_total", labels) == 2
    assert _sample(metrics, "modelport_stream_dead_letters_total", labels) == 1
    # The batch, then e1's first and second tries alone; its third went to the dead letters.
    assert _sample(metrics, "modelport_stream_retries_total", labels) == 3
    assert _sample(metrics, "modelport_stream_freshness_seconds_count", labels) == 2
    assert (
        _sample(metrics, "modelport_stream_freshness_seconds_bucket", {**labels, "le": "60.0"}) == 2
    )


def _sample(metrics: Metrics, name: str, labels: dict[str, str]) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


async def test_freshness_runs_from_when_the_event_was_accepted(
    stream: SqlStream, topic: str
) -> None:
    # The event intake stamps accepted_at; the wait in the outbox and the stream counts.
    metrics = Metrics()
    consumer = Counting(topic)
    accepted = time.time() - 3.0
    await stream.publish(topic, [Outgoing(TENANT, "e0", {"item": "e0", "accepted_at": accepted})])
    worker = runtime(stream, consumer, metrics=metrics)
    worker.start()
    try:
        await until(lambda: _lag_is(stream, consumer, 0))
    finally:
        await worker.close()
    labels = {"topic": topic, "group": "counting"}
    bucket = "modelport_stream_freshness_seconds_bucket"
    assert _sample(metrics, bucket, {**labels, "le": "2.5"}) == 0
    assert _sample(metrics, bucket, {**labels, "le": "5.0"}) == 1


async def test_a_consumer_that_hangs_is_given_up_on_after_the_claim_idle_time(
    stream: SqlStream, topic: str
) -> None:
    consumer = Counting(topic)
    consumer.hang = {"e1"}
    await publish(stream, topic, ["e0", "e1", "e2"])
    worker = runtime(stream, consumer, max_attempts=2, claim_idle_s=0.2)
    worker.start()
    try:
        await until(lambda: _lag_is(stream, consumer, 0))
    finally:
        await worker.close()
    assert sorted(consumer.applied) == ["e0", "e2"]
    [dead] = await stream.dead_letters(TENANT, topic, None, 10)
    assert dead.key == "e1"
    assert dead.error == "ConsumerTimeout: counting did not apply 1 message(s) within 0.2 s"
