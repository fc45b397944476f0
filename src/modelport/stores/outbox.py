"""The transactional outbox: a change and the message announcing it commit together.

A store that changes state (a catalog upsert, an accepted batch of events) calls ``enqueue``
inside its own SQL transaction; the message exists exactly when the change does. The relay
(``services.relay``) publishes outbox rows to the stream in id order and deletes them, so a
crash between commit and publish delays a message but never loses it, and a crash between
publish and delete publishes it twice, which consumers absorb (their effects are idempotent
per message key).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from modelport.stores.sql.schema import outbox

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


class Outbox:
    """What the relay reads and clears."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def oldest(self, limit: int) -> list[OutboxMessage]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(select(outbox).order_by(outbox.c.id).limit(limit))
            return [
                OutboxMessage(r.id, r.tenant, r.topic, r.key, r.payload, r.created_at) for r in rows
            ]

    async def remove(self, ids: list[int]) -> None:
        if ids:
            async with self._engine.begin() as conn:
                await conn.execute(delete(outbox).where(outbox.c.id.in_(ids)))

    async def size(self) -> int:
        async with self._engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(outbox))).scalar_one())
