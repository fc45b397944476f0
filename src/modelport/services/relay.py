"""The relay: moves committed outbox rows to the stream, oldest first, and trims the stream.

One relay publishes at a time across every replica (the ``outbox-relay`` lease in the registry
database), so messages reach the stream in the order their changes committed. It publishes a
batch and only then deletes its rows: a relay that dies in between leaves them in the outbox,
and the next one publishes them again. Consumers absorb such a repeat, since their effects are
idempotent per message key (``stores/streams.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid

import structlog

from modelport.stores.leases import LeaseStore
from modelport.stores.outbox import CATALOG, EVENTS, Outbox
from modelport.stores.streams import Outgoing, Stream

log = structlog.get_logger("modelport.relay")

LEASE = "outbox-relay"


class Relay:
    def __init__(
        self,
        outbox: Outbox,
        stream: Stream,
        *,
        batch_size: int,
        interval_s: float,
        leases: LeaseStore | None = None,
        lease_ttl_s: float = 10.0,
        trim_interval_s: float = 60.0,
        topics: tuple[str, ...] = (EVENTS, CATALOG),
        replica: str | None = None,
    ) -> None:
        """Without ``leases`` this relay publishes whenever it runs (one process, or tests).
        Every ``trim_interval_s`` it also trims ``topics`` (and any other it published to)
        of what every consumer group has acknowledged."""
        self._outbox = outbox
        self._stream = stream
        self._batch_size = batch_size
        self._interval_s = interval_s
        self._leases = leases
        self._lease_ttl_s = lease_ttl_s
        self._trim_interval_s = trim_interval_s
        self._topics = set(topics)
        self._trimmed_at = time.monotonic()
        self.replica = replica or uuid.uuid4().hex[:16]
        self._task: asyncio.Task[None] | None = None
        self._nudged = asyncio.Event()
        self._renewed_at = -float("inf")
        self.leader = leases is None
        self.published = 0
        """Messages this relay has published since it started."""

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    def nudge(self) -> None:
        """Something was just enqueued in this process: relay now rather than at the next
        interval."""
        self._nudged.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._leases is not None and self.leader:
            with contextlib.suppress(Exception):
                await self._leases.release(LEASE, self.replica)

    async def run_once(self) -> int:
        """Publish the oldest batch of outbox rows and delete them; returns how many."""
        rows = await self._outbox.oldest(self._batch_size)
        if not rows:
            return 0
        done: list[int] = []
        try:
            # Consecutive rows of one topic go in one publish; the topics' order is kept.
            for topic, same_topic in itertools.groupby(rows, key=lambda row: row.topic):
                self._topics.add(topic)
                batch = list(same_topic)
                await self._stream.publish(
                    topic, [Outgoing(row.tenant, row.key, row.payload) for row in batch]
                )
                done += (row.id for row in batch)
        finally:
            # After a failed publish, what went out before it is not sent again next time.
            await self._outbox.remove(done)
            self.published += len(done)
        return len(rows)

    async def drain(self) -> int:
        """Publish until the outbox is empty; returns how many."""
        total = 0
        while moved := await self.run_once():
            total += moved
        return total

    async def tick(self) -> int:
        """One round of the background task: renew the lease, then publish a batch if held."""
        # The leader renews at a third of the lease's life, not on every tick: a tick may come
        # every few milliseconds under load.
        renew_due = time.monotonic() - self._renewed_at > self._lease_ttl_s / 3
        if self._leases is not None and (renew_due or not self.leader):
            leader = await self._leases.acquire(LEASE, self.replica, self._lease_ttl_s)
            if leader:
                self._renewed_at = time.monotonic()
            if leader != self.leader:
                log.info("outbox_relay_lease", replica=self.replica, leader=leader)
                self.leader = leader
        if not self.leader:
            return 0
        moved = await self.run_once()
        if time.monotonic() - self._trimmed_at > self._trim_interval_s:
            self._trimmed_at = time.monotonic()
            await self.trim()
        return moved

    async def trim(self) -> int:
        """Delete what every group has acknowledged from the known topics; returns how many."""
        trimmed = 0
        for topic in sorted(self._topics):
            trimmed += await self._stream.trim(topic)
        if trimmed:
            log.info("stream_trimmed", messages=trimmed)
        return trimmed

    async def _run(self) -> None:
        while True:
            try:
                moved = await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the rows stay in the outbox; next tick retries
                log.warning("outbox_relay_failed", error=f"{type(exc).__name__}: {exc}")
                moved = 0
            if moved >= self._batch_size:
                await asyncio.sleep(0)  # more are waiting: go on, yielding to the loop
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._nudged.wait(), self._interval_s)
            self._nudged.clear()
