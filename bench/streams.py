"""Stream backends and the relay, without a server: messages per second each can move.

    .venv/bin/python bench/streams.py                 # SQLite, PostgreSQL and Redis
    .venv/bin/python bench/streams.py --n 5000 --backends sqlite

For each backend, in one process: ``publish`` N messages (batches of 500, an event-sized JSON
payload), one group ``read`` + ``ack`` them all (batches of 500), then the relay moves N outbox
rows (committed 100 per transaction) to the stream (``Relay.drain``, batches of 500). The
outbox is in SQLite for the Redis line (as without ``MODELPORT_DATABASE_URL``) and in the
backend's own database otherwise. Prints one line per backend.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import tempfile
import time
from pathlib import Path

import asyncpg
from sqlalchemy import delete
from sqlalchemy.engine import make_url

from modelport.services.relay import Relay
from modelport.stores.outbox import Outbox, enqueue
from modelport.stores.sql import create_engine, migrate
from modelport.stores.sql.schema import outbox
from modelport.stores.streams import Outgoing, Stream
from modelport.stores.streams_redis import RedisStream
from modelport.stores.streams_sql import SqlStream

PAYLOAD = {
    "type": "view",
    "user_id": "u-1234",
    "item_ids": ["sku-001", "sku-002"],
    "timestamp": 1.76e9,
    "properties": {"query": "red running shoes", "position": 3},
}


async def measure(name: str, url: str, redis_url: str | None, n: int) -> None:
    await migrate(url)
    engine = create_engine(url)
    prefix = f"mp-bench-{secrets.token_hex(3)}:s"
    stream: Stream = (
        RedisStream.from_url(redis_url, prefix=prefix) if redis_url else SqlStream(engine)
    )
    topic = f"bench{secrets.token_hex(3)}"
    messages = [Outgoing("acme", f"k{i}", PAYLOAD) for i in range(n)]
    try:
        started = time.perf_counter()
        for i in range(0, n, 500):
            await stream.publish(topic, messages[i : i + 500])
        publish = n / (time.perf_counter() - started)

        started, read = time.perf_counter(), 0
        while read < n:
            batch = await stream.read(topic, "bench", "w1", 500, 0)
            await stream.ack(topic, "bench", [m.id for m in batch])
            read += len(batch)
        consume = n / (time.perf_counter() - started)

        async with engine.begin() as conn:
            await conn.execute(delete(outbox))
        for i in range(0, n, 100):
            async with engine.begin() as conn:
                await enqueue(conn, "acme", topic, [(f"r{j}", PAYLOAD) for j in range(i, i + 100)])
        started = time.perf_counter()
        moved = await Relay(Outbox(engine), stream, batch_size=500, interval_s=1).drain()
        relay = moved / (time.perf_counter() - started)
        print(
            f"{name:10s} n={n}: publish {publish:8.0f}/s   read+ack {consume:8.0f}/s   "
            f"relay outbox->stream {relay:8.0f}/s"
        )
    finally:
        if isinstance(stream, RedisStream):
            client = stream._redis  # the bench cleans up the keys it wrote
            keys = [key async for key in client.scan_iter(f"{prefix}:*")]
            if keys:
                await client.delete(*keys)
        await stream.close()
        await engine.dispose()


async def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--n", type=int, default=20_000)
    args.add_argument("--backends", default="sqlite,postgres,redis")
    args.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    args.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    options = args.parse_args()
    backends = options.backends.split(",")
    with tempfile.TemporaryDirectory() as folder:
        sqlite = f"sqlite+aiosqlite:///{Path(folder) / 'bench.db'}"
        if "sqlite" in backends:
            await measure("sqlite", sqlite, None, options.n)
        if "postgres" in backends:
            database = f"modelport_bench_{secrets.token_hex(4)}"
            admin = await asyncpg.connect(options.postgres)
            await admin.execute(f'CREATE DATABASE "{database}"')
            try:
                url = make_url(options.postgres).set(database=database)
                await measure("postgres", url.render_as_string(False), None, options.n)
            finally:
                await admin.execute(f'DROP DATABASE "{database}" WITH (FORCE)')
                await admin.close()
        if "redis" in backends:
            await measure("redis", sqlite, options.redis, options.n)


if __name__ == "__main__":
    asyncio.run(main())
