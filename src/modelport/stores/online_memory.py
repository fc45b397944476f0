"""The embedded online store: latest values per entity in this process's memory, persisted to the
``online_features`` SQL table so that a restart keeps them.

Reads never touch SQL: they look up a dict under a lock held for microseconds, so they run as
well on the event loop as in the batch runtime's worker threads. A write decides which rows win
against memory, writes exactly those in one transaction, then applies them to memory; writes are
serialised (SQLite serialises them anyway). The SQL upsert only replaces a row with an equal or
newer event time, so even two processes sharing one database keep the newest event in SQL.

Each process has its own memory: values that another process (the CLI, another replica) writes
to the database reach this one only when it starts. Serve from one replica, push through its
API, or use the Redis backend. Rows older than their TTL plus the grace period read as missing
at once and leave memory and the table at the next start.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from modelport.stores.online import (
    FeatureRow,
    FeatureView,
    NumberRead,
    ReadResult,
    ViewRead,
    WriteResult,
)
from modelport.stores.online_records import (
    DEFAULT_GRACE_S,
    Record,
    assemble,
    numbers,
    over_cap,
    stored_bytes,
    wins,
)
from modelport.stores.sql.schema import online_features

_Table = dict[str, Record]


class MemoryOnlineStore:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        grace_s: float = DEFAULT_GRACE_S,
        max_tenant_bytes: int | None = None,
    ) -> None:
        """``max_tenant_bytes``: the most a tenant may store (``stored_bytes`` per record)."""
        self._engine = engine
        self._grace_s = grace_s
        self._max_tenant_bytes = max_tenant_bytes
        self._usage: dict[str, int] = {}
        self._tables: dict[tuple[str, str], _Table] = {}
        self._lock = threading.Lock()
        self._write_lock = asyncio.Lock()
        self._loaded = False

    async def load(self) -> None:
        """Read every unexpired value from SQL (and drop the rows past their grace period)."""
        now = time.time()
        async with self._engine.begin() as conn:
            await conn.execute(delete(online_features).where(online_features.c.expires_at <= now))
            rows = (
                await conn.execute(
                    select(
                        online_features.c.tenant,
                        online_features.c.view,
                        online_features.c.entity_key,
                        online_features.c["values"].label("stored"),
                        online_features.c.event_ts,
                    )
                )
            ).all()
        tables: dict[tuple[str, str], _Table] = {}
        for row in rows:
            tables.setdefault((row.tenant, row.view), {})[row.entity_key] = Record(
                float(row.event_ts), dict(row.stored)
            )
        usage: dict[str, int] = {}
        for (tenant, _), table in tables.items():
            usage[tenant] = usage.get(tenant, 0) + sum(
                stored_bytes(entity, record.values) for entity, record in table.items()
            )
        with self._lock:
            self._tables = tables
            self._usage = usage
            self._loaded = True

    async def write(self, view: FeatureView, rows: Sequence[FeatureRow]) -> WriteResult:
        async with self._write_lock:
            if not self._loaded:
                await self.load()
            table = self._tables.get((view.tenant, view.name), {})
            winners: dict[str, Record] = {}
            stale = 0
            for row in rows:
                current = winners.get(row.entity) or table.get(row.entity)
                if wins(row.event_ts, None if current is None else current.event_ts):
                    winners[row.entity] = Record(row.event_ts, dict(row.values))
                else:
                    stale += 1
            if winners:
                usage = self._charge(view.tenant, table, winners)
                await self._persist(view, winners)
                self._usage[view.tenant] = usage
                with self._lock:
                    self._tables.setdefault((view.tenant, view.name), {}).update(winners)
        return WriteResult(written=len(rows) - stale, stale=stale)

    def _charge(self, tenant: str, table: _Table, winners: dict[str, Record]) -> int:
        """The tenant's stored bytes once the winners replace their records, or refuse them
        all when that passes the cap. Records past their grace period count until the next
        start."""
        adding = 0
        for entity, record in winners.items():
            old = table.get(entity)
            adding += stored_bytes(entity, record.values)
            if old is not None:
                adding -= stored_bytes(entity, old.values)
        stored = self._usage.get(tenant, 0)
        cap = self._max_tenant_bytes
        if cap is not None and adding > 0 and stored + adding > cap:
            raise over_cap(tenant, stored, adding, cap)
        return stored + adding

    async def read(self, reads: Sequence[ViewRead], now: float | None = None) -> ReadResult:
        if not self._loaded:
            async with self._write_lock:
                if not self._loaded:
                    await self.load()
        return self.read_blocking(reads, now)

    def read_blocking(self, reads: Sequence[ViewRead], now: float | None = None) -> ReadResult:
        at = time.time() if now is None else now
        return assemble(reads, self.read_records_blocking(reads), at, self._grace_s)

    def read_records_blocking(self, reads: Sequence[ViewRead]) -> list[list[Record | None]]:
        """The stored records, aligned with each read's keys (None: no record)."""
        if not self._loaded:
            raise RuntimeError("MemoryOnlineStore.load() must run before read_blocking()")
        with self._lock:
            return [
                [table.get(key) for key in read.keys]
                if (table := self._tables.get((read.view.tenant, read.view.name)))
                else [None] * len(read.keys)
                for read in reads
            ]

    async def read_records(self, reads: Sequence[ViewRead]) -> list[list[Record | None]]:
        if not self._loaded:
            async with self._write_lock:
                if not self._loaded:
                    await self.load()
        return self.read_records_blocking(reads)

    def read_numbers_blocking(self, reads: Sequence[ViewRead]) -> list[NumberRead]:
        return numbers(reads, self.read_records_blocking(reads))

    async def read_numbers(self, reads: Sequence[ViewRead]) -> list[NumberRead]:
        return numbers(reads, await self.read_records(reads))

    async def close(self) -> None:
        with self._lock:
            self._tables = {}
            self._loaded = False

    async def _persist(self, view: FeatureView, winners: dict[str, Record]) -> None:
        updated_at = dt.datetime.now(dt.UTC)
        params = [
            {
                "tenant": view.tenant,
                "view": view.name,
                "entity_key": entity,
                "values": record.values,
                "event_ts": record.event_ts,
                "expires_at": record.event_ts + view.ttl_s + self._grace_s,
                "updated_at": updated_at,
            }
            for entity, record in winners.items()
        ]
        dialect: Any = postgresql if self._engine.dialect.name == "postgresql" else sqlite
        stmt = dialect.insert(online_features)
        # Another process may have written a newer event meanwhile: never replace it.
        stmt = stmt.on_conflict_do_update(
            index_elements=["tenant", "view", "entity_key"],
            set_={
                "values": stmt.excluded["values"],
                "event_ts": stmt.excluded.event_ts,
                "expires_at": stmt.excluded.expires_at,
                "updated_at": stmt.excluded.updated_at,
            },
            where=online_features.c.event_ts <= stmt.excluded.event_ts,
        )
        async with self._engine.begin() as conn:
            await conn.execute(stmt, params)
