"""The embedded stream: topics, consumer groups and dead letters in the registry's SQL database.

It needs no other service: SQLite on a laptop, or the PostgreSQL a deployment already has.
A group's position is one row (``stream_groups.last_id``); delivering a batch moves it and
records the batch in ``stream_pending`` in one transaction that first locks the group's row
(an ``UPDATE`` of it: a row lock on PostgreSQL, the database's write lock on SQLite), so two
consumers of one group never receive the same message. A reader that finds nothing waits for a
publish in this process or polls, whichever comes first: other processes publish too.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Row, and_, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from modelport.stores.sql.schema import (
    dead_letters,
    stream_groups,
    stream_messages,
    stream_pending,
)
from modelport.stores.sql.timestamps import as_utc
from modelport.stores.streams import DeadLetter, Message, Outgoing

#: Above any message id: what "no pending message" compares as.
_NO_ID = 2**62
#: The first key of the PostgreSQL advisory locks publishers of a topic take (the second is
#: the topic's hash): apart from any other lock.
_LOCK_SPACE = 0x6D70_7374  # "mpst"


def _ints(ids: Iterable[str]) -> list[int]:
    """The numeric ids among ``ids``: anything else names nothing here."""
    return [int(i) for i in ids if i.isdigit()]


class SqlStream:
    def __init__(self, engine: AsyncEngine, *, poll_s: float = 0.1) -> None:
        self._engine = engine
        self._poll_s = poll_s
        self._postgres = engine.dialect.name == "postgresql"
        # One event per topic, set (and replaced) by each publish in this process.
        self._published: dict[str, asyncio.Event] = {}

    # ------------------------------------------------------------------ publish and read

    async def publish(self, topic: str, messages: Sequence[Outgoing]) -> None:
        if not messages:
            return
        async with self._engine.begin() as conn:
            await self._append(conn, topic, [(m.tenant, m.key, m.payload) for m in messages])
        self._wake(topic)

    async def read(
        self, topic: str, group: str, consumer: str, count: int, block_s: float
    ) -> list[Message]:
        deadline = time.monotonic() + block_s
        while True:
            published = self._published.setdefault(topic, asyncio.Event())
            messages = await self._deliver(topic, group, consumer, count)
            remaining = deadline - time.monotonic()
            if messages or remaining <= 0:
                return messages
            try:
                await asyncio.wait_for(published.wait(), min(remaining, self._poll_s))
            except TimeoutError:
                pass

    async def read_after(
        self, topic: str, after: str | None, count: int, block_s: float
    ) -> list[Message]:
        position = int(after) if after is not None and after.isdigit() else 0
        query = (
            select(stream_messages)
            .where(stream_messages.c.topic == topic, stream_messages.c.id > position)
            .order_by(stream_messages.c.id)
            .limit(count)
        )
        deadline = time.monotonic() + block_s
        while True:
            published = self._published.setdefault(topic, asyncio.Event())
            async with self._engine.connect() as conn:
                rows = (await conn.execute(query)).all()
            remaining = deadline - time.monotonic()
            if rows or remaining <= 0:
                return [_message(row, attempts=1) for row in rows]
            try:
                await asyncio.wait_for(published.wait(), min(remaining, self._poll_s))
            except TimeoutError:
                pass

    async def last_id(self, topic: str) -> str | None:
        async with self._engine.connect() as conn:
            newest = (
                await conn.execute(
                    select(func.max(stream_messages.c.id)).where(stream_messages.c.topic == topic)
                )
            ).scalar_one_or_none()
        return None if newest is None else str(newest)

    async def ack(self, topic: str, group: str, ids: Sequence[str]) -> None:
        numbers = _ints(ids)
        if not numbers:
            return
        async with self._engine.begin() as conn:
            await conn.execute(
                delete(stream_pending).where(
                    self._pending_of(topic, group), stream_pending.c.message_id.in_(numbers)
                )
            )

    async def claim_stale(
        self, topic: str, group: str, consumer: str, idle_s: float, count: int
    ) -> list[Message]:
        now = dt.datetime.now(dt.UTC)
        stale = and_(
            self._pending_of(topic, group),
            stream_pending.c.delivered_at < now - dt.timedelta(seconds=idle_s),
        )
        candidates = (
            select(stream_pending.c.message_id)
            .where(stale)
            .order_by(stream_pending.c.message_id)
            .limit(count)
        )
        if self._postgres:
            candidates = candidates.with_for_update(skip_locked=True)
        async with self._engine.begin() as conn:
            # Two statements: as a subquery of the UPDATE, PostgreSQL may run the locking
            # LIMIT query again per row and claim more than ``count``. On SQLite the SELECT
            # takes no lock (workers ask before every read, mostly for nothing) and ``stale``,
            # checked again by the UPDATE, keeps a row another claimer just took.
            picked = [row.message_id for row in await conn.execute(candidates)]
            if not picked:
                return []
            claimed = await conn.execute(
                update(stream_pending)
                .where(stale, stream_pending.c.message_id.in_(picked))
                .values(
                    consumer=consumer,
                    delivered_at=now,
                    attempts=stream_pending.c.attempts + 1,
                )
                .returning(stream_pending.c.message_id)
            )
            ids = [row.message_id for row in claimed]
            return await self._pending_messages(conn, topic, group, ids)

    # ------------------------------------------------------------------ dead letters

    async def dead_letter(self, topic: str, group: str, message: Message, error: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(dead_letters).values(
                    topic=topic,
                    group_name=group,
                    tenant=message.tenant,
                    message_id=message.id,
                    key=message.key,
                    payload=message.payload,
                    attempts=message.attempts,
                    error=error,
                    failed_at=dt.datetime.now(dt.UTC),
                )
            )
            await conn.execute(
                delete(stream_pending).where(
                    self._pending_of(topic, group),
                    stream_pending.c.message_id.in_(_ints([message.id])),
                )
            )

    async def dead_letters(
        self, tenant: str, topic: str | None, group: str | None, limit: int
    ) -> list[DeadLetter]:
        query = select(dead_letters).where(dead_letters.c.tenant == tenant)
        if topic is not None:
            query = query.where(dead_letters.c.topic == topic)
        if group is not None:
            query = query.where(dead_letters.c.group_name == group)
        async with self._engine.connect() as conn:
            rows = await conn.execute(query.order_by(dead_letters.c.id).limit(limit))
            return [_dead_letter(row) for row in rows]

    async def replay(self, tenant: str, ids: Sequence[str]) -> int:
        mine = and_(dead_letters.c.tenant == tenant, dead_letters.c.id.in_(_ints(ids)))
        async with self._engine.begin() as conn:
            # Deleted first: of two replays of one letter at once, one finds it, one nothing.
            deleted = await conn.execute(delete(dead_letters).where(mine).returning(dead_letters))
            rows = sorted(deleted, key=lambda row: row.id)  # as they first failed
            for row in rows:
                await self._append(conn, row.topic, [(row.tenant, row.key, row.payload)])
        for topic in {row.topic for row in rows}:
            self._wake(topic)
        return len(rows)

    async def drop(self, tenant: str, ids: Sequence[str]) -> int:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                delete(dead_letters).where(
                    dead_letters.c.tenant == tenant, dead_letters.c.id.in_(_ints(ids))
                )
            )
            return int(result.rowcount)

    # ------------------------------------------------------------------ watching

    async def lag(self, topic: str, group: str) -> int:
        async with self._engine.connect() as conn:
            position = (
                await conn.execute(
                    select(stream_groups.c.last_id).where(self._group_of(topic, group))
                )
            ).scalar_one_or_none()
            unread = (
                await conn.execute(
                    select(func.count())
                    .select_from(stream_messages)
                    .where(
                        stream_messages.c.topic == topic,
                        stream_messages.c.id > (position or 0),
                    )
                )
            ).scalar_one()
            pending = (
                await conn.execute(
                    select(func.count())
                    .select_from(stream_pending)
                    .where(self._pending_of(topic, group))
                )
            ).scalar_one()
            return int(unread) + int(pending)

    async def trim(self, topic: str) -> int:
        """Delete the messages of ``topic`` every group has read and acknowledged; returns how
        many. A group created afterwards starts after them."""
        # One statement, so the bounds and the delete see the same state. Without a group the
        # minimum is NULL and nothing compares below it. The table's newest message stays:
        # SQLite gives a new row the highest id + 1, so deleting it would hand its id out again,
        # behind the groups' positions.
        newest = select(func.max(stream_messages.c.id)).scalar_subquery()
        oldest_position = (
            select(func.min(stream_groups.c.last_id))
            .where(stream_groups.c.topic == topic)
            .scalar_subquery()
        )
        oldest_pending = (
            select(func.min(stream_pending.c.message_id))
            .where(stream_pending.c.topic == topic)
            .scalar_subquery()
        )
        async with self._engine.begin() as conn:
            result = await conn.execute(
                delete(stream_messages).where(
                    stream_messages.c.topic == topic,
                    stream_messages.c.id <= oldest_position,
                    stream_messages.c.id < func.coalesce(oldest_pending, _NO_ID),
                    stream_messages.c.id < newest,
                )
            )
            return int(result.rowcount)

    async def close(self) -> None:
        """The engine belongs to the caller, who disposes of it."""

    # ------------------------------------------------------------------ internals

    def _wake(self, topic: str) -> None:
        event = self._published.pop(topic, None)
        if event is not None:
            event.set()

    @staticmethod
    def _group_of(topic: str, group: str) -> Any:
        return and_(stream_groups.c.topic == topic, stream_groups.c.group_name == group)

    @staticmethod
    def _pending_of(topic: str, group: str) -> Any:
        return and_(stream_pending.c.topic == topic, stream_pending.c.group_name == group)

    async def _append(
        self, conn: AsyncConnection, topic: str, messages: list[tuple[str, str, dict[str, Any]]]
    ) -> None:
        if self._postgres:
            # A sequence hands out ids before their transactions commit: two publishers that
            # commit out of id order would let a group move past the lower id before it is
            # visible, and never deliver it. Publishers of a topic take turns (until commit);
            # SQLite has one writer at a time anyway.
            turn = func.pg_advisory_xact_lock(_LOCK_SPACE, func.hashtext(topic))
            await conn.execute(select(turn))
        now = dt.datetime.now(dt.UTC)
        await conn.execute(
            insert(stream_messages),
            [
                {"topic": topic, "tenant": t, "key": k, "payload": p, "published_at": now}
                for t, k, p in messages
            ],
        )

    async def _has_news(self, topic: str, group: str) -> bool:
        """A lock-free look first, so idle consumers polling take no write lock."""
        async with self._engine.connect() as conn:
            position = (
                await conn.execute(
                    select(stream_groups.c.last_id).where(self._group_of(topic, group))
                )
            ).scalar_one_or_none()
            if position is None:
                return True  # the group is created by the delivering transaction
            newer = await conn.execute(
                select(stream_messages.c.id)
                .where(stream_messages.c.topic == topic, stream_messages.c.id > position)
                .limit(1)
            )
            return newer.first() is not None

    async def _deliver(self, topic: str, group: str, consumer: str, count: int) -> list[Message]:
        if not await self._has_news(topic, group):
            return []
        lock = update(stream_groups).where(self._group_of(topic, group))
        lock = lock.values(last_id=stream_groups.c.last_id)
        async with self._engine.begin() as conn:
            if (await conn.execute(lock)).rowcount == 0:
                dialect: Any = postgresql if self._postgres else sqlite
                await conn.execute(
                    dialect.insert(stream_groups)
                    .values(topic=topic, group_name=group, last_id=0)
                    .on_conflict_do_nothing()
                )
                await conn.execute(lock)
            position = (
                await conn.execute(
                    select(stream_groups.c.last_id).where(self._group_of(topic, group))
                )
            ).scalar_one()
            rows = (
                await conn.execute(
                    select(stream_messages)
                    .where(stream_messages.c.topic == topic, stream_messages.c.id > position)
                    .order_by(stream_messages.c.id)
                    .limit(count)
                )
            ).all()
            if not rows:
                return []
            now = dt.datetime.now(dt.UTC)
            await conn.execute(
                update(stream_groups)
                .where(self._group_of(topic, group))
                .values(last_id=rows[-1].id)
            )
            await conn.execute(
                insert(stream_pending),
                [
                    {
                        "topic": topic,
                        "group_name": group,
                        "message_id": row.id,
                        "consumer": consumer,
                        "delivered_at": now,
                        "attempts": 1,
                    }
                    for row in rows
                ],
            )
            return [_message(row, attempts=1) for row in rows]

    async def _pending_messages(
        self, conn: AsyncConnection, topic: str, group: str, ids: list[int]
    ) -> list[Message]:
        if not ids:
            return []
        rows = await conn.execute(
            select(stream_messages, stream_pending.c.attempts)
            .join(
                stream_pending,
                and_(
                    stream_pending.c.message_id == stream_messages.c.id,
                    self._pending_of(topic, group),
                ),
            )
            .where(stream_messages.c.id.in_(ids))
            .order_by(stream_messages.c.id)
        )
        return [_message(row, attempts=row.attempts) for row in rows]


def _message(row: Row[Any], *, attempts: int) -> Message:
    return Message(
        id=str(row.id),
        tenant=row.tenant,
        key=row.key,
        payload=row.payload,
        attempts=attempts,
        published_at=as_utc(row.published_at),
    )


def _dead_letter(row: Row[Any]) -> DeadLetter:
    return DeadLetter(
        id=str(row.id),
        topic=row.topic,
        group=row.group_name,
        tenant=row.tenant,
        key=row.key,
        payload=row.payload,
        attempts=row.attempts,
        error=row.error,
        failed_at=as_utc(row.failed_at),
    )
