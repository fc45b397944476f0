"""Raw behavioural events as accepted: appended with their outbox messages, exported, purged.

``append`` is the whole write of an accepted batch: one transaction inserts the events (a
retried event id conflicts on the ``(tenant, event_id)`` key and is left alone) and an outbox
message for each event that was new, so the stream carries exactly the events the table holds.
Both inserts are one statement each (multi-row ``VALUES``), whatever the batch size.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Sequence
from typing import Any

from sqlalchemy import delete, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from modelport.stores.outbox import EVENTS, enqueue
from modelport.stores.sql.schema import events
from modelport.stores.sql.timestamps import as_utc

#: Rows per page of an export.
EXPORT_PAGE = 1000


def message_key(tenant: str, event_id: str) -> str:
    """The outbox / stream key of an event: what its consumers deduplicate on."""
    return f"{tenant}:{event_id}"


class EventStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        dialect: Any = postgresql if engine.dialect.name == "postgresql" else sqlite
        self._insert = (
            dialect.insert(events)
            .on_conflict_do_nothing(index_elements=["tenant", "event_id"])
            .returning(events.c.event_id)
        )

    async def append(
        self, tenant: str, rows: Sequence[dict[str, Any]], payloads: Sequence[dict[str, Any]]
    ) -> set[str]:
        """Store ``rows`` (columns of ``events``, ``tenant`` included) and, for those whose
        event id was new, their outbox message (``payloads``, aligned with ``rows``), in one
        transaction. Returns the event ids that were new."""
        if not rows:
            return set()
        async with self._engine.begin() as conn:
            result = await conn.execute(self._insert, list(rows))
            new = {row[0] for row in result}
            if new:
                await enqueue(
                    conn,
                    tenant,
                    EVENTS,
                    [
                        (message_key(tenant, row["event_id"]), payload)
                        for row, payload in zip(rows, payloads, strict=True)
                        if row["event_id"] in new
                    ],
                )
        return new

    async def export(
        self, tenant: str, since: dt.datetime, until: dt.datetime
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """The tenant's events with ``since <= timestamp < until``, oldest first, in pages
        (keyset pagination: each page is one short query)."""
        after: tuple[dt.datetime, str] | None = None
        while True:
            query = (
                select(events)
                .where(
                    events.c.tenant == tenant,
                    events.c.occurred_at >= since,
                    events.c.occurred_at < until,
                )
                .order_by(events.c.occurred_at, events.c.event_id)
                .limit(EXPORT_PAGE)
            )
            if after is not None:
                query = query.where(tuple_(events.c.occurred_at, events.c.event_id) > after)
            async with self._engine.connect() as conn:
                page = (await conn.execute(query)).all()
            if not page:
                return
            yield [_exported(row) for row in page]
            after = (page[-1].occurred_at, page[-1].event_id)
            if len(page) < EXPORT_PAGE:
                return

    async def purge(self, received_before: dt.datetime, limit: int) -> int:
        """Delete at most ``limit`` events received before ``received_before``; how many."""
        doomed = (
            select(events.c.tenant, events.c.event_id)
            .where(events.c.received_at < received_before)
            .limit(limit)
        )
        async with self._engine.begin() as conn:
            result = await conn.execute(
                delete(events).where(tuple_(events.c.tenant, events.c.event_id).in_(doomed))
            )
        return int(result.rowcount or 0)


def _exported(row: Any) -> dict[str, Any]:
    return {
        "event_id": row.event_id,
        "type": row.type,
        "user_id": row.user_id,
        "session_id": row.session_id,
        "item_ids": row.item_ids,
        "timestamp": _iso(row.occurred_at),
        "request_id": row.request_id,
        "properties": row.properties,
        "received_at": _iso(row.received_at),
    }


def _iso(value: dt.datetime) -> str:
    return as_utc(value).isoformat().replace("+00:00", "Z")
