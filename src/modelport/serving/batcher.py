"""Dynamic batching: a queue plus one future per request, flushed on size or delay.

One dispatcher task per loaded version forms a batch only when a compute slot (``instances``)
is free, so while the runtime is busy the queue fills and the next batch comes out larger: the
batch size adapts to load without tuning. With ``flush_when_idle`` a filling batch also stops
waiting when requests stop arriving (every client is already queued). The runtime call runs in
a worker thread; the event loop only stacks and slices arrays.

Event-loop traps this module avoids: futures of requests whose caller went away (client
disconnect cancels the awaiting task) are skipped, never set; every task it creates is kept in
``self._tasks`` until it finishes; timers are cancelled when the batch fills first.

Nothing waits forever. Each runtime call must return within ``compute_timeout_s``: past it,
the batch's requests fail with ``ComputeTimeout``, the queued ones with ``ModelNotReady``, the
batcher stops taking requests and tells its owner (``on_hang``), which reloads the version; the
thread stuck in the runtime is abandoned. One watchdog timer per batcher, armed for the oldest
running batch, checks this: a timer per batch (``call_later`` and ``cancel``) costs more than
a small model's whole batch under uvloop. The dispatcher task is supervised: if it dies, the
error is logged, the queued requests fail with ``ModelNotReady`` and a new dispatcher starts.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from modelport.errors import (
    ComputeTimeout,
    DeadlineExceeded,
    InferenceFailed,
    InvalidInput,
    ModelNotReady,
    ModelportError,
    QueueFull,
)
from modelport.serving.batching import (
    Answer,
    Arrays,
    Joined,
    Pending,
    batch_key,
    merge,
    split,
    take_batch,
)
from modelport.serving.compute import ComputeThreads
from modelport.serving.config import BatchingConfig

__all__ = [
    "Answer",
    "Arrays",
    "BatchObserver",
    "Batcher",
    "Joined",
    "NullObserver",
    "OnHang",
    "Pending",
    "Predict",
    "batch_key",
    "merge",
    "split",
    "take_batch",
]

Predict = Callable[[Arrays], Answer]
OnHang = Callable[[ComputeTimeout], None]

log = structlog.get_logger("modelport.batcher")


#: Passes of the event loop without a new request after which a filling batch stops waiting.
#: Two, not one: bytes read in one pass reach ``enqueue`` from their request's task in the next.
QUIET_PASSES = 2


class BatchObserver(Protocol):
    """Receives what the batcher measures (``observability.metrics`` implements it)."""

    def queue_wait(self, seconds: float) -> None: ...
    def batch(self, rows: int, compute_seconds: float, ok: bool) -> None: ...


class NullObserver:
    def queue_wait(self, seconds: float) -> None:
        pass

    def batch(self, rows: int, compute_seconds: float, ok: bool) -> None:
        pass


@dataclass(slots=True)
class _State:
    pending: deque[Pending] = field(default_factory=deque)
    rows: int = 0
    earliest: float = float("inf")
    """No queued request's deadline is earlier than this (checking every request's deadline
    before each batch is skipped while it lies in the future)."""


class Batcher:
    def __init__(
        self,
        predict: Predict,
        config: BatchingConfig,
        threads: ComputeThreads,
        *,
        instances: int = 1,
        label: str = "model",
        observer: BatchObserver | None = None,
        stacked: bool = True,
        compute_timeout_s: float = 30.0,
        on_hang: OnHang | None = None,
    ) -> None:
        self._predict = predict
        self._config = config
        self._threads = threads
        self._label = label
        self._observer = observer or NullObserver()
        self._state = _State()
        self._slots = asyncio.Semaphore(instances)
        self._wake: asyncio.Future[None] | None = None
        self._full: asyncio.Future[bool] | None = None
        self._arrivals = 0
        """Requests queued so far: the idle flush watches it change."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._dispatcher: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._delay = config.max_queue_delay_ms / 1000.0
        self._max_batch = config.max_batch_size if stacked else 0
        self._stacked = stacked
        self._compute_timeout = compute_timeout_s
        self._computing: dict[asyncio.Future[Answer], tuple[float, int]] = {}
        """Runtime calls in progress: their deadline and rows."""
        self._watchdog: asyncio.TimerHandle | None = None
        self._on_hang = on_hang
        self._refusal = f"{label} is not accepting requests (unloading)"
        self.restarts = 0
        """How many times the dispatcher died and was restarted."""

    def now(self) -> float:
        """The event loop's clock, which deadlines passed to ``enqueue`` are on."""
        if self._loop is None:
            raise ModelNotReady(f"{self._label} is not accepting requests (not started)")
        return self._loop.time()

    @property
    def queued_rows(self) -> int:
        return self._state.rows

    def start(self) -> None:
        if self._dispatcher is None:
            self._loop = asyncio.get_running_loop()
            self._start_dispatcher(self._loop)

    def _start_dispatcher(self, loop: asyncio.AbstractEventLoop) -> None:
        task = loop.create_task(self._dispatch(), name=f"batcher:{self._label}")
        task.add_done_callback(self._dispatcher_done)
        self._dispatcher = task

    def _dispatcher_done(self, task: asyncio.Task[None]) -> None:
        """Supervise the dispatcher: one that ends while the batcher is open died."""
        if self._closing or task is not self._dispatcher or self._loop is None:
            return
        if task.cancelled():
            reason = "it was cancelled"
        else:
            exc = task.exception()
            reason = "it returned" if exc is None else f"{type(exc).__name__}: {exc}"
        log.error(
            "batcher_dispatcher_died",
            model=self._label,
            error=reason,
            queued=len(self._state.pending),
            exc_info=None if task.cancelled() else task.exception(),
        )
        self._fail_pending(
            ModelNotReady(f"{self._label} dropped its queue after an internal error; retry")
        )
        self._wake = None
        self._full = None
        self.restarts += 1
        self._start_dispatcher(self._loop)

    def _fail_pending(self, error: ModelportError) -> None:
        state = self._state  # emptied in place: the dispatcher holds it
        for item in state.pending:
            if not item.future.done():
                item.future.set_exception(error)
        state.pending = deque()
        state.rows = 0
        state.earliest = float("inf")

    def abort(self, reason: str) -> None:
        """Stop taking requests at once and fail the queued ones with ``ModelNotReady``
        (``reason``); batches already running finish. ``close`` still has to be called."""
        self._closing = True
        self._refusal = reason
        self._fail_pending(ModelNotReady(reason))
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)
        if self._full is not None and not self._full.done():
            self._full.set_result(False)

    async def submit(self, inputs: Arrays, rows: int, deadline: float = float("inf")) -> Answer:
        """Queue one request's rows and wait for its slice of the batch's answer."""
        return await self.enqueue(inputs, rows, deadline)

    def enqueue(
        self, inputs: Arrays, rows: int, deadline: float = float("inf")
    ) -> asyncio.Future[Answer]:
        """Queue one request's rows; the returned future gets its slice of the batch's answer
        (the outputs, or a ``Joined`` for a version that joins features in the batch).

        The request path awaits the future itself (one coroutine frame fewer per request than
        ``submit``); cancelling the future withdraws the request if its batch has not formed."""
        if self._closing or self._loop is None:
            raise ModelNotReady(self._refusal)
        if self._max_batch and rows > self._max_batch:
            raise InvalidInput(
                f"request has {rows} rows but {self._label} takes at most "
                f"{self._max_batch} per batch (max_batch_size)"
            )
        state = self._state
        if state.rows + rows > self._config.max_queue_size:
            raise QueueFull(self._label, self._config.max_queue_size, 1.0)
        loop = self._loop
        future: asyncio.Future[Answer] = loop.create_future()
        state.pending.append(
            Pending(inputs, rows, batch_key(inputs), future, loop.time(), deadline)
        )
        state.rows += rows
        self._arrivals += 1
        if deadline < state.earliest:
            state.earliest = deadline
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)
        full = self._full
        if (
            full is not None
            and not full.done()
            and (self._max_batch == 0 or state.rows >= self._max_batch)
        ):
            full.set_result(False)
        return future

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        state = self._state
        while True:
            await self._slots.acquire()
            try:
                while not state.pending:
                    if self._closing:
                        return
                    self._wake = loop.create_future()
                    await self._wake
                await self._wait_to_fill(loop)
                batch = self._take(loop.time())
            except BaseException:
                self._slots.release()
                raise
            if not batch:
                self._slots.release()
                continue
            task = loop.create_task(self._execute(batch), name=f"batch:{self._label}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _wait_to_fill(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait until the batch is full, its oldest request has waited the delay, or (with
        ``flush_when_idle``) requests have stopped arriving."""
        state = self._state
        if self._max_batch == 0 or self._delay == 0:
            return
        while state.pending and state.rows < self._max_batch and not self._closing:
            remaining = state.pending[0].enqueued + self._delay - loop.time()
            if remaining <= 0:
                return
            self._full = full = loop.create_future()
            timer = loop.call_later(remaining, _resolve, full)
            if self._config.flush_when_idle:
                loop.call_soon(self._watch_arrivals, full, self._arrivals, 0)
            try:
                if await full:
                    return  # the queue stopped growing: waiting longer would only idle
            finally:
                timer.cancel()
                self._full = None

    def _watch_arrivals(self, full: asyncio.Future[bool], seen: int, quiet: int) -> None:
        """Once per pass of the event loop while a batch fills: resolve ``full`` with True
        after ``QUIET_PASSES`` passes that queued no request.

        Under load every pass brings requests and the batch grows to its size or delay; when
        every client is already waiting in the queue, the batch forms at once instead of
        leaving the event loop idle until the delay is up."""
        if full.done():
            return
        if self._arrivals != seen:
            seen, quiet = self._arrivals, 0
        else:
            quiet += 1
            if quiet >= QUIET_PASSES:
                full.set_result(True)
                return
        asyncio.get_running_loop().call_soon(self._watch_arrivals, full, seen, quiet)

    def _take(self, now: float) -> list[Pending]:
        state = self._state
        pending = state.pending
        if state.earliest > now and not self._config.preferred_batch_sizes:
            batch = self._take_all(pending)
            if batch is not None:
                # The common case under load: every queued request fits one batch.
                state.pending = deque()
                state.rows = 0
                state.earliest = float("inf")
                return batch
        # Drop requests nobody waits for any more, and fail those past their deadline.
        live: deque[Pending] = deque()
        earliest = float("inf")
        for item in pending:
            if item.future.done():
                state.rows -= item.rows
            elif item.deadline <= now:
                state.rows -= item.rows
                item.future.set_exception(
                    DeadlineExceeded(
                        f"request to {self._label} waited {now - item.enqueued:.3f} s in the "
                        "queue, past its deadline; it was not run"
                    )
                )
            else:
                live.append(item)
                if item.deadline < earliest:
                    earliest = item.deadline
        state.pending = live
        state.earliest = earliest
        indices = take_batch(live, self._max_batch, self._config.preferred_batch_sizes)
        if not indices:
            return []
        chosen = set(indices)
        batch = [live[i] for i in indices]
        state.pending = deque([item for i, item in enumerate(live) if i not in chosen])
        state.rows -= sum(item.rows for item in batch)
        return batch

    def _take_all(self, pending: deque[Pending]) -> list[Pending] | None:
        """Every queued request as one batch, when they all share a key, fit together and
        still have a waiting caller; None otherwise."""
        if not pending or (self._max_batch and self._state.rows > self._max_batch):
            return None
        if not self._max_batch and len(pending) > 1:
            return None
        key = pending[0].key
        for item in pending:
            if item.key != key or item.future.done():
                return None
        return list(pending)

    async def _execute(self, batch: list[Pending]) -> None:
        loop = asyncio.get_running_loop()
        rows = sum(item.rows for item in batch)
        started = loop.time()
        try:
            # Observed here rather than while the dispatcher forms the batch: an observer
            # that raises fails this batch, never the dispatcher.
            observe = self._observer.queue_wait
            for item in batch:
                observe(started - item.enqueued)
            merged = merge(batch)
            computing = self._threads.run(self._predict, merged)
            running = self._computing
            running[computing] = (started + self._compute_timeout, rows)
            if self._watchdog is None:
                self._watchdog = loop.call_at(started + self._compute_timeout, self._watch)
            try:
                outputs = await computing
            finally:
                del running[computing]
            parts = split(outputs, batch, self._stacked)
        except ComputeTimeout as exc:
            self._observer.batch(rows, loop.time() - started, ok=False)
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            self._hung(exc)
        except Exception as exc:  # noqa: BLE001 - any runtime failure fails this batch only
            self._observer.batch(rows, loop.time() - started, ok=False)
            error = (
                exc
                if isinstance(exc, ModelportError)
                else InferenceFailed(f"{self._label} failed on a batch of {rows} rows: {exc}")
            )
            log.warning("batch_failed", model=self._label, rows=rows, error=str(error))
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(error)
        else:
            self._observer.batch(rows, loop.time() - started, ok=True)
            for item, part in zip(batch, parts, strict=True):
                if not item.future.done():
                    item.future.set_result(part)
        finally:
            self._slots.release()

    def _watch(self) -> None:
        """Fail the runtime calls past their deadline; re-arm for the next one due."""
        self._watchdog = None
        loop = self._loop
        if loop is None:
            return
        now = loop.time()
        due = float("inf")
        for computing, (deadline, rows) in list(self._computing.items()):
            if deadline <= now:
                if not computing.done():
                    computing.set_exception(
                        ComputeTimeout(
                            f"{self._label} did not finish a batch of {rows} row(s) within its "
                            f"compute timeout of {self._compute_timeout:g} s "
                            "(runtime.compute_timeout_s)"
                        )
                    )
            elif deadline < due:
                due = deadline
        if due != float("inf"):
            self._watchdog = loop.call_at(due, self._watch)

    def _hung(self, error: ComputeTimeout) -> None:
        """A runtime call ran past the compute timeout: its thread is lost to this batcher.
        Queued requests would wait behind it, so they fail now, and the owner reloads."""
        if self._closing:
            return
        log.error(
            "batch_timed_out",
            model=self._label,
            compute_timeout_s=self._compute_timeout,
            queued=len(self._state.pending),
        )
        self.abort(
            f"{self._label} is being reloaded: a batch ran past its compute timeout of "
            f"{self._compute_timeout:g} s; retry shortly"
        )
        if self._on_hang is not None:
            try:
                self._on_hang(error)
            except Exception:  # the batch task must end cleanly: log why instead
                log.exception("on_hang_failed", model=self._label)

    async def close(self, drain_timeout: float = 30.0) -> None:
        """Stop taking requests, finish the queued and running ones, then stop the dispatcher."""
        self._closing = True
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)
        if self._full is not None and not self._full.done():
            self._full.set_result(False)
        if self._dispatcher is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._dispatcher), drain_timeout)
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=drain_timeout)
        except TimeoutError:
            log.warning("batcher_drain_timeout", model=self._label)
        finally:
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
            self._fail_pending(ModelNotReady(f"{self._label} was unloaded"))
            if self._watchdog is not None and not self._computing:
                self._watchdog.cancel()  # (a batch still computing keeps it: it may hang)
                self._watchdog = None


def _resolve(future: asyncio.Future[bool]) -> None:
    if not future.done():
        future.set_result(False)
