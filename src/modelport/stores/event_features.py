"""What the built-in feature consumers aggregate per entity, and which messages they applied.

One :class:`StateTransaction` is one batch of a consumer group: it records the batch's message
keys in ``processed_messages`` (a key already there was applied before: its message is a
redelivery), reads and writes ``event_feature_state``, and commits both together. A crash
before the commit applies nothing; after it, every message of the batch is recorded, so its
redelivery applies nothing again.

Batches of one tenant are serialised: on PostgreSQL by a transaction-scoped advisory lock per
(group, tenant), taken in sorted order, so two workers never interleave their reads and writes
of one entity and never deadlock; SQLite serialises writers anyway (the first statement, the
insert into ``processed_messages``, takes its write lock).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import delete, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from modelport.stores.sql.schema import event_feature_state, processed_messages

#: (tenant, kind, entity key)
StateKey = tuple[str, str, str]
#: Keys per ``IN`` list: well under PostgreSQL's 32,767 bind parameters.
_CHUNK = 1000


class State:
    """One entity's aggregate and the version it was read at."""

    __slots__ = ("data", "version")

    def __init__(self, data: dict[str, Any], version: float) -> None:
        self.data = data
        self.version = version


class StateTransaction:
    def __init__(self, conn: AsyncConnection, dialect: Any) -> None:
        self._conn = conn
        self._dialect = dialect

    async def claim(self, group: str, tenants: Iterable[str], keys: Sequence[str]) -> set[str]:
        """Record ``keys`` as processed by ``group``; returns those that were not already."""
        if self._dialect is postgresql:
            for tenant in sorted(set(tenants)):
                await self._conn.execute(
                    text("SELECT pg_advisory_xact_lock(:lock)"),
                    {"lock": _lock_id(group, tenant)},
                )
        unique = list(dict.fromkeys(keys))
        if not unique:
            return set()
        now = dt.datetime.now(dt.UTC)
        stmt = (
            self._dialect.insert(processed_messages)
            .on_conflict_do_nothing(index_elements=["group_name", "key"])
            .returning(processed_messages.c.key)
        )
        result = await self._conn.execute(
            stmt, [{"group_name": group, "key": key, "processed_at": now} for key in unique]
        )
        return {row[0] for row in result}

    async def load(self, keys: Iterable[StateKey]) -> dict[StateKey, State]:
        """The stored state of each key (an empty one, version 0, where there is none)."""
        wanted: dict[tuple[str, str], list[str]] = {}
        for tenant, kind, entity in set(keys):
            wanted.setdefault((tenant, kind), []).append(entity)
        found: dict[StateKey, State] = {}
        table = event_feature_state.c
        for (tenant, kind), entities in wanted.items():
            for start in range(0, len(entities), _CHUNK):
                chunk = entities[start : start + _CHUNK]
                rows = await self._conn.execute(
                    select(table.entity_key, table.state, table.version).where(
                        table.tenant == tenant, table.kind == kind, table.entity_key.in_(chunk)
                    )
                )
                for row in rows:
                    found[(tenant, kind, row.entity_key)] = State(
                        dict(row.state), float(row.version)
                    )
            for entity in entities:
                found.setdefault((tenant, kind, entity), State({}, 0.0))
        return found

    async def save(self, states: dict[StateKey, State]) -> None:
        if not states:
            return
        stmt = self._dialect.insert(event_feature_state)
        stmt = stmt.on_conflict_do_update(
            index_elements=["tenant", "kind", "entity_key"],
            set_={"state": stmt.excluded.state, "version": stmt.excluded.version},
        )
        await self._conn.execute(
            stmt,
            [
                {
                    "tenant": tenant,
                    "kind": kind,
                    "entity_key": entity,
                    "state": state.data,
                    "version": state.version,
                }
                for (tenant, kind, entity), state in sorted(states.items())
            ],
        )


class FeatureStateStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._dialect: Any = postgresql if engine.dialect.name == "postgresql" else sqlite

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[StateTransaction]:
        async with self._engine.begin() as conn:
            yield StateTransaction(conn, self._dialect)

    async def purge_processed(self, group: str, before: dt.datetime, limit: int) -> int:
        """Forget at most ``limit`` of ``group``'s processed keys recorded before ``before``:
        their messages left the stream long ago, so none can be delivered again."""
        return await purge_processed(self._engine, group, before, limit)

    async def purge(self, kind: str, older_than: float, limit: int) -> int:
        """Delete at most ``limit`` states of ``kind`` not updated since ``older_than``."""
        table = event_feature_state.c
        doomed = (
            select(table.tenant, table.kind, table.entity_key)
            .where(table.kind == kind, table.version < older_than)
            .limit(limit)
            .subquery()
        )
        async with self._engine.begin() as conn:
            result = await conn.execute(
                delete(event_feature_state).where(
                    table.kind == kind,
                    table.entity_key.in_(select(doomed.c.entity_key)),
                    table.version < older_than,
                )
            )
        return int(result.rowcount or 0)


async def purge_processed(engine: AsyncEngine, group: str, before: dt.datetime, limit: int) -> int:
    """Forget at most ``limit`` of ``group``'s processed keys recorded before ``before``."""
    table = processed_messages.c
    doomed = (
        select(table.key)
        .where(table.group_name == group, table.processed_at < before)
        .limit(limit)
        .subquery()
    )
    async with engine.begin() as conn:
        result = await conn.execute(
            delete(processed_messages).where(
                table.group_name == group, table.key.in_(select(doomed.c.key))
            )
        )
    return int(result.rowcount or 0)


def _lock_id(group: str, tenant: str) -> int:
    """A stable signed 64-bit advisory lock id for (group, tenant)."""
    digest = hashlib.blake2b(f"modelport:{group}:{tenant}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)
