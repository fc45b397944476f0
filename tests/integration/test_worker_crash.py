"""A ``modelport worker`` killed with SIGKILL again and again loses nothing and applies nothing
twice: events published while the worker is killed 10 times and restarted end up counted
exactly once each, and the dead letters hold exactly the poison events the test injected.

The consumer (``crash_consumer.py``) is loaded by the real worker command through
``--consumer``; its effect is exactly once through a processed-key marker set in the same Lua
script as the counter, like the built-in feature consumers. Some events are published twice
(as a relay that dies between publishing and deleting its outbox rows does).

The same holds for the built-in feature consumer on events taken in by the event service,
for two workers sharing a group when one is killed inside a batch, and a worker's metrics
say what it applied, retried and gave up on.

``MODELPORT_CRASH_EVENTS`` sets how many events (default 100,000; the feature consumer's test:
``MODELPORT_CRASH_FEATURE_EVENTS``, default 20,000); ``MODELPORT_CRASH_REPORT`` names a JSON
file for the first test's figures (``docs/benchmarks/worker_crash.md``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import random
import secrets
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import func, select

from modelport.services.relay import Relay
from modelport.settings import Settings
from modelport.stores.outbox import EVENTS as EVENTS_TOPIC
from modelport.stores.outbox import Outbox
from modelport.stores.sql import create_engine, migrate
from modelport.stores.sql.schema import processed_messages
from modelport.stores.streams import Outgoing
from modelport.stores.streams_redis import RedisStream
from modelport.wiring import build_services
from redis_process import free_port
from required_services import service_missing

from .crash_consumer import GROUP, busy, keys

pytestmark = pytest.mark.integration

REDIS_URL = os.environ.get("MODELPORT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
EVENTS = int(os.environ.get("MODELPORT_CRASH_EVENTS", "100000"))
REPORT = os.environ.get("MODELPORT_CRASH_REPORT")
KILLS = 10
POISON = 7
ITEMS = 500
FEATURE_EVENTS = int(os.environ.get("MODELPORT_CRASH_FEATURE_EVENTS", "20000"))
FEATURE_ITEMS = 40
HERE = Path(__file__).resolve().parent
T = TypeVar("T")


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        await client.ping()
    except Exception as exc:  # noqa: BLE001 - whatever the failure, the service is missing
        await client.aclose()
        service_missing("Redis", REDIS_URL, f"{type(exc).__name__}: {exc}")
    try:
        yield client
    finally:
        await client.aclose()


class Workers:
    """Starts ``modelport worker`` processes, one at a time, logging to one file."""

    def __init__(self, tmp_path: Path, prefix: str, *args: str, **env: str) -> None:
        self.log = tmp_path / "workers.log"
        self.args = args
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
            "MODELPORT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}",
            "MODELPORT_ARTIFACTS_URI": str(tmp_path / "artifacts"),
            "MODELPORT_CACHE_DIR": str(tmp_path / "cache"),
            "MODELPORT_REDIS_URL": REDIS_URL,
            "MODELPORT_STREAM_KEY_PREFIX": f"{prefix}:s",
            "MODELPORT_FEATURE_KEY_PREFIX": f"{prefix}:f",
            "MODELPORT_LOG_LEVEL": "WARNING",
            "MODELPORT_WORKER_BATCH_SIZE": "500",
            "MODELPORT_WORKER_MAX_ATTEMPTS": "3",
            "MODELPORT_WORKER_BACKOFF_BASE_S": "0.01",
            "MODELPORT_WORKER_BACKOFF_MAX_S": "0.05",
            "MODELPORT_WORKER_CLAIM_IDLE_S": "2",
            **env,
        }

    async def start(self) -> asyncio.subprocess.Process:
        with self.log.open("ab") as log:
            return await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "modelport",
                "worker",
                *self.args,
                env=self.env,
                stdout=log,
                stderr=log,
            )

    def tail(self) -> str:
        return self.log.read_text()[-3000:] if self.log.exists() else ""

    async def kill_while_working(
        self,
        chunks: Sequence[T],
        publish: Callable[[T], Awaitable[object]],
        applied: Callable[[], Awaitable[int]],
        lag: Callable[[], Awaitable[int]],
        rng: random.Random,
    ) -> list[int]:
        """Per chunk but the last: publish it, start a worker, SIGKILL it once it has applied
        something new (after a random moment more). Returns the lag at each kill."""
        lags = []
        for chunk in chunks[:-1]:
            await publish(chunk)
            before = await applied()
            worker = await self.start()
            deadline = time.monotonic() + 30
            while await applied() == before:
                assert worker.returncode is None, f"the worker exited:\n{self.tail()}"
                assert time.monotonic() < deadline, f"no progress:\n{self.tail()}"
                await asyncio.sleep(0.02)
            await asyncio.sleep(rng.uniform(0.0, 0.3))
            lags.append(await lag())
            worker.send_signal(signal.SIGKILL)
            await worker.wait()
        await publish(chunks[-1])
        return lags

    async def drain(self, lag: Callable[[], Awaitable[int]]) -> None:
        """Run one worker until nothing is left to apply, then stop it with SIGTERM."""
        last = await self.start()
        try:
            deadline = time.monotonic() + 60
            while await lag() > 0:
                assert last.returncode is None, f"the worker exited:\n{self.tail()}"
                assert time.monotonic() < deadline, f"not drained:\n{self.tail()}"
                await asyncio.sleep(0.05)
            # SIGTERM: the worker finishes what it holds and exits cleanly.
            last.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(last.wait(), 15) == 0, self.tail()
        finally:
            if last.returncode is None:
                last.kill()
                await last.wait()


async def test_a_worker_killed_ten_times_loses_nothing_and_applies_nothing_twice(
    redis: Redis, tmp_path: Path
) -> None:
    started = time.monotonic()
    rng = random.Random(15)
    topic = f"crash{secrets.token_hex(4)}"
    prefix = f"mp:test:crash:{secrets.token_hex(4)}"
    tenant = f"acme-{secrets.token_hex(4)}"
    processed, counters, absorbed, _ = keys(prefix)
    stream = RedisStream(redis, prefix=f"{prefix}:s")
    workers = Workers(
        tmp_path,
        prefix,
        "--no-builtin",
        "--consumer",
        "crash_consumer:make",
        CRASH_TEST_TOPIC=topic,
        CRASH_TEST_PREFIX=prefix,
    )

    poison = set(rng.sample(range(EVENTS), POISON))
    events = [
        Outgoing(tenant, f"e{i}", {"poison": True} if i in poison else {"item": i % ITEMS})
        for i in range(EVENTS)
    ]
    # ~1 % are published a second time, as a relay that died before deleting its rows would.
    again = [events[i] for i in rng.sample(range(EVENTS), EVENTS // 100)]
    chunks = [events[i :: KILLS + 1] for i in range(KILLS + 1)]
    chunks[-1] = chunks[-1] + again

    async def publish(chunk: list[Outgoing]) -> None:
        await stream.publish(topic, chunk)

    async def applied() -> int:
        return int(await redis.hlen(processed))

    async def lag() -> int:
        return await stream.lag(topic, GROUP)

    try:
        lag_at_kills = await workers.kill_while_working(chunks, publish, applied, lag, rng)
        await workers.drain(lag)

        expected = collections.Counter(str(i % ITEMS) for i in range(EVENTS) if i not in poison)
        counted = {item: int(n) for item, n in (await redis.hgetall(counters)).items()}
        assert counted == dict(expected), "lost or double-counted events"
        assert await applied() == EVENTS - POISON
        dead = await stream.dead_letters(tenant, topic, GROUP, 100)
        assert sorted(d.key for d in dead) == sorted(f"e{i}" for i in poison)
        assert all(d.error.startswith("ValueError: poison event") for d in dead)
        # The kills hit workers with work in hand, and the redeliveries they caused (with the
        # events published twice) were absorbed, not applied again.
        assert sum(lag > 0 for lag in lag_at_kills) >= KILLS // 2, lag_at_kills
        redeliveries = int(await redis.get(absorbed) or 0)
        assert redeliveries >= len(again)
        elapsed = time.monotonic() - started
        assert elapsed < 90
        if REPORT:
            _report(
                {
                    "events": EVENTS,
                    "published_twice": len(again),
                    "poison": POISON,
                    "kills": KILLS,
                    "unacknowledged_at_each_kill": lag_at_kills,
                    "redeliveries_absorbed": redeliveries,
                    "dead_letters": len(dead),
                    "seconds": round(elapsed, 1),
                }
            )
    finally:
        with contextlib.suppress(Exception):
            await _forget(redis, prefix)


async def _forget(redis: Redis, prefix: str) -> None:
    async for key in redis.scan_iter(match=f"{prefix}:*", count=1000):
        await redis.delete(key)


def _report(figures: dict[str, object]) -> None:
    assert REPORT is not None
    Path(REPORT).write_text(json.dumps(figures, indent=2) + "\n")


async def test_the_feature_consumer_killed_ten_times_counts_every_event_once(
    redis: Redis, tmp_path: Path
) -> None:
    # The built-in consumer, on events taken in by the event service and relayed from the
    # outbox: item popularity's plain counts must equal the events, per item and type.
    rng = random.Random(16)
    prefix = f"mp:test:crash:{secrets.token_hex(4)}"
    tenant = f"acme-{secrets.token_hex(4)}"
    workers = Workers(tmp_path, prefix)
    # The test's own services: the same database, Redis and prefixes as the workers'.
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        **{
            k.removeprefix("MODELPORT_").lower(): v
            for k, v in workers.env.items()
            if k.startswith("MODELPORT_")
        },
    )
    services = await build_services(settings)
    engine = create_engine(settings.database_url.get_secret_value())
    relay = Relay(Outbox(engine), services.stream, batch_size=500, interval_s=0.1)
    now = time.time()
    kinds = [rng.choice(["view", "view", "view", "purchase"]) for _ in range(FEATURE_EVENTS)]
    items = [f"sku-{rng.randrange(FEATURE_ITEMS)}" for _ in range(FEATURE_EVENTS)]
    bodies = [
        {
            "event_id": f"ev-{i}",
            "type": kinds[i],
            "user_id": f"u{i % 97}",
            "session_id": f"s{i % 97}",
            "item_ids": [items[i]],
            "timestamp": now - 60 + i / FEATURE_EVENTS,
        }
        for i in range(FEATURE_EVENTS)
    ]
    chunks = [bodies[i :: KILLS + 1] for i in range(KILLS + 1)]

    async def publish(chunk: list[dict[str, object]]) -> None:
        for start in range(0, len(chunk), 1000):
            await services.events.ingest(tenant, {"events": chunk[start : start + 1000]})
        await relay.drain()

    async def applied() -> int:
        async with engine.connect() as conn:
            query = select(func.count()).select_from(processed_messages)
            return int((await conn.execute(query)).scalar_one())

    async def lag() -> int:
        return await services.stream.lag(EVENTS_TOPIC, "features")

    try:
        await workers.kill_while_working(chunks, publish, applied, lag, rng)
        await workers.drain(lag)
        assert await applied() == FEATURE_EVENTS
        names = sorted(set(items))
        got = await services.features.get_features(
            tenant,
            ["item_popularity:views_total", "item_popularity:purchases_total"],
            {"item": names},
        )
        counted = {
            r.key: (
                r.features["item_popularity:views_total"].value or 0,
                r.features["item_popularity:purchases_total"].value or 0,
            )
            for r in got
        }
        expected = {
            name: (
                sum(1 for k, i in zip(kinds, items, strict=True) if i == name and k == "view"),
                sum(1 for k, i in zip(kinds, items, strict=True) if i == name and k == "purchase"),
            )
            for name in names
        }
        assert counted == expected, "lost or double-counted events"
        assert await services.stream.dead_letters(tenant, None, None, 10) == []
    finally:
        await services.close()
        await engine.dispose()
        with contextlib.suppress(Exception):
            await _forget(redis, prefix)


async def test_workers_share_a_group_and_take_over_what_a_killed_one_held(
    redis: Redis, tmp_path: Path
) -> None:
    # Two workers apply one group side by side; one is killed mid-run, and the other takes
    # over what it held (after claim_idle_s) and finishes: every event counted once.
    topic = f"share{secrets.token_hex(4)}"
    prefix = f"mp:test:crash:{secrets.token_hex(4)}"
    tenant = f"acme-{secrets.token_hex(4)}"
    processed, counters, _, by_worker = keys(prefix)
    stream = RedisStream(redis, prefix=f"{prefix}:s")
    workers = Workers(
        tmp_path,
        prefix,
        "--no-builtin",
        "--consumer",
        "crash_consumer:make",
        CRASH_TEST_TOPIC=topic,
        CRASH_TEST_PREFIX=prefix,
        MODELPORT_WORKER_BATCH_SIZE="100",
        CRASH_TEST_DELAY_S="0.2",
    )
    # The schema first, as a deployment's `modelport migrate` does: two processes creating
    # a fresh SQLite schema at once would collide.
    await migrate(workers.env["MODELPORT_DATABASE_URL"])
    count = 3_000
    await stream.publish(
        topic, [Outgoing(tenant, f"e{i}", {"item": i % ITEMS}) for i in range(count)]
    )
    first, second = await workers.start(), await workers.start()
    try:
        deadline = time.monotonic() + 30
        while len(await redis.hkeys(by_worker)) < 2:
            assert first.returncode is None and second.returncode is None, workers.tail()
            assert time.monotonic() < deadline, f"not both working:\n{workers.tail()}"
            await asyncio.sleep(0.02)
        # Killed inside a batch: its consumer sleeps 0.2 s in each, before applying it.
        while not await redis.exists(busy(prefix, first.pid)):
            assert time.monotonic() < deadline, workers.tail()
            await asyncio.sleep(0.005)
        first.send_signal(signal.SIGKILL)
        await first.wait()
        held = await redis.xpending(stream.topic_key(topic), GROUP)
        first_name = f"{socket.gethostname()}-{first.pid}"
        assert any(c["name"] == first_name and int(c["pending"]) > 0 for c in held["consumers"]), (
            held
        )
        deadline = time.monotonic() + 60
        while await stream.lag(topic, GROUP) > 0:
            assert second.returncode is None, workers.tail()
            assert time.monotonic() < deadline, f"not drained:\n{workers.tail()}"
            await asyncio.sleep(0.05)
        applied_by = {pid: int(n) for pid, n in (await redis.hgetall(by_worker)).items()}
        counted = {item: int(n) for item, n in (await redis.hgetall(counters)).items()}
        markers = int(await redis.hlen(processed))
    finally:
        for worker in (first, second):
            if worker.returncode is None:
                worker.kill()
                await worker.wait()
        with contextlib.suppress(Exception):
            await _forget(redis, prefix)
    assert counted == dict(collections.Counter(str(i % ITEMS) for i in range(count)))
    assert markers == sum(applied_by.values()) == count
    assert set(applied_by) == {str(first.pid), str(second.pid)}


async def test_a_worker_reports_what_it_applied_retried_and_gave_up_on(
    redis: Redis, tmp_path: Path
) -> None:
    topic = f"metrics{secrets.token_hex(4)}"
    prefix = f"mp:test:crash:{secrets.token_hex(4)}"
    tenant = f"acme-{secrets.token_hex(4)}"
    port = free_port()
    workers = Workers(
        tmp_path,
        prefix,
        "--no-builtin",
        "--consumer",
        "crash_consumer:make",
        CRASH_TEST_TOPIC=topic,
        CRASH_TEST_PREFIX=prefix,
        MODELPORT_WORKER_METRICS_PORT=str(port),
    )
    stream = RedisStream(redis, prefix=f"{prefix}:s")
    await stream.publish(
        topic,
        [
            Outgoing(tenant, "e0", {"item": 1}),
            Outgoing(tenant, "e1", {"poison": True}),
            Outgoing(tenant, "e2", {"item": 2}),
        ],
    )
    worker = await workers.start()
    labels = f'group="{GROUP}",topic="{topic}"'
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            deadline = time.monotonic() + 30
            while True:
                assert worker.returncode is None, workers.tail()
                assert time.monotonic() < deadline, workers.tail()
                with contextlib.suppress(httpx.TransportError):
                    text = (await http.get("/metrics")).text
                    # The lag is read every 5 s: wait until it saw the drained group.
                    if f"modelport_stream_lag{{{labels}}} 0.0" in text:
                        break
                await asyncio.sleep(0.1)
    finally:
        worker.send_signal(signal.SIGTERM)
        await asyncio.wait_for(worker.wait(), 15)
        with contextlib.suppress(Exception):
            await _forget(redis, prefix)
    assert f"modelport_stream_processed_total{{{labels}}} 2.0" in text
    assert f"modelport_stream_dead_letters_total{{{labels}}} 1.0" in text
    # The failed batch, then e1's first and second tries alone (max_attempts is 3).
    assert f"modelport_stream_retries_total{{{labels}}} 3.0" in text
    assert f"modelport_stream_freshness_seconds_count{{{labels}}} 2.0" in text
