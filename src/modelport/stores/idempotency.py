"""Idempotency-Key records: the first answer to a (tenant, key) pair, kept for a day.

A request with a key first *claims* it: one row, inserted under the table's primary key, so
of two concurrent requests with one key exactly one claims it and the other finds the claim.
The claimant runs, then *records* its answer on the row (or *releases* the claim when it
failed, so that a retry runs again). A later request with the key finds the answer and gets it
replayed, or, when the key came with another request, is refused.

A claim whose request never answered (its process died) blocks the key for ``stale_s``; after
that a new request takes the claim over. Rows older than ``ttl_s`` count as absent and are
deleted now and then by the requests themselves.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

from sqlalchemy import and_, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from modelport.errors import IdempotencyKeyInUse, IdempotencyKeyReused
from modelport.stores.sql.schema import idempotency_keys as keys
from modelport.stores.sql.timestamps import as_utc

IN_FLIGHT = "in_flight"
DONE = "done"

#: How often (at most) one process deletes expired rows, in seconds.
PURGE_EVERY_S = 60.0


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    """What the first request with a key answered."""

    status: int
    body: bytes
    headers: dict[str, str]


class IdempotencyKeys:
    def __init__(self, engine: AsyncEngine, *, ttl_s: float, stale_s: float) -> None:
        self._engine = engine
        self._ttl = dt.timedelta(seconds=ttl_s)
        self._stale = dt.timedelta(seconds=stale_s)
        self._next_purge = 0.0

    async def claim(self, tenant: str, key: str, request_hash: str) -> StoredAnswer | None:
        """None: the caller holds the key now and must ``record`` or ``release`` it. An answer:
        the key already answered this same request; replay it. Raises ``IdempotencyKeyReused``
        when the key answered (or is answering) another request, ``IdempotencyKeyInUse`` while
        the first request with it runs."""
        await self._purge_now_and_then()
        for _ in range(3):
            now = dt.datetime.now(dt.UTC)
            try:
                async with self._engine.begin() as conn:
                    await conn.execute(
                        insert(keys).values(
                            tenant=tenant,
                            key=key,
                            request_hash=request_hash,
                            state=IN_FLIGHT,
                            created_at=now,
                        )
                    )
                return None
            except IntegrityError:
                pass
            async with self._engine.begin() as conn:
                where = and_(keys.c.tenant == tenant, keys.c.key == key)
                row = (await conn.execute(select(keys).where(where))).first()
                if row is None:
                    continue  # released or purged meanwhile: claim again
                created = as_utc(row.created_at)
                expired = created < now - self._ttl
                abandoned = row.state == IN_FLIGHT and created < now - self._stale
                if expired or abandoned:
                    # Take it over only if nobody else did since we read it.
                    taken = await conn.execute(
                        update(keys)
                        .where(where, keys.c.created_at == row.created_at)
                        .values(
                            request_hash=request_hash,
                            state=IN_FLIGHT,
                            status=None,
                            response=None,
                            headers=None,
                            created_at=now,
                        )
                    )
                    if taken.rowcount == 1:
                        return None
                    continue
            if row.request_hash != request_hash:
                raise IdempotencyKeyReused(
                    "this Idempotency-Key was already used with another request (method, path "
                    "or body); send a new key for a new request"
                )
            if row.state == IN_FLIGHT:
                raise IdempotencyKeyInUse(
                    "a request with this Idempotency-Key is still in progress; retry it after "
                    "that one answered to get its answer"
                )
            return StoredAnswer(int(row.status), bytes(row.response), dict(row.headers or {}))
        raise IdempotencyKeyInUse(
            "the Idempotency-Key changed hands several times meanwhile; retry the request"
        )

    async def record(self, tenant: str, key: str, answer: StoredAnswer) -> None:
        """The claimed key's answer, replayed to every later request with it."""
        async with self._engine.begin() as conn:
            await conn.execute(
                update(keys)
                .where(keys.c.tenant == tenant, keys.c.key == key, keys.c.state == IN_FLIGHT)
                .values(
                    state=DONE, status=answer.status, response=answer.body, headers=answer.headers
                )
            )

    async def release(self, tenant: str, key: str) -> None:
        """Give a claimed key up (its request failed): a retry with it runs again."""
        async with self._engine.begin() as conn:
            await conn.execute(
                delete(keys).where(
                    keys.c.tenant == tenant, keys.c.key == key, keys.c.state == IN_FLIGHT
                )
            )

    async def purge(self) -> int:
        """Delete the rows past their time to live; how many."""
        cutoff = dt.datetime.now(dt.UTC) - self._ttl
        async with self._engine.begin() as conn:
            result = await conn.execute(delete(keys).where(keys.c.created_at < cutoff))
        return int(result.rowcount or 0)

    async def _purge_now_and_then(self) -> None:
        now = time.monotonic()
        if now >= self._next_purge:
            self._next_purge = now + PURGE_EVERY_S
            await self.purge()
