"""The worker runtime: consumers driven over a stream, with retries, poison isolation and
dead letters.

Each consumer gets one loop, reading as consumer ``name`` of its group::

    claim_stale          messages a dead (or hung) worker left pending past claim_idle_s
      └ else read        new messages, waiting up to block_s
    handle(batch)        one call for the whole batch
      ├ ok             → ack the batch
      └ raised         → each message alone: handle([m]); on failure wait (exponential
                         backoff, full jitter) and try again; when a message's attempts reach
                         max_attempts it goes to the group's dead letters with its last error

A message's attempts start at its deliveries (``Message.attempts``), so tries made by a worker
that crashed count. Delivery is at least once: a worker killed between applying and acking
leaves the batch pending and another worker applies it again, which the consumers absorb
(their effects are idempotent per ``Message.key``). ``handle`` calls run under one semaphore
shared by every consumer (``concurrency``); one that runs past ``claim_idle_s`` is cancelled
and counts as a failed try (another worker would take its batch over by then anyway).
Stopping lets the batch in hand finish (acking only what was applied) and leaves the rest
pending for the next worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import time
from collections.abc import Coroutine, Sequence
from typing import Any

import structlog

from modelport.observability.metrics import Metrics
from modelport.stores.streams import Message, Stream
from modelport.workers.consumer import Consumer
from modelport.workers.retry import backoff_s

log = structlog.get_logger("modelport.workers")

#: The longest error text kept with a dead letter.
MAX_ERROR_CHARS = 2000


def describe(exc: BaseException) -> str:
    """The error recorded with a dead letter: its type and message."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:MAX_ERROR_CHARS]


def accepted_at(message: Message) -> dt.datetime:
    """When the effect's cause entered modelport: the event's ``accepted_at`` when the payload
    carries one (the events intake stamps it), else the message's publication."""
    value = message.payload.get("accepted_at")
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            parsed = dt.datetime.fromisoformat(value)
            return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value, dt.UTC)
    return message.published_at


class ConsumerTimeout(Exception):
    """A consumer's ``handle`` ran past the claim idle time (and was cancelled)."""


class _GroupMetrics:
    """One consumer group's metric children, bound once (or nothing without metrics)."""

    def __init__(self, metrics: Metrics | None, topic: str, group: str) -> None:
        self._metrics = metrics
        self._labels = (topic, group)

    def applied(self, messages: Sequence[Message]) -> None:
        if self._metrics is None:
            return
        self._metrics.stream_processed.labels(*self._labels).inc(len(messages))
        freshness = self._metrics.stream_freshness_seconds.labels(*self._labels)
        now = dt.datetime.now(dt.UTC)
        for message in messages:
            freshness.observe(max(0.0, (now - accepted_at(message)).total_seconds()))

    def retried(self) -> None:
        if self._metrics is not None:
            self._metrics.stream_retries.labels(*self._labels).inc()

    def dead_lettered(self) -> None:
        if self._metrics is not None:
            self._metrics.stream_dead_letters.labels(*self._labels).inc()

    def lag(self, value: int) -> None:
        if self._metrics is not None:
            self._metrics.stream_lag.labels(*self._labels).set(value)


class WorkerRuntime:
    """See the module docstring. ``start`` (or ``run``) begins, ``close`` stops and waits."""

    def __init__(
        self,
        stream: Stream,
        consumers: Sequence[Consumer],
        *,
        name: str,
        concurrency: int = 4,
        batch_size: int = 100,
        max_attempts: int = 5,
        backoff_base_s: float = 0.1,
        backoff_max_s: float = 30.0,
        claim_idle_s: float = 30.0,
        metrics: Metrics | None = None,
        block_s: float = 1.0,
        lag_interval_s: float = 5.0,
    ) -> None:
        if concurrency < 1 or batch_size < 1 or max_attempts < 1:
            raise ValueError("concurrency, batch_size and max_attempts must be at least 1")
        seen: set[tuple[str, str]] = set()
        for consumer in consumers:
            if (consumer.topic, consumer.group) in seen:
                raise ValueError(
                    f"two consumers read topic {consumer.topic!r} as group {consumer.group!r}"
                )
            seen.add((consumer.topic, consumer.group))
        self.name = name
        self.consumers = tuple(consumers)
        self._stream = stream
        self._concurrency = concurrency
        self._batch_size = batch_size
        self._max_attempts = max_attempts
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._claim_idle_s = claim_idle_s
        self._claim_every_s = min(claim_idle_s / 4, 5.0)
        # Per (topic, group): when to look for stale messages next.
        self._claim_due: dict[tuple[str, str], float] = {}
        self._block_s = block_s
        self._lag_interval_s = lag_interval_s
        self._metrics = metrics
        self._slots: asyncio.Semaphore | None = None
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start one loop per consumer and the lag reporter, on the running loop."""
        if self._tasks:
            return
        self._slots = asyncio.Semaphore(self._concurrency)
        for consumer in self.consumers:
            self._own(self._consume(consumer), f"worker:{consumer.topic}:{consumer.group}")
        if self._metrics is not None and self.consumers:
            self._own(self._report_lag(), "worker:lag")
        log.info(
            "worker_started",
            worker=self.name,
            consumers=[f"{c.topic}:{c.group}" for c in self.consumers],
        )

    async def run(self) -> None:
        """Run until ``stop`` is called (or the task running this is cancelled)."""
        self.start()
        try:
            await self._stopping.wait()
        finally:
            await self.close()

    def stop(self) -> None:
        """Ask every loop to stop after the batch in hand."""
        self._stopping.set()

    async def close(self) -> None:
        """Stop and wait for the batches in hand to finish."""
        self.stop()
        tasks, self._tasks = self._tasks, []
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
            log.info("worker_stopped", worker=self.name)

    def _own(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.append(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("worker_task_failed", task=task.get_name(), exc_info=task.exception())

    # ------------------------------------------------------------------ the consumer loop

    async def _consume(self, consumer: Consumer) -> None:
        metrics = _GroupMetrics(self._metrics, consumer.topic, consumer.group)
        failures = 0  # consecutive stream errors: back off while the stream is down
        while not self._stopping.is_set():
            try:
                batch = await self._next_batch(consumer)
                if batch:
                    await self._apply(consumer, batch, metrics)
                failures = 0
            except Exception:
                failures += 1
                log.exception(
                    "worker_stream_error",
                    worker=self.name,
                    topic=consumer.topic,
                    group=consumer.group,
                    failures=failures,
                )
                await self._pause(backoff_s(failures, self._backoff_base_s, self._backoff_max_s))

    async def _next_batch(self, consumer: Consumer) -> list[Message]:
        # A message becomes stale only after claim_idle_s: looking a few times per period is
        # enough (on the SQL stream each look is a write), except right after a full claim.
        where = (consumer.topic, consumer.group)
        if time.monotonic() < self._claim_due.get(where, 0.0):
            return await self._read(consumer)
        stale = await self._stream.claim_stale(
            consumer.topic, consumer.group, self.name, self._claim_idle_s, self._batch_size
        )
        full = len(stale) == self._batch_size
        self._claim_due[where] = 0.0 if full else time.monotonic() + self._claim_every_s
        if stale:
            log.info(
                "worker_claimed_stale",
                worker=self.name,
                topic=consumer.topic,
                group=consumer.group,
                messages=len(stale),
            )
            return stale
        return await self._read(consumer)

    async def _read(self, consumer: Consumer) -> list[Message]:
        return await self._stream.read(
            consumer.topic, consumer.group, self.name, self._batch_size, self._block_s
        )

    async def _apply(
        self, consumer: Consumer, batch: list[Message], metrics: _GroupMetrics
    ) -> None:
        try:
            await self._handle(consumer, batch)
        except Exception as exc:  # noqa: BLE001 - a consumer raises anything; it fails the batch
            if len(batch) == 1:
                await self._settle(consumer, batch[0], metrics, first_error=exc)
                return
            metrics.retried()
            log.warning(
                "worker_batch_failed",
                worker=self.name,
                topic=consumer.topic,
                group=consumer.group,
                messages=len(batch),
                error=describe(exc),
            )
            # One poison message must not hold back the others: each is tried alone.
            for message in batch:
                if self._stopping.is_set():
                    return  # the rest stay pending for the next worker
                await self._settle(consumer, message, metrics)
            return
        await self._stream.ack(consumer.topic, consumer.group, [m.id for m in batch])
        metrics.applied(batch)

    async def _settle(
        self,
        consumer: Consumer,
        message: Message,
        metrics: _GroupMetrics,
        first_error: Exception | None = None,
    ) -> None:
        """Apply ``message`` alone until it succeeds, or dead-letter it at max_attempts."""
        attempt = message.attempts
        error = first_error
        while True:
            if error is None:
                try:
                    await self._handle(consumer, [message])
                except Exception as exc:  # noqa: BLE001 - recorded with the dead letter
                    error = exc
                else:
                    await self._stream.ack(consumer.topic, consumer.group, [message.id])
                    metrics.applied([message])
                    return
            if attempt >= self._max_attempts:
                # Recorded with every try it had, this worker's retries included.
                tried = dataclasses.replace(message, attempts=attempt)
                await self._stream.dead_letter(
                    consumer.topic, consumer.group, tried, describe(error)
                )
                metrics.dead_lettered()
                log.warning(
                    "worker_dead_letter",
                    worker=self.name,
                    topic=consumer.topic,
                    group=consumer.group,
                    tenant=message.tenant,
                    key=message.key,
                    attempts=attempt,
                    error=describe(error),
                )
                return
            metrics.retried()
            if await self._pause(backoff_s(attempt, self._backoff_base_s, self._backoff_max_s)):
                return  # stopping: the message stays pending, its attempts counted
            attempt += 1
            error = None

    async def _handle(self, consumer: Consumer, messages: list[Message]) -> None:
        if self._slots is None:
            raise RuntimeError("the worker runtime was not started")
        async with self._slots:
            # Past claim_idle_s another worker takes the batch over anyway: this one stops
            # waiting for a consumer that hangs and counts the try as failed.
            limit = asyncio.timeout(self._claim_idle_s)
            try:
                async with limit:
                    await consumer.handle(messages)
            except TimeoutError:
                if not limit.expired():
                    raise  # the consumer's own timeout, not the runtime's
                raise ConsumerTimeout(
                    f"{consumer.group} did not apply {len(messages)} message(s) within "
                    f"{self._claim_idle_s:g} s"
                ) from None

    async def _pause(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless stopping first; True when stopping."""
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), seconds)
        return self._stopping.is_set()

    # ------------------------------------------------------------------ lag

    async def _report_lag(self) -> None:
        groups = [
            (c.topic, c.group, _GroupMetrics(self._metrics, c.topic, c.group))
            for c in self.consumers
        ]
        while not self._stopping.is_set():
            started = time.monotonic()
            for topic, group, metrics in groups:
                try:
                    metrics.lag(await self._stream.lag(topic, group))
                except Exception as exc:  # noqa: BLE001 - the next round tries again
                    log.warning("worker_lag_unknown", topic=topic, group=group, error=describe(exc))
            await self._pause(self._lag_interval_s - (time.monotonic() - started))
