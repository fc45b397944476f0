"""``modelport events dlq list|replay|drop`` on both streams (the embedded SQL one, on SQLite
and PostgreSQL, and Redis): an operator sees, replays and drops one tenant's dead letters, and
never another's."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TypeVar

import pytest
from redis import Redis
from typer.testing import CliRunner

from modelport.cli import app
from modelport.stores.sql import create_engine, migrate
from modelport.stores.streams import Outgoing, Stream
from modelport.stores.streams_redis import RedisStream
from modelport.stores.streams_sql import SqlStream
from required_services import service_missing

from .conftest import registry_url

pytestmark = pytest.mark.integration

REDIS_URL = os.environ.get("MODELPORT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
TOPIC = "events"
GROUP = "features"
T = TypeVar("T")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "redis"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    with ExitStack() as stack:
        backend = "postgres" if request.param == "postgres" else "sqlite"
        database = registry_url(backend, tmp_path, stack, request)
        asyncio.run(migrate(database))
        yield from _env(request.param, database)


def _env(kind: str, database: str) -> Iterator[dict[str, str]]:
    values = {"MODELPORT_DATABASE_URL": database, "MODELPORT_LOG_LEVEL": "WARNING"}
    if kind != "redis":
        yield values
        return
    prefix = f"mp:test:dlq:{secrets.token_hex(4)}"
    client = Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except Exception as exc:  # noqa: BLE001 - whatever the failure, the service is missing
        service_missing("Redis", REDIS_URL, f"{type(exc).__name__}: {exc}")
    try:
        yield {**values, "MODELPORT_REDIS_URL": REDIS_URL, "MODELPORT_STREAM_KEY_PREFIX": prefix}
    finally:
        for key in client.scan_iter(match=f"{prefix}:*"):
            client.delete(key)
        client.close()


async def _with_stream(env: dict[str, str], work: Callable[[Stream], Awaitable[T]]) -> T:
    engine = create_engine(env["MODELPORT_DATABASE_URL"])
    stream: Stream = (
        RedisStream.from_url(REDIS_URL, prefix=env["MODELPORT_STREAM_KEY_PREFIX"])
        if "MODELPORT_REDIS_URL" in env
        else SqlStream(engine)
    )
    try:
        return await work(stream)
    finally:
        await stream.close()
        await engine.dispose()


def dead_letter(env: dict[str, str], tenant: str, *keys: str) -> None:
    """Publish ``keys`` for ``tenant`` and give each up, as a worker does at its last attempt."""

    async def work(stream: Stream) -> None:
        await stream.publish(TOPIC, [Outgoing(tenant, k, {"item": k}) for k in keys])
        for message in await stream.read(TOPIC, GROUP, "w1", 100, 0):
            await stream.dead_letter(TOPIC, GROUP, message, f"ValueError: bad {message.key}")

    asyncio.run(_with_stream(env, work))


def redelivered(env: dict[str, str]) -> list[str]:
    async def work(stream: Stream) -> list[str]:
        return [m.key for m in await stream.read(TOPIC, GROUP, "w2", 100, 0)]

    return asyncio.run(_with_stream(env, work))


def cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["events", "dlq", *args], env=env)
    return result.exit_code, result.output


def listed(env: dict[str, str], tenant: str) -> list[dict[str, object]]:
    code, out = cli(env, "list", "--tenant", tenant, "--json")
    assert code == 0, out
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_dead_letters_are_listed_replayed_and_dropped_per_tenant(env: dict[str, str]) -> None:
    dead_letter(env, "acme", "e1", "e2", "e3")
    dead_letter(env, "globex", "g1")
    # Every message so far was given up; the group has nothing new.
    assert redelivered(env) == []

    mine = listed(env, "acme")
    assert [d["key"] for d in mine] == ["e1", "e2", "e3"]
    assert mine[0]["error"] == "ValueError: bad e1"
    assert (mine[0]["topic"], mine[0]["group"], mine[0]["payload"]) == (
        TOPIC,
        GROUP,
        {"item": "e1"},
    )
    [theirs] = listed(env, "globex")

    # Another tenant's id answers as a missing one, and stays where it is.
    code, out = cli(env, "replay", str(theirs["id"]), "--tenant", "acme")
    assert code == 1 and "not dead letters of tenant acme" in out
    code, out = cli(env, "drop", str(theirs["id"]), "--tenant", "acme", "--yes")
    assert code == 1
    assert [d["key"] for d in listed(env, "globex")] == ["g1"]

    code, out = cli(env, "replay", str(mine[1]["id"]), "--tenant", "acme")
    assert (code, out.strip()) == (0, "replayed 1 dead letter")
    assert redelivered(env) == ["e2"]  # back on its topic, for the group to apply again
    assert [d["key"] for d in listed(env, "acme")] == ["e1", "e3"]

    code, out = cli(env, "drop", "--all", "--tenant", "acme", "--yes")
    assert (code, out.strip()) == (0, "dropped 2 dead letters")
    assert listed(env, "acme") == []
    assert [d["key"] for d in listed(env, "globex")] == ["g1"]


def test_ids_and_all_together_are_refused(env: dict[str, str]) -> None:
    code, out = cli(env, "replay", "1", "--all", "--tenant", "acme")
    assert code == 2 and "give dead letter ids or --all" in out
    code, out = cli(env, "drop", "--tenant", "acme")  # refused before asking to confirm
    assert code == 2 and "give dead letter ids or --all" in out
