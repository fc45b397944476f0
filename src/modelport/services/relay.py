"""The relay: moves committed outbox rows to the stream and trims the stream.

One relay publishes at a time across every replica (the ``outbox-relay`` lease in the registry
database). It publishes and only then deletes the rows: a relay that dies in between leaves
them in the outbox, and the next one publishes them again. Consumers absorb such a repeat,
since their effects are idempotent per message key (``stores/streams.py``).

Rows reach it two ways:

- **from memory**: a store of this process that writes many messages (the event intake) hands
  the rows of each committed transaction over (``OutboxListener``); the relay publishes them
  at once, in commit order, without reading them back from SQL. Reading back every message,
  decoding it and deleting it in a transaction of its own cost the server about as much as
  taking the events in. Only the leader takes rows over; another replica leaves its rows in
  the outbox for the leader's scan.
- **the scan**: every ``interval_s``, when nudged, and while a scan finds a full batch, the
  oldest rows in the outbox that no transaction of this process is handing over: other
  changes (the catalog), other replicas' rows, and what a crashed process left.

Within each path messages keep the order they committed in; between the paths a message can
pass an older one of the same topic (events of another replica, or left by a crash), which
consumers do not depend on (their aggregates are keyed and timestamped).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

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
        max_held: int = 100_000,
        remove: Callable[[Sequence[int]], Awaitable[None]] | None = None,
    ) -> None:
        """Without ``leases`` this relay publishes whenever it runs (one process, or tests).
        Every ``trim_interval_s`` it also trims ``topics`` (and any other it published to)
        of what every consumer group has acknowledged. It holds at most ``max_held`` messages
        handed over in memory; past that (a stream that is down), rows wait in the outbox.
        ``remove`` deletes the rows it published from memory (default: ``outbox.remove``; the
        event store's writer, which deletes them in its next transaction: on SQLite a delete
        of its own would wait for the single write lock, in steps of milliseconds)."""
        self._outbox = outbox
        self._stream = stream
        self._batch_size = batch_size
        self._interval_s = interval_s
        self._leases = leases
        self._lease_ttl_s = lease_ttl_s
        self._trim_interval_s = trim_interval_s
        self._topics = set(topics)
        self._trimmed_at = time.monotonic()
        self._scanned_at = -float("inf")
        self.replica = replica or uuid.uuid4().hex[:16]
        self._task: asyncio.Task[None] | None = None
        self._nudged = asyncio.Event()
        self._renewed_at = -float("inf")
        self._max_held = max_held
        self._remove = remove or outbox.remove
        self._held: list[tuple[str, Sequence[int], Sequence[Outgoing]]] = []
        self._held_count = 0
        # The ids of each transaction handed over and not yet deleted: the scan leaves them
        # alone. Kept per transaction (released as a whole), made a set only when scanning.
        self._claimed: list[Sequence[int]] = []
        self._scan_due = True
        self._handed_at = -float("inf")
        # Held around a handover and around a scan's read: a scan never sees rows that
        # committed but are not yet handed over.
        self._handing_over = asyncio.Lock()
        self.leader = leases is None
        self.published = 0
        """Messages this relay has published since it started."""

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    def nudge(self) -> None:
        """Something was just enqueued in this process: scan the outbox now rather than at
        the next interval."""
        self._scan_due = True
        self._nudged.set()

    # ------------------------------------------------------------------ OutboxListener

    @contextlib.asynccontextmanager
    async def handover(self) -> AsyncIterator[bool]:
        if not self.leader or self._task is None or self._held_count >= self._max_held:
            yield False  # the rows wait in the outbox for the scan (of the leader)
            return
        async with self._handing_over:
            yield True

    def _release(self, ids: Sequence[int]) -> None:
        self._claimed = [some for some in self._claimed if some is not ids]

    def committed(self, topic: str, ids: Sequence[int], messages: Sequence[Outgoing]) -> None:
        self._claimed.append(ids)
        self._handed_at = time.monotonic()
        self._held.append((topic, ids, messages))
        self._held_count += len(ids)
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
        """Publish the oldest batch of outbox rows (but those handed over in memory) and
        delete them; returns how many."""
        async with self._handing_over:
            found = await self._outbox.oldest_ids(self._batch_size)
        # A full batch: more may wait behind it.
        self._scan_due = len(found) >= self._batch_size
        if self._claimed:
            claimed = set(itertools.chain.from_iterable(self._claimed))
            found = [row_id for row_id in found if row_id not in claimed]
        rows = await self._outbox.messages(found)
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

    async def publish_held(self) -> int:
        """Publish what was handed over in memory, in commit order, then delete its rows;
        returns how many. Should publishing fail, the rest stays in the outbox for the scan."""
        if not self._held:
            return 0
        held, self._held, self._held_count = self._held, [], 0
        done: list[int] = []
        try:
            # Consecutive transactions of one topic go in one publish.
            for topic, same_topic in itertools.groupby(held, key=lambda h: h[0]):
                self._topics.add(topic)
                ids: list[int] = []
                messages: list[Outgoing] = []
                for _, some_ids, some_messages in same_topic:
                    ids += some_ids
                    messages += some_messages
                await self._stream.publish(topic, messages)
                done += ids
        finally:
            try:
                await self._remove(done)
                self.published += len(done)
            finally:
                for _, handed, _ in held:
                    self._release(handed)
        return len(done)

    async def drain(self) -> int:
        """Publish until the outbox is empty; returns how many."""
        total = await self.publish_held()
        while moved := await self.run_once():
            total += moved
        return total

    async def tick(self) -> int:
        """One round of the background task: renew the lease; if held, publish what was handed
        over, and scan the outbox when due."""
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
            # The leader scans; this replica waits for the interval (or a nudge) before asking
            # for the lease again, rather than spinning on the scan its start asked for.
            self._scan_due = False
            if self._held:  # lost the lease: the leader's scan will find these rows
                for _, handed, _ in self._held:
                    self._release(handed)
                self._held, self._held_count = [], 0
            return 0
        moved = await self.publish_held()
        # While transactions are handed over, the outbox is scanned once an interval (or
        # when nudged, or while a scan finds a full batch): it would mostly read rows being
        # handed over. Otherwise on every tick.
        now = time.monotonic()
        handing_over = now - self._handed_at < self._interval_s
        if not handing_over or self._scan_due or now - self._scanned_at >= self._interval_s:
            self._scanned_at = time.monotonic()
            moved += await self.run_once()
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
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the rows stay in the outbox; next tick retries
                log.warning("outbox_relay_failed", error=f"{type(exc).__name__}: {exc}")
                self._scan_due = False  # the next try waits for the interval
            else:
                if self._held or self._scan_due:
                    await asyncio.sleep(0)  # more are waiting: go on, yielding to the loop
                    continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._nudged.wait(), self._interval_s)
            self._nudged.clear()
