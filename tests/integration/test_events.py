"""Behavioural events: intake, export, retention and the built-in feature consumer.

The pipeline is driven in-process on each registry backend (SQLite, PostgreSQL): events are
taken in by the event service, their outbox messages handed to the feature consumer as the
worker runtime would hand them, and the features read back with the same service call as
``POST /v1/features/get``. Intake is also exercised over HTTP on a real ``modelport serve``,
and export through ``modelport events export``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from modelport.services.features import EntityFeatures
from modelport.stores.events import EventStore
from modelport.stores.outbox import EVENTS, Outbox
from modelport.stores.sql import create_engine
from modelport.stores.sql.schema import event_feature_state, processed_messages
from modelport.stores.sql.schema import events as events_table
from modelport.stores.streams import Message
from modelport.wiring import Services, build_services
from modelport.workers.features import FeatureConsumer

from .conftest import (
    BACKENDS,
    TENANT,
    Server,
    registry_url,
    running_server,
    settings_for,
)

pytestmark = pytest.mark.integration

RIVAL = "rival"


@pytest.fixture(scope="module", params=BACKENDS)
def database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, str]]:
    workdir = tmp_path_factory.mktemp(f"events-{request.param}")
    with ExitStack() as stack:
        yield workdir, registry_url(request.param, workdir, stack, request)


@asynccontextmanager
async def pipeline(database: tuple[Path, str], **settings: Any) -> AsyncIterator[Services]:
    base = settings_for(*database)
    services = await build_services(base.model_copy(update=settings))
    await drain_outbox(database[1])  # what earlier tests left
    try:
        yield services
    finally:
        await services.close()


async def drain_outbox(url: str) -> list[Message]:
    """Every outbox message of the events topic, as the stream would deliver it, removed."""
    engine = create_engine(url)
    try:
        outbox = Outbox(engine)
        found = [m for m in await outbox.oldest(100_000) if m.topic == EVENTS]
        await outbox.remove([m.id for m in found])
    finally:
        await engine.dispose()
    return [Message(str(m.id), m.tenant, m.key, m.payload, 1, m.created_at) for m in found]


async def count(url: str, table: Any, *where: Any) -> int:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            query = select(func.count()).select_from(table).where(*where)
            return int((await conn.execute(query)).scalar_one())
    finally:
        await engine.dispose()


def ev(
    event_id: str, kind: str = "view", *, at: float | None = None, **fields: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": event_id,
        "type": kind,
        "timestamp": time.time() - 60 if at is None else at,
    }
    body.update(fields)
    return body


def values(results: list[EntityFeatures]) -> list[dict[str, Any]]:
    return [{name: v.value for name, v in r.features.items()} for r in results]


# --------------------------------------------------------------------------- intake


async def test_a_batch_answers_accepted_duplicates_and_rejected_with_reasons(
    database: tuple[Path, str],
) -> None:
    url = database[1]
    async with pipeline(database) as services:
        first = await services.events.ingest(
            TENANT,
            {
                "events": [
                    ev("a1", user_id="u1", item_ids=["p1"]),
                    ev("a2", "like", user_id="u1", item_ids=["p1"]),
                    ev("a3", "purchase", session_id="s1", item_ids=["p1", "p2"]),
                    ev("a1", user_id="u1", item_ids=["p1"]),
                    ev("a4", user_id="u1", item_ids=["p2"], at=time.time() + 86_400),
                ]
            },
        )
        assert first.accepted == ["a1", "a3"]
        assert first.duplicates == ["a1"]
        assert [(r["index"], r["event_id"]) for r in first.rejected] == [(1, "a2"), (4, "a4")]
        assert "type must be one of" in first.rejected[0]["reason"]
        assert "too far in the future" in first.rejected[1]["reason"]

        # A client retry of the whole batch: nothing is stored or announced twice.
        again = await services.events.ingest(
            TENANT,
            {"events": [ev("a1", user_id="u1", item_ids=["p1"]), ev("a5", "search", user_id="u1")]},
        )
        assert again.accepted == ["a5"] and again.duplicates == ["a1"]

    # Every accepted event has exactly one outbox message, keyed tenant:event_id.
    messages = await drain_outbox(url)
    assert sorted(m.key for m in messages) == [f"{TENANT}:a1", f"{TENANT}:a3", f"{TENANT}:a5"]
    assert await count(url, events_table, events_table.c.tenant == TENANT) == 3


async def test_concurrent_batches_commit_together_and_a_shared_id_is_accepted_once(
    database: tuple[Path, str],
) -> None:
    url = database[1]
    async with pipeline(database) as services:
        batches = [
            {"events": [ev(f"c{n}-{i}", user_id="u", item_ids=["p"]) for i in range(50)]}
            for n in range(8)
        ]
        # Two clients retry one event at the same time, inside concurrent batches.
        for batch in batches[:2]:
            batch["events"].append(ev("shared-retry", user_id="u", item_ids=["p"]))
        results = await asyncio.gather(*(services.events.ingest("group", b) for b in batches))
    accepted = [e for r in results for e in r.accepted]
    assert len(accepted) == len(set(accepted)) == 8 * 50 + 1
    assert sum(r.duplicates.count("shared-retry") for r in results) == 1
    messages = await drain_outbox(url)
    assert sorted(m.key for m in messages) == sorted(f"group:{e}" for e in accepted)
    assert await count(url, events_table, events_table.c.tenant == "group") == 8 * 50 + 1


async def test_a_batch_the_database_refuses_fails_alone_not_the_batches_written_with_it(
    database: tuple[Path, str],
) -> None:
    async with pipeline(database):  # the database, migrated
        pass
    engine = create_engine(database[1])
    store = EventStore(engine)
    now = dt.datetime.now(dt.UTC)

    def row(event_id: str | None) -> dict[str, Any]:
        return {
            "event_id": event_id, "type": "view", "user_id": "u", "session_id": None,
            "item_ids": ["p"], "occurred_at": now, "request_id": None, "properties": {},
            "received_at": now,
        }  # fmt: skip

    try:
        # Both arrive while no transaction runs: they are written together first.
        good, bad = await asyncio.gather(
            store.append("alone", [row("g1")], [{}]),
            store.append("alone", [row(None)], [{}]),  # event_id NOT NULL
            return_exceptions=True,
        )
    finally:
        await engine.dispose()
    assert good == {"g1"}
    assert isinstance(bad, Exception) and "event_id" in str(bad)
    assert await count(database[1], events_table, events_table.c.tenant == "alone") == 1
    await drain_outbox(database[1])


async def test_the_same_event_id_in_another_tenant_is_its_own_event(
    database: tuple[Path, str],
) -> None:
    async with pipeline(database) as services:
        mine = await services.events.ingest(
            TENANT, {"events": [ev("shared", user_id="u", item_ids=["x"])]}
        )
        theirs = await services.events.ingest(
            RIVAL, {"events": [ev("shared", user_id="u", item_ids=["x"])]}
        )
        assert mine.accepted == ["shared"] and theirs.accepted == ["shared"]
        exported = [e async for e in services.events.export(RIVAL, _ago(86_400), _ago(-60))]
        assert [e["event_id"] for e in exported] == ["shared"]
    await drain_outbox(database[1])


async def test_expired_events_are_purged_in_bounded_chunks(database: tuple[Path, str]) -> None:
    url = database[1]
    async with pipeline(database, event_retention_days=1.0) as services:
        batch = [ev(f"r{i}", user_id="u", item_ids=["x"]) for i in range(5)]
        await services.events.ingest("retained", {"events": batch})
        # Half a day later they are within a one-day retention: kept.
        assert await services.events.purge_expired(now=time.time() + 43_200) == 0
        assert await count(url, events_table, events_table.c.tenant == "retained") == 5
        # Two days later they are past it: purged, at most `limit` rows per call.
        later = time.time() + 2 * 86_400
        assert await services.events.purge_expired(now=later, limit=3) == 3
        while await services.events.purge_expired(now=later, limit=3):
            pass
        assert await count(url, events_table, events_table.c.tenant == "retained") == 0
        # Once purged, a retried id is a new event again.
        again = await services.events.ingest("retained", {"events": batch[:1]})
        assert again.accepted == ["r0"]
    await drain_outbox(url)


# --------------------------------------------------------------------------- features


async def test_consumed_events_become_features_readable_per_user_and_item(
    database: tuple[Path, str],
) -> None:
    url, now = database[1], time.time()
    async with pipeline(database) as services:
        batch = [
            ev("f1", "view", at=now - 300, user_id="ann", session_id="s1", item_ids=["p1"]),
            ev("f2", "view", at=now - 200, user_id="ann", session_id="s1", item_ids=["p2"]),
            ev("f3", "add_to_cart", at=now - 100, user_id="ann", session_id="s1", item_ids=["p2"]),
            ev(
                "f4", "purchase", at=now - 50, user_id="ann", session_id="s1", item_ids=["p2", "p1"]
            ),
            ev("f5", "view", at=now - 40, session_id="s2", item_ids=["p1"]),
            ev("f6", "view", at=now - 30, session_id="s2", item_ids=["p3"]),
        ]
        result = await services.events.ingest(TENANT, {"events": batch})
        assert len(result.accepted) == 6
        consumer = FeatureConsumer(services.event_features)
        await consumer.handle(await drain_outbox(url))

        recent = await services.features.get_features(
            TENANT, ["user_recent:*"], {"user": ["ann", "s2"]}
        )
        ann, anonymous = values(recent)
        assert json.loads(ann["user_recent:view"]) == ["p2", "p1"]
        assert json.loads(ann["user_recent:add_to_cart"]) == ["p2"]
        assert json.loads(ann["user_recent:purchase"]) == ["p1", "p2"]
        assert json.loads(anonymous["user_recent:view"]) == ["p3", "p1"]
        assert {v.status for r in recent for v in r.features.values()} == {"present"}

        popular = values(
            await services.features.get_features(
                TENANT,
                ["item_popularity:views_total", "item_popularity:purchases_total",
                 "item_popularity:carts", "item_popularity:views"],
                {"item": ["p1", "p2", "p9"]},
            )
        )  # fmt: skip
        assert [
            (p["item_popularity:views_total"], p["item_popularity:purchases_total"])
            for p in popular
        ] == [(2, 1), (1, 1), (0, 0)]
        assert popular[1]["item_popularity:carts"] == pytest.approx(1.0, rel=1e-3)
        assert 1.9 < popular[0]["item_popularity:views"] <= 2.0  # decayed by a minute or so

        co = values(
            await services.features.get_features(
                TENANT, ["item_cooccurrence:*"], {"item": ["p1", "p2", "p3"]}
            )
        )
        # p1 was co-viewed with p2 (session s1) and with p3 (session s2); bought with p2.
        assert json.loads(co[0]["item_cooccurrence:co_view"]) == {"p2": 1, "p3": 1}
        assert json.loads(co[0]["item_cooccurrence:co_purchase"]) == {"p2": 1}
        assert json.loads(co[1]["item_cooccurrence:co_view"]) == {"p1": 1}
        assert json.loads(co[2]["item_cooccurrence:co_purchase"]) == {}


async def test_a_redelivered_batch_applies_nothing_twice(database: tuple[Path, str]) -> None:
    url, now = database[1], time.time()
    async with pipeline(database) as services:
        batch = [
            ev(f"x{i}", "view", at=now - 100 + i, user_id=f"u{i % 3}", session_id=f"s{i % 3}",
               item_ids=[f"q{i % 4}"])
            for i in range(30)
        ]  # fmt: skip
        await services.events.ingest("once", {"events": batch})
        messages = await drain_outbox(url)
        consumer = FeatureConsumer(services.event_features)
        refs = ["item_popularity:*", "item_cooccurrence:*"]
        items = {"item": [f"q{i}" for i in range(4)]}

        await consumer.handle(messages)
        first = values(await services.features.get_features("once", refs, items))
        # The worker died before acknowledging: the stream delivers the batch again, then
        # half of it once more in another batch.
        await consumer.handle(messages)
        await consumer.handle(messages[::2])
        assert values(await services.features.get_features("once", refs, items)) == first
        assert sum(v["item_popularity:views_total"] for v in first) == 30
        once = processed_messages.c.key.like("once:%")
        assert await count(url, processed_messages, once) == 30
        # A week on, no message can come back: its key is forgotten.
        purge = services.event_features.purge_processed
        assert await purge(consumer.group, now=time.time() + 86_400) == 0
        assert await purge(consumer.group, now=time.time() + 8 * 86_400) >= 30
        assert await count(url, processed_messages, once) == 0


async def test_idle_sessions_are_forgotten_and_the_features_stay(
    database: tuple[Path, str],
) -> None:
    url, now = database[1], time.time()
    async with pipeline(database, event_session_window_s=60.0) as services:
        batch = [
            ev("i1", "view", at=now - 30, session_id="idle", item_ids=["a"]),
            ev("i2", "view", at=now - 20, session_id="idle", item_ids=["b"]),
        ]
        await services.events.ingest("idle", {"events": batch})
        await FeatureConsumer(services.event_features).handle(await drain_outbox(url))
        sessions = event_feature_state.c.kind == "session"
        assert await count(url, event_feature_state, sessions, tenant_is("idle")) == 1
        # Not yet idle for twice the window: kept.
        assert await services.event_features.purge_sessions(now=time.time() + 60) == 0
        assert await services.event_features.purge_sessions(now=time.time() + 121) >= 1
        assert await count(url, event_feature_state, sessions, tenant_is("idle")) == 0
        co = await services.features.get_features(
            "idle", ["item_cooccurrence:co_view"], {"item": ["a"]}
        )
        assert json.loads(values(co)[0]["item_cooccurrence:co_view"]) == {"b": 1}


def tenant_is(tenant: str) -> Any:
    return event_feature_state.c.tenant == tenant


async def test_a_tenants_features_are_invisible_to_another_tenant(
    database: tuple[Path, str],
) -> None:
    url = database[1]
    async with pipeline(database) as services:
        await services.events.ingest(
            "owner", {"events": [ev("o1", user_id="ann", item_ids=["p1"])]}
        )
        await FeatureConsumer(services.event_features).handle(await drain_outbox(url))
        owner = await services.features.get_features(
            "owner", ["user_recent:view"], {"user": ["ann"]}
        )
        assert json.loads(values(owner)[0]["user_recent:view"]) == ["p1"]
        with pytest.raises(Exception, match="feature view 'user_recent' does not exist"):
            await services.features.get_features(
                "onlooker", ["user_recent:view"], {"user": ["ann"]}
            )


# --------------------------------------------------------------------------- HTTP and CLI


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("events-http")
    with running_server(workdir, f"sqlite+aiosqlite:///{workdir / 'registry.db'}") as running:
        yield running


def test_post_events_over_http_answers_per_event(server: Server) -> None:
    with server.client() as http:
        body = {"events": [ev("h1", user_id="u", item_ids=["p1"]), ev("h2", "nope", user_id="u")]}
        first = http.post("/v1/events", json=body)
        assert first.status_code == 200, first.text
        assert first.json()["accepted"] == ["h1"]
        assert first.json()["rejected"][0]["event_id"] == "h2"
        retry = http.post("/v1/events", json=body)
        assert retry.json()["accepted"] == [] and retry.json()["duplicates"] == ["h1"]

        # With an Idempotency-Key, a retry gets the first answer itself.
        keyed = {"events": [ev("k1", user_id="u", item_ids=["p1"])]}
        once = http.post("/v1/events", json=keyed, headers={"Idempotency-Key": "batch-7"})
        replay = http.post("/v1/events", json=keyed, headers={"Idempotency-Key": "batch-7"})
        assert once.json()["accepted"] == ["k1"] and replay.json() == once.json()
        assert replay.headers["Idempotent-Replayed"] == "true"

        assert http.post("/v1/events", content=b"{nope").status_code == 400
        assert http.post("/v1/events", json={"events": []}).status_code == 400
        many = {"events": [ev(f"m{i}", user_id="u", item_ids=["p"]) for i in range(1001)]}
        too_many = http.post("/v1/events", json=many)
        assert too_many.status_code == 413 and "at most 1000" in too_many.json()["error"]
        anonymous = httpx.post(server.url("/v1/events"), json=body)
        assert anonymous.status_code == 401


def _ago(seconds: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)
