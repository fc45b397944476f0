"""The transactional outbox: a change and the message announcing it commit together.

A store that changes state (a catalog upsert, an accepted batch of events) calls ``enqueue``
inside its own SQL transaction; the message exists exactly when the change does. The relay
(``services.relay``) publishes outbox rows to the stream and only then deletes them, so a
crash between commit and publish delays a message but never loses it, and a crash between
publish and delete publishes it twice, which consumers absorb (their effects are idempotent
per message key).

A store that writes many messages (the event intake) also hands what it committed to an
``OutboxListener`` (the relay of its process), which publishes it from memory instead of
reading the rows back: the rows stay the crash-safety net, read only when no process holds
them in memory (after a crash, or rows of another replica).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from modelport.stores.sql.schema import outbox
from modelport.stores.streams import Outgoing

#: Topics the pipeline carries.
EVENTS = "events"
CATALOG = "catalog"


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    id: int
    tenant: str
    topic: str
    key: str
    """Unique per message and stable across redeliveries: what consumers deduplicate on."""
    payload: dict[str, Any]
    created_at: dt.datetime


async def enqueue(
    conn: AsyncConnection, tenant: str, topic: str, messages: list[tuple[str, dict[str, Any]]]
) -> None:
    """Add ``(key, payload)`` messages for ``topic`` inside the caller's transaction."""
    if not messages:
        return
    now = dt.datetime.now(dt.UTC)
    await conn.execute(
        insert(outbox),
        [
            {"tenant": tenant, "topic": topic, "key": key, "payload": payload, "created_at": now}
            for key, payload in messages
        ],
    )


class OutboxListener(Protocol):
    """Told about outbox rows as their transaction commits (the relay of this process)."""

    def handover(self) -> AbstractAsyncContextManager[bool]:
        """Held around a transaction that writes outbox rows and, once it committed, hands
        them over (``committed``); says whether the listener takes them (if not, they wait
        in the outbox). No other path publishes rows while their handover is held."""
        ...

    def committed(self, topic: str, ids: Sequence[int], messages: Sequence[Outgoing]) -> None:
        """The rows ``ids`` (ascending) committed, announcing ``messages`` (in id order)."""
        ...


class Outbox:
    """What the relay reads and clears."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        # One parameter whatever the number of ids: no statement to build per count.
        self._remove = (
            "DELETE FROM outbox WHERE id = ANY($1::bigint[])"
            if engine.dialect.name == "postgresql"
            else "DELETE FROM outbox WHERE id IN (SELECT value FROM json_each(?))"
        )

    async def oldest(self, limit: int) -> list[OutboxMessage]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(select(outbox).order_by(outbox.c.id).limit(limit))
            return [
                OutboxMessage(r.id, r.tenant, r.topic, r.key, r.payload, r.created_at) for r in rows
            ]

    async def oldest_ids(self, limit: int) -> list[int]:
        """The ids of the oldest ``limit`` rows: what a scan looks at before reading any row
        (most of them may be in memory already)."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(select(outbox.c.id).order_by(outbox.c.id).limit(limit))
            return [row_id for (row_id,) in rows]

    async def messages(self, ids: Sequence[int]) -> list[OutboxMessage]:
        """The rows ``ids`` still holds, in id order."""
        if not ids:
            return []
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(outbox).where(outbox.c.id.in_(list(ids))).order_by(outbox.c.id)
            )
            return [
                OutboxMessage(r.id, r.tenant, r.topic, r.key, r.payload, r.created_at) for r in rows
            ]

    async def remove(self, ids: Sequence[int]) -> None:
        if ids:
            ids = list(ids)
            argument: Any = ids if self._engine.dialect.name == "postgresql" else _json(ids)
            async with self._engine.begin() as conn:
                await conn.exec_driver_sql(self._remove, (argument,))

    async def size(self) -> int:
        async with self._engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(outbox))).scalar_one())


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()
