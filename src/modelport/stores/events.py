"""Raw behavioural events as accepted: appended with their outbox messages, exported, purged.

``append`` is the whole write of an accepted batch: one transaction inserts the events (a
retried event id conflicts on the ``(tenant, event_id)`` key and is left alone) and an outbox
message for each event that was new, so the stream carries exactly the events the table holds.

Intake is benchmarked against a raw stream append, so both inserts are one multi-row
``INSERT … VALUES (…), (…)`` each, written as SQL text with their parameters already in the
driver's types (JSON as text, times as the dialect stores them): SQLAlchemy's per-parameter
processing of a 100-event batch (three JSON columns, two times, per row) cost more than the
database took to store it. The rows are those ``outbox.enqueue`` writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from collections.abc import Set as AbstractSet
from functools import partial
from itertools import chain
from typing import Any

import orjson
from sqlalchemy import delete, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from modelport.stores.outbox import EVENTS, OutboxListener
from modelport.stores.sql.schema import events
from modelport.stores.sql.sqlite_writer import SqliteWriter
from modelport.stores.sql.timestamps import as_utc
from modelport.stores.streams import Outgoing

#: Rows per page of an export.
EXPORT_PAGE = 1000


def message_key(tenant: str, event_id: str) -> str:
    """The outbox / stream key of an event: what its consumers deduplicate on."""
    return f"{tenant}:{event_id}"


_EVENT_COLUMNS = (
    "tenant",
    "event_id",
    "type",
    "user_id",
    "session_id",
    "item_ids",
    "occurred_at",
    "request_id",
    "properties",
    "received_at",
)
_OUTBOX_COLUMNS = ("tenant", "topic", "key", "payload", "created_at")


_SQLITE_REMOVE = "DELETE FROM outbox WHERE id IN (SELECT value FROM json_each(?))"


def _sqlite_column(index: int, column: str) -> str:
    """Column ``index`` of a row of the JSON array as SQLite stores it: JSON text for arrays
    and objects (what json_extract gives them back as), and a time given in integer
    microseconds as the text SQLAlchemy writes, ``YYYY-MM-DD HH:MM:SS.ffffff``."""
    value = f"json_extract(value, '$[{index}]')"
    if column in ("occurred_at", "received_at"):
        return (
            f"strftime('%Y-%m-%d %H:%M:%S', {value} / 1000000, 'unixepoch')"
            f" || printf('.%06d', {value} % 1000000)"
        )
    return value


_SQLITE_INSERT_EVENTS = (
    f"INSERT INTO events ({', '.join(_EVENT_COLUMNS)}) SELECT "  # noqa: S608 - constants
    + ", ".join(_sqlite_column(i, column) for i, column in enumerate(_EVENT_COLUMNS))
    # WHERE true: what SQLite needs to read ON CONFLICT after a SELECT.
    # The parameter is orjson's UTF-8 bytes: read as text, not decoded into a str first.
    + " FROM json_each(CAST(? AS TEXT)) WHERE true ON CONFLICT (tenant, event_id) DO NOTHING"
)
_SQLITE_INSERT_OUTBOX = (
    f"INSERT INTO outbox ({', '.join(_OUTBOX_COLUMNS)}) SELECT "  # noqa: S608 - constants
    + ", ".join(f"json_extract(value, '$[{i}]')" for i in range(len(_OUTBOX_COLUMNS)))
    + " FROM json_each(CAST(? AS TEXT))"
)
_SQLITE_INSERTED = "SELECT tenant, event_id FROM events WHERE rowid BETWEEN ? AND ?"

#: Rows per ``INSERT`` statement: 10 parameters each stay under the 32,766 that SQLite and
#: PostgreSQL (asyncpg) take in one statement.
_ROWS_PER_STATEMENT = 1000


class _Batch:
    """One caller's rows, already in the driver's types (built by the caller's task, so that
    the writer's turn is the SQL alone)."""

    __slots__ = ("done", "event_ids", "messages", "outbox", "rows", "tenant")

    def __init__(
        self,
        tenant: str,
        event_ids: list[str],
        rows: list[tuple[Any, ...]],
        outbox: list[tuple[Any, ...]],
        messages: list[Outgoing],
        done: asyncio.Future[set[str]],
    ) -> None:
        self.tenant, self.event_ids, self.rows, self.done = tenant, event_ids, rows, done
        self.outbox, self.messages = outbox, messages


class EventStore:
    """Group commit: batches that arrive while a transaction is being written wait for it,
    then go together in the next one (one commit, one fsync, for all of them). Under load a
    server therefore writes a few large transactions instead of many small ones that queue for
    SQLite's single writer lock or PostgreSQL's commit flushes; alone, a batch is written at
    once. The writer is a task the store owns, so a caller that goes away cancels only its
    own wait."""

    def __init__(self, engine: AsyncEngine, listener: OutboxListener | None = None) -> None:
        """``listener``: told of each transaction's outbox rows (the relay of this process,
        which publishes them from memory at once)."""
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        self._statements: dict[tuple[str, int, bool], str] = {}
        self._queue: list[_Batch] = []
        self._removals: list[tuple[Sequence[int], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self.listener = listener
        self._sqlite: SqliteWriter | None = None
        database = engine.url.database
        if engine.dialect.name == "sqlite" and database not in (None, "", ":memory:"):
            self._sqlite = SqliteWriter(str(database))

    async def close(self) -> None:
        """Wait for the writer, then close the SQLite writer's connection."""
        if self._writer is not None and not self._writer.done():
            with contextlib.suppress(Exception):
                await self._writer
        if self._sqlite is not None:
            await self._sqlite.close()

    async def remove_outbox(self, ids: Sequence[int]) -> None:
        """Delete outbox rows (that the relay published) in the next transaction: under load
        one commit carries the deletes and the next group's inserts."""
        if not ids:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._removals.append((ids, done))
        self._wake_writer()
        await done

    def _wake_writer(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain(), name="events-group-commit")

    async def append(
        self, tenant: str, rows: Sequence[dict[str, Any]], payloads: Sequence[dict[str, Any]]
    ) -> set[str]:
        """Store ``rows`` (columns of ``events``, ``tenant`` included) and, for those whose
        event id was new, their outbox message (``payloads``, aligned with ``rows``), in one
        transaction. Returns the event ids that were new."""
        if not rows:
            return set()
        # The SQLite writer takes rows as JSON and SQLite writes the columns: JSON values
        # as they are, times as integer microseconds it formats (see _SQLITE_INSERT_EVENTS).
        as_json = self._sqlite is None
        time = self._time if as_json else _micros
        created = self._time(dt.datetime.now(dt.UTC))
        received: dt.datetime | None = None
        received_at: Any = None
        event_ids: list[str] = []
        values: list[tuple[Any, ...]] = []
        announce: list[tuple[Any, ...]] = []
        messages: list[Outgoing] = []
        for row, payload in zip(rows, payloads, strict=True):
            event_id = row["event_id"]
            if row["received_at"] is not received:
                received = row["received_at"]
                received_at = time(received)
            items, properties = row["item_ids"], row["properties"]
            event_ids.append(event_id)
            values.append(
                (
                    tenant,
                    event_id,
                    row["type"],
                    row["user_id"],
                    row["session_id"],
                    _json(items) if as_json else items,
                    time(row["occurred_at"]),
                    row["request_id"],
                    _json(properties) if as_json else properties,
                    received_at,
                )
            )
            key = message_key(tenant, event_id)
            encoded = _json(payload)
            announce.append((tenant, EVENTS, key, encoded, created))
            messages.append(Outgoing(tenant, key, payload, encoded))
        done: asyncio.Future[set[str]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Batch(tenant, event_ids, values, announce, messages, done))
        self._wake_writer()
        return await done

    async def _drain(self) -> None:
        while self._queue or self._removals:
            group, self._queue = self._queue, []
            removals, self._removals = self._removals, []
            # Should a group fail, each batch is tried alone: one caller's failure is not
            # every caller's. Deletes go with the first try only: should it fail, the relay
            # leaves their rows to the scan, which publishes them again.
            parts = [group] if len(group) <= 1 else [group, *([b] for b in group)]
            for part in parts:
                if part and all(batch.done.done() for batch in part):
                    continue
                try:
                    found = await self._write(part, removals if part is group else [])
                except Exception as exc:  # noqa: BLE001 - the caller gets the failure
                    if part is group:
                        for _, removed in removals:
                            if not removed.done():
                                removed.set_exception(exc)
                    if len(part) <= 1 or part is not group:
                        for batch in part:
                            if not batch.done.done():
                                batch.done.set_exception(exc)
                    continue
                if part is group:
                    for _, removed in removals:
                        if not removed.done():
                            removed.set_result(None)
                for batch, new in zip(part, found, strict=True):
                    if not batch.done.done():
                        batch.done.set_result(new)

    async def _write(
        self, group: list[_Batch], removals: list[tuple[Sequence[int], asyncio.Future[None]]]
    ) -> list[set[str]]:
        """One transaction for the group and the outbox deletes; per batch, the event ids
        that were new. An id twice in the group (two requests retrying one event at once) is
        new for the first only."""
        removed = [i for ids, _ in removals for i in ids]
        listener = self.listener
        if listener is None:
            return (await self._transaction(group, removed))[0]
        # The relay's scan waits while a transaction whose rows it takes over commits, so
        # that it never reads them before they are handed over.
        async with listener.handover() as taking:
            news, ids, messages = await self._transaction(group, removed)
            if taking and ids:
                listener.committed(EVENTS, ids, messages)
        return news

    async def _transaction(
        self, group: list[_Batch], removed: list[int]
    ) -> tuple[list[set[str]], list[int], list[Outgoing]]:
        """Per batch the new event ids; the outbox ids written, ascending, and their messages."""
        rows, owners = _unique(group)
        if self._sqlite is not None:
            # The whole transaction is one call into the writer's thread: a statement at a
            # time through the event loop waited for the loop between statements, which
            # under load was most of a transaction's time.
            return await self._sqlite.run(
                partial(self._sqlite_transaction, group, rows, owners, removed)
            )
        async with self._engine.begin() as conn:
            if removed:
                await self._remove(conn, removed)
            new: set[tuple[str, str]] = set()
            for start in range(0, len(rows), _ROWS_PER_STATEMENT):
                chunk = rows[start : start + _ROWS_PER_STATEMENT]
                result = await conn.exec_driver_sql(
                    self._statement("events", len(chunk)), tuple(chain.from_iterable(chunk))
                )
                # Plain tuples: a Row compares in Python, and every key is looked up below.
                new.update(_pairs(result))
            news, announce, messages = _announced(group, owners, new)
            ids: list[int] = []
            for start in range(0, len(announce), _ROWS_PER_STATEMENT):
                chunk = announce[start : start + _ROWS_PER_STATEMENT]
                result = await conn.exec_driver_sql(
                    self._statement("outbox", len(chunk)), tuple(chain.from_iterable(chunk))
                )
                ids += (row_id for (row_id,) in result)
        ids.sort()  # RETURNING promises no order; ids grow in insert order
        return news, ids, messages

    def _sqlite_transaction(
        self,
        group: list[_Batch],
        rows: list[tuple[Any, ...]],
        owners: dict[tuple[str, str], int],
        removed: list[int],
        db: sqlite3.Connection,
    ) -> tuple[list[set[str]], list[int], list[Outgoing]]:
        """``_transaction`` on the SQLite writer's own connection, in its thread."""
        db.execute("BEGIN IMMEDIATE")
        try:
            if removed:
                db.execute(_SQLITE_REMOVE, (_json(removed),))
            # All rows as one JSON parameter that SQLite takes apart (json_each), not ten
            # parameters a row bound one by one: the binding held the GIL, SQLite does not.
            # Every statement gives the GIL up while SQLite works and waits to take it back
            # from the busy event loop (up to the 5 ms switch interval), so the transaction
            # is as few statements as it can be: the events inserted are read back only
            # when some were already stored (a retry), by the row ids the insert gave them
            # (one past the largest, in a row).
            cursor = db.execute(_SQLITE_INSERT_EVENTS, (orjson.dumps(rows),))
            if cursor.rowcount == len(rows):
                new: AbstractSet[tuple[str, str]] = owners.keys()
            else:
                last = cursor.lastrowid or 0
                found = db.execute(_SQLITE_INSERTED, (last - cursor.rowcount + 1, last)).fetchall()
                new = {(tenant, event_id) for tenant, event_id in found}
            news, announce, messages = _announced(group, owners, new)
            ids: list[int] = []
            if announce:
                cursor = db.execute(_SQLITE_INSERT_OUTBOX, (orjson.dumps(announce),))
                # One statement under the write lock numbers its rows one past the largest
                # id, in a row: no need to read them back.
                last = cursor.lastrowid or 0
                if cursor.rowcount != len(announce):
                    raise RuntimeError(f"{cursor.rowcount} outbox rows of {len(announce)}")
                ids = list(range(last - len(announce) + 1, last + 1))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return news, ids, messages

    async def _remove(self, conn: AsyncConnection, ids: list[int]) -> None:
        if self._postgres:
            await conn.exec_driver_sql("DELETE FROM outbox WHERE id = ANY($1::bigint[])", (ids,))
        else:
            await conn.exec_driver_sql(_SQLITE_REMOVE, (_json(ids),))

    def _time(self, value: dt.datetime) -> Any:
        """A UTC time as the driver takes it: asyncpg a datetime; SQLite the text SQLAlchemy
        writes for ``DateTime`` (and parses back when reading), ``YYYY-MM-DD HH:MM:SS.ffffff``
        (``isoformat`` is twice as fast as ``strftime``; the cut drops the offset)."""
        if self._postgres:
            return value
        if value.tzinfo is not dt.UTC:
            value = value.astimezone(dt.UTC)
        return value.isoformat(" ", "microseconds")[:26]

    def _statement(self, table: str, rows: int, *, returning: bool = True) -> str:
        found = self._statements.get((table, rows, returning))
        if found is None:
            columns = _EVENT_COLUMNS if table == "events" else _OUTBOX_COLUMNS
            width = len(columns)
            if self._postgres:
                groups = (
                    "(" + ",".join(f"${r * width + c + 1}" for c in range(width)) + ")"
                    for r in range(rows)
                )
            else:
                groups = ("(" + ",".join("?" * width) + ")" for _ in range(rows))
            # Table and column names are this module's constants; every value is a parameter.
            found = f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join(groups)}"  # noqa: S608
            if table == "events":
                found += " ON CONFLICT (tenant, event_id) DO NOTHING"
                if returning:
                    found += " RETURNING tenant, event_id"
            elif returning:
                found += " RETURNING id"
            if len(self._statements) >= 256:
                self._statements.clear()
            self._statements[(table, rows, returning)] = found
        return found

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


def _unique(group: list[_Batch]) -> tuple[list[tuple[Any, ...]], dict[tuple[str, str], int]]:
    """The group's rows, each (tenant, event id) once, and which batch each came from first."""
    rows: list[tuple[Any, ...]] = []
    owners: dict[tuple[str, str], int] = {}
    for index, batch in enumerate(group):
        tenant = batch.tenant
        for event_id, row in zip(batch.event_ids, batch.rows, strict=True):
            key = (tenant, event_id)
            if key not in owners:
                owners[key] = index
                rows.append(row)
    return rows, owners


def _announced(
    group: list[_Batch],
    owners: dict[tuple[str, str], int],
    new: AbstractSet[tuple[str, str]],
) -> tuple[list[set[str]], list[tuple[Any, ...]], list[Outgoing]]:
    """Per batch its new event ids; the outbox rows of those events and their messages."""
    news: list[set[str]] = []
    announce: list[tuple[Any, ...]] = []
    messages: list[Outgoing] = []
    for index, batch in enumerate(group):
        tenant = batch.tenant
        fresh: set[str] = set()
        for event_id, row, message in zip(
            batch.event_ids, batch.outbox, batch.messages, strict=True
        ):
            key = (tenant, event_id)
            if key in new and owners[key] == index:
                fresh.add(event_id)
                announce.append(row)
                messages.append(message)
        news.append(fresh)
    return news, announce, messages


def _pairs(result: Any) -> Iterable[tuple[str, str]]:
    return ((tenant, event_id) for tenant, event_id in result)


def _micros(value: dt.datetime) -> int:
    """A time as integer microseconds since the epoch (exact: a datetime holds microseconds)."""
    return round(value.timestamp() * 1_000_000)


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


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
