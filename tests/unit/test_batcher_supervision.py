"""Nothing waits forever in the batcher: the compute timeout and the supervised dispatcher.

Driven with a real numpy model in real compute threads; the model's call blocks on a
``threading.Event`` the test holds, as a hung runtime would.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
import structlog
from unit_helpers import Doubler

from modelport.errors import ComputeTimeout, DeadlineExceeded, ModelNotReady
from modelport.serving.batcher import Arrays, Batcher
from modelport.serving.compute import ComputeThreads
from modelport.serving.config import BatchingConfig

LABEL = "model 'demo' version '3'"


@pytest.fixture(autouse=True)
async def no_event_loop_errors() -> AsyncIterator[None]:
    """Fail the test if anything is left for the event loop to report (a task's exception
    never retrieved, a future set twice)."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        yield
        await asyncio.sleep(0)
        gc.collect()
    finally:
        loop.set_exception_handler(previous)
    assert not errors, errors


def rows_of(value: float, rows: int = 1) -> Arrays:
    return {"x": np.full((rows, 2), value, dtype=np.float64)}


async def wait_entered(model: Doubler) -> None:
    """The model's call has started in its worker thread (a thread's event, so polled)."""
    entered = await asyncio.to_thread(model.entered.wait, 5)
    assert entered, "the model was never called"


async def test_batch_past_compute_timeout_fails_naming_version_and_timeout(
    threads: ComputeThreads,
) -> None:
    gate = threading.Event()
    model = Doubler(gate=gate)
    hangs: list[ComputeTimeout] = []
    batcher = Batcher(
        model,
        BatchingConfig(max_batch_size=1, max_queue_delay_ms=0),
        threads,
        label=LABEL,
        compute_timeout_s=0.3,
        on_hang=hangs.append,
    )
    batcher.start()
    loop = asyncio.get_running_loop()
    try:
        started = loop.time()
        stuck = batcher.enqueue(rows_of(1.0), 1)
        await wait_entered(model)
        queued = batcher.enqueue(rows_of(2.0), 1)  # waits behind the stuck batch
        with pytest.raises(ComputeTimeout) as caught:
            await asyncio.wait_for(stuck, 5)
        elapsed = loop.time() - started
        assert 0.3 <= elapsed < 1.5, elapsed
        assert isinstance(caught.value, DeadlineExceeded)  # answered as 504
        assert LABEL in caught.value.message
        assert "compute timeout of 0.3 s" in caught.value.message

        # The request queued behind it is refused (503) at the same moment, not left waiting.
        with pytest.raises(ModelNotReady, match=r"ran past its compute timeout of 0\.3 s"):
            await asyncio.wait_for(queued, 0.5)
        # New requests are refused at once instead of queueing behind a thread that is lost.
        with pytest.raises(ModelNotReady, match="being reloaded"):
            batcher.enqueue(rows_of(3.0), 1)
        assert hangs == [caught.value]
    finally:
        gate.set()
        await batcher.close(drain_timeout=5)
    # The abandoned call returned later; nobody got its late answer.
    assert model.batch_sizes == [1]


async def test_each_running_batch_is_held_to_its_own_compute_timeout(
    threads: ComputeThreads,
) -> None:
    gate = threading.Event()
    model = Doubler(gate=gate)
    batcher = Batcher(
        model,
        BatchingConfig(max_batch_size=1, max_queue_delay_ms=0),
        threads,
        instances=2,
        label=LABEL,
        compute_timeout_s=0.3,
    )
    batcher.start()
    loop = asyncio.get_running_loop()
    try:
        first = batcher.enqueue(rows_of(1.0), 1)
        await wait_entered(model)
        await asyncio.sleep(0.15)
        second_started = loop.time()
        second = batcher.enqueue(rows_of(2.0), 1)  # runs beside the first, in the other slot
        with pytest.raises(ComputeTimeout):
            await asyncio.wait_for(first, 5)
        assert not second.done(), "a batch failed before its own compute timeout"
        with pytest.raises(ComputeTimeout):
            await asyncio.wait_for(second, 5)
        elapsed = loop.time() - second_started
        assert 0.3 <= elapsed < 1.5, elapsed
        assert len(model.calls) == 2
    finally:
        gate.set()
        await batcher.close(drain_timeout=5)


async def test_batches_within_the_compute_timeout_are_answered(threads: ComputeThreads) -> None:
    model = Doubler()
    hangs: list[ComputeTimeout] = []
    batcher = Batcher(
        model,
        BatchingConfig(max_batch_size=4, max_queue_delay_ms=1),
        threads,
        label=LABEL,
        compute_timeout_s=0.05,
        on_hang=hangs.append,
    )
    batcher.start()
    try:
        for round_ in range(20):
            results = await asyncio.gather(
                *(batcher.submit(rows_of(float(v)), 1) for v in range(round_, round_ + 3))
            )
            assert [float(r["y"][0, 0]) for r in results] == [
                2.0 * v for v in range(round_, round_ + 3)
            ]
        await asyncio.sleep(0.1)  # past every batch's timer: none of them fires late
        assert hangs == []
        assert float((await batcher.submit(rows_of(7.0), 1))["y"][0, 0]) == 14.0
    finally:
        await batcher.close(drain_timeout=5)


def dispatcher_of(label: str) -> asyncio.Task[Any]:
    (task,) = [t for t in asyncio.all_tasks() if t.get_name() == f"batcher:{label}"]
    return task


async def test_dead_dispatcher_is_logged_fails_its_queue_and_restarts(
    threads: ComputeThreads,
) -> None:
    model = Doubler()
    batcher = Batcher(
        model,
        # A long delay: the two requests sit in the queue, waiting for company.
        BatchingConfig(max_batch_size=3, max_queue_delay_ms=5000, flush_when_idle=False),
        threads,
        label=LABEL,
    )
    batcher.start()
    try:
        first = batcher.enqueue(rows_of(1.0), 1)
        second = batcher.enqueue(rows_of(2.0), 1)
        await asyncio.sleep(0.02)
        dead = dispatcher_of(LABEL)
        with structlog.testing.capture_logs() as logs:
            dead.cancel()
            for queued in (first, second):
                with pytest.raises(ModelNotReady, match="dropped its queue"):
                    await asyncio.wait_for(queued, 1)
        died = [e for e in logs if e["event"] == "batcher_dispatcher_died"]
        assert len(died) == 1, logs
        assert died[0]["model"] == LABEL
        assert died[0]["log_level"] == "error"
        assert died[0]["queued"] == 2
        assert batcher.restarts == 1

        # A new dispatcher serves what comes next (a full batch does not wait for the delay).
        assert dispatcher_of(LABEL) is not dead
        results = await asyncio.wait_for(
            asyncio.gather(*(batcher.submit(rows_of(v), 1) for v in (3.0, 4.0, 5.0))), 2
        )
        assert [float(r["y"][0, 0]) for r in results] == [6.0, 8.0, 10.0]
        assert model.batch_sizes == [3]
    finally:
        await batcher.close(drain_timeout=5)


async def test_closing_the_batcher_does_not_restart_its_dispatcher(
    threads: ComputeThreads,
) -> None:
    batcher = Batcher(Doubler(), BatchingConfig(), threads, label=LABEL)
    batcher.start()
    dispatcher = dispatcher_of(LABEL)
    with structlog.testing.capture_logs() as logs:
        await batcher.close(drain_timeout=5)
        await asyncio.sleep(0)
    assert dispatcher.done()
    assert [t for t in asyncio.all_tasks() if t.get_name() == f"batcher:{LABEL}"] == []
    assert not [e for e in logs if e["event"] == "batcher_dispatcher_died"]
    assert batcher.restarts == 0


class FailingObserver:
    """Metrics that break on the first batch: only that batch may suffer."""

    def __init__(self) -> None:
        self.failures = 1

    def queue_wait(self, seconds: float) -> None:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("metrics backend broke")

    def batch(self, rows: int, compute_seconds: float, ok: bool) -> None:
        pass


async def test_a_failing_observer_fails_one_batch_not_the_dispatcher(
    threads: ComputeThreads,
) -> None:
    batcher = Batcher(
        Doubler(),
        BatchingConfig(max_batch_size=1, max_queue_delay_ms=0),
        threads,
        label=LABEL,
        observer=FailingObserver(),
    )
    batcher.start()
    try:
        with pytest.raises(Exception, match="metrics backend broke"):
            await asyncio.wait_for(batcher.submit(rows_of(1.0), 1), 2)
        result = await asyncio.wait_for(batcher.submit(rows_of(2.0), 1), 2)
        assert float(result["y"][0, 0]) == 4.0
        assert batcher.restarts == 0
    finally:
        await batcher.close(drain_timeout=5)
