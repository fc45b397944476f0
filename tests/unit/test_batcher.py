"""The dynamic batcher, driven with a real numpy predict function and a real thread pool."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import numpy as np
import pytest
from unit_helpers import Doubler

from modelport.errors import (
    DeadlineExceeded,
    InferenceFailed,
    InvalidInput,
    ModelNotReady,
    QueueFull,
    Unavailable,
)
from modelport.serving.batcher import (
    Arrays,
    Batcher,
    Predict,
)
from modelport.serving.compute import ComputeThreads
from modelport.serving.config import BatchingConfig

LABEL = "demo:1"


@pytest.fixture(autouse=True)
async def no_event_loop_errors() -> AsyncIterator[None]:
    """Fail the test if the batcher leaves an error for the event loop to report (an exception
    never retrieved from a task, ``InvalidStateError`` from setting a cancelled future, ...)."""
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


@contextlib.asynccontextmanager
async def serving(
    predict: Predict, threads: ComputeThreads, *, instances: int = 1, **batching: Any
) -> AsyncIterator[Batcher]:
    batcher = Batcher(
        predict, BatchingConfig(**batching), threads, instances=instances, label=LABEL
    )
    batcher.start()
    try:
        yield batcher
    finally:
        await batcher.close(drain_timeout=5)


async def wait_until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` (state the batcher or a worker thread changes) for up to 5 s."""
    async with asyncio.timeout(5):
        while True:
            if condition():
                return
            await asyncio.sleep(0.001)


async def wait_entered(model: Doubler) -> None:
    await wait_until(model.entered.is_set)


def rows_of(value: float, rows: int = 1, width: int = 2) -> Arrays:
    return {"x": np.full((rows, width), value, dtype=np.float64)}


async def submit(batcher: Batcher, inputs: Arrays, deadline: float = float("inf")) -> Arrays:
    return await batcher.submit(inputs, inputs["x"].shape[0], deadline)


# ---------------------------------------------------------------------------------------------
# Flushing


async def test_full_batch_flushes_without_waiting_for_the_delay(
    threads: ComputeThreads,
) -> None:
    model = Doubler()
    loop = asyncio.get_running_loop()
    async with serving(
        model, threads, max_batch_size=4, max_queue_delay_ms=5000, flush_when_idle=False
    ) as batcher:
        started = loop.time()
        first = asyncio.create_task(submit(batcher, rows_of(1.0)))
        await asyncio.sleep(0.05)  # the first request is now waiting for company
        assert not first.done()
        rest = [submit(batcher, rows_of(v)) for v in (2.0, 3.0, 4.0)]
        results = await asyncio.wait_for(asyncio.gather(first, *rest), 2)
        elapsed = loop.time() - started

    assert elapsed < 1.0, f"a full batch waited {elapsed:.2f} s for a 5 s delay"
    assert model.batch_sizes == [4]
    assert [float(r["y"][0, 0]) for r in results] == [2.0, 4.0, 6.0, 8.0]


async def test_partial_batch_flushes_after_the_queue_delay(threads: ComputeThreads) -> None:
    model = Doubler()
    loop = asyncio.get_running_loop()
    async with serving(
        model, threads, max_batch_size=8, max_queue_delay_ms=80, flush_when_idle=False
    ) as batcher:
        started = loop.time()
        results = await asyncio.wait_for(
            asyncio.gather(*(submit(batcher, rows_of(v)) for v in (1.0, 2.0, 3.0))), 2
        )
        elapsed = loop.time() - started

    assert 0.075 <= elapsed < 1.0, elapsed
    assert model.batch_sizes == [3]
    assert [float(r["y"][0, 0]) for r in results] == [2.0, 4.0, 6.0]


async def test_batch_forms_before_the_delay_once_requests_stop_arriving(
    threads: ComputeThreads,
) -> None:
    model = Doubler()
    loop = asyncio.get_running_loop()
    async with serving(model, threads, max_batch_size=8, max_queue_delay_ms=5000) as batcher:
        started = loop.time()
        results = await asyncio.wait_for(
            asyncio.gather(*(submit(batcher, rows_of(v)) for v in (1.0, 2.0, 3.0))), 2
        )
        elapsed = loop.time() - started

    assert elapsed < 1.0, f"three waiting requests sat {elapsed:.2f} s with nothing else coming"
    assert model.batch_sizes == [3], "requests that arrived together still share one batch"
    assert [float(r["y"][0, 0]) for r in results] == [2.0, 4.0, 6.0]


async def test_batch_keeps_filling_while_requests_keep_arriving(
    threads: ComputeThreads,
) -> None:
    model = Doubler()

    async def one_per_pass(batcher: Batcher, count: int) -> list[Arrays]:
        """A request on every pass of the event loop: the queue never goes quiet."""
        waiting = []
        for i in range(count):
            waiting.append(asyncio.ensure_future(submit(batcher, rows_of(float(i)))))
            await asyncio.sleep(0)
        return await asyncio.gather(*waiting)

    async with serving(model, threads, max_batch_size=64, max_queue_delay_ms=5000) as batcher:
        results = await asyncio.wait_for(one_per_pass(batcher, 20), 2)

    assert model.batch_sizes == [20], model.batch_sizes
    assert [float(r["y"][0, 0]) for r in results] == [2.0 * i for i in range(20)]


async def test_zero_delay_runs_requests_without_waiting(threads: ComputeThreads) -> None:
    model = Doubler()
    async with serving(model, threads, max_batch_size=8, max_queue_delay_ms=0) as batcher:
        result = await asyncio.wait_for(submit(batcher, rows_of(5.0)), 1)
    assert float(result["y"][0, 0]) == 10.0


async def test_max_batch_size_zero_runs_every_request_on_its_own(
    threads: ComputeThreads,
) -> None:
    model = Doubler()
    async with serving(model, threads, max_batch_size=0, max_queue_delay_ms=50) as batcher:
        results = await asyncio.gather(*(submit(batcher, rows_of(v, rows=3)) for v in (1, 2, 3)))
    assert model.batch_sizes == [3, 3, 3]
    assert [float(r["y"][0, 0]) for r in results] == [2.0, 4.0, 6.0]


async def test_preferred_batch_sizes_cut_batches(threads: ComputeThreads) -> None:
    model = Doubler()
    async with serving(
        model, threads, max_batch_size=8, max_queue_delay_ms=30, preferred_batch_sizes=[4, 2]
    ) as batcher:
        results = await asyncio.gather(*(submit(batcher, rows_of(float(v))) for v in range(7)))

    assert model.batch_sizes == [4, 2, 1]
    assert [float(r["y"][0, 0]) for r in results] == [2.0 * v for v in range(7)]


# ---------------------------------------------------------------------------------------------
# What goes into a batch and what comes back out


async def test_requests_with_different_trailing_shapes_are_never_merged(
    threads: ComputeThreads,
) -> None:
    model = Doubler()
    requests = [rows_of(1.0, width=3), rows_of(2.0, width=5), rows_of(3.0, 2, width=3)]
    requests.append(rows_of(4.0, 2, width=5))
    async with serving(model, threads, max_batch_size=16, max_queue_delay_ms=30) as batcher:
        results = await asyncio.gather(*(submit(batcher, r) for r in requests))

    for call in model.calls:
        assert call["x"].ndim == 2
    assert sorted(call["x"].shape for call in model.calls) == [(3, 3), (3, 5)]
    for request, result in zip(requests, results, strict=True):
        np.testing.assert_array_equal(result["y"], request["x"] * 2)


async def test_requests_with_different_dtypes_are_never_merged(
    threads: ComputeThreads,
) -> None:
    model = Doubler()
    as32 = {"x": np.ones((2, 2), dtype=np.float32)}
    as64 = {"x": np.ones((1, 2), dtype=np.float64)}
    async with serving(model, threads, max_batch_size=16, max_queue_delay_ms=30) as batcher:
        got32, got64 = await asyncio.gather(submit(batcher, as32), submit(batcher, as64))

    assert sorted(str(call["x"].dtype) for call in model.calls) == ["float32", "float64"]
    assert got32["y"].dtype == np.float32 and got32["y"].shape == (2, 2)
    assert got64["y"].dtype == np.float64 and got64["y"].shape == (1, 2)


async def test_each_caller_gets_exactly_its_own_rows(threads: ComputeThreads) -> None:
    model = Doubler()
    row_counts = [1, 2, 3, 4, 1]
    requests: list[Arrays] = []
    start = 0
    for rows in row_counts:
        requests.append({"x": np.arange(start, start + rows * 2, dtype=np.int64).reshape(rows, 2)})
        start += rows * 2
    async with serving(model, threads, max_batch_size=16, max_queue_delay_ms=30) as batcher:
        results = await asyncio.gather(*(batcher.submit(r, r["x"].shape[0]) for r in requests))

    assert model.batch_sizes == [sum(row_counts)], "the requests should share one predict call"
    for request, result in zip(requests, results, strict=True):
        assert set(result) == {"y"}
        assert result["y"].shape == request["x"].shape
        np.testing.assert_array_equal(result["y"], request["x"] * 2)


async def test_instances_compute_batches_at_the_same_time(threads: ComputeThreads) -> None:
    both_running = threading.Barrier(2, timeout=5)

    def predict(inputs: Arrays) -> Arrays:
        both_running.wait()  # raises BrokenBarrierError if the batches ran one after the other
        return {"y": inputs["x"] * 2}

    async with serving(
        predict, threads, instances=2, max_batch_size=1, max_queue_delay_ms=0
    ) as batcher:
        results = await asyncio.gather(submit(batcher, rows_of(1.0)), submit(batcher, rows_of(2.0)))
    assert [float(r["y"][0, 0]) for r in results] == [2.0, 4.0]


# ---------------------------------------------------------------------------------------------
# Failures


async def test_batch_failure_fails_only_its_requests(threads: ComputeThreads) -> None:
    model = Doubler(poison=-1.0)
    async with serving(model, threads, max_batch_size=2, max_queue_delay_ms=5000) as batcher:
        outcomes = await asyncio.wait_for(
            asyncio.gather(
                *(submit(batcher, rows_of(v)) for v in (1.0, -1.0, 3.0, 4.0)),
                return_exceptions=True,
            ),
            2,
        )

    assert model.batch_sizes == [2, 2]
    for failed in outcomes[:2]:
        assert isinstance(failed, InferenceFailed), failed
        assert "cannot handle the poisoned value -1.0" in failed.message
        assert LABEL in failed.message
    assert [float(cast(Arrays, r)["y"][0, 0]) for r in outcomes[2:]] == [6.0, 8.0]


async def test_batcher_keeps_serving_after_a_failed_batch(threads: ComputeThreads) -> None:
    model = Doubler(poison=-1.0)
    async with serving(model, threads, max_batch_size=4, max_queue_delay_ms=0) as batcher:
        with pytest.raises(InferenceFailed):
            await submit(batcher, rows_of(-1.0))
        result = await submit(batcher, rows_of(2.0))
    assert float(result["y"][0, 0]) == 4.0


async def test_output_without_a_rows_dimension_fails_the_batch_clearly(
    threads: ComputeThreads,
) -> None:
    def summed(inputs: Arrays) -> Arrays:
        return {"total": np.asarray(inputs["x"].sum())}

    async with serving(summed, threads, max_batch_size=4, max_queue_delay_ms=20) as batcher:
        outcomes = await asyncio.gather(
            submit(batcher, rows_of(1.0)), submit(batcher, rows_of(2.0)), return_exceptions=True
        )
    for outcome in outcomes:
        assert isinstance(outcome, InferenceFailed)
        assert "'total'" in outcome.message and "first dimension" in outcome.message


async def test_request_past_its_deadline_is_not_run(threads: ComputeThreads) -> None:
    gate = threading.Event()
    model = Doubler(gate=gate)
    loop = asyncio.get_running_loop()
    async with serving(model, threads, max_batch_size=4, max_queue_delay_ms=1) as batcher:
        try:
            busy = asyncio.create_task(submit(batcher, rows_of(1.0)))
            await wait_entered(model)  # the only compute slot is taken
            late = asyncio.create_task(submit(batcher, rows_of(7.0), loop.time() + 0.05))
            patient = asyncio.create_task(submit(batcher, rows_of(3.0)))
            await wait_until(lambda: batcher.queued_rows == 2)
            await asyncio.sleep(0.1)  # the first deadline passes while queued
        finally:
            gate.set()
        outcomes = await asyncio.wait_for(
            asyncio.gather(busy, late, patient, return_exceptions=True), 5
        )

    assert isinstance(outcomes[1], DeadlineExceeded), outcomes[1]
    assert "deadline" in outcomes[1].message and "not run" in outcomes[1].message
    assert 7.0 not in model.seen_values(), "predict saw the rows of an expired request"
    assert float(cast(Arrays, outcomes[0])["y"][0, 0]) == 2.0
    assert float(cast(Arrays, outcomes[2])["y"][0, 0]) == 6.0


async def test_queue_full_refuses_new_rows(threads: ComputeThreads) -> None:
    gate = threading.Event()
    model = Doubler(gate=gate)
    async with serving(
        model, threads, max_batch_size=4, max_queue_delay_ms=1, max_queue_size=4
    ) as batcher:
        try:
            busy = asyncio.create_task(submit(batcher, rows_of(1.0)))
            await wait_entered(model)
            queued = [asyncio.create_task(submit(batcher, rows_of(v, rows=2))) for v in (2.0, 3.0)]
            await wait_until(lambda: batcher.queued_rows == 4)

            with pytest.raises(QueueFull) as info:
                await submit(batcher, rows_of(9.0))
        finally:
            gate.set()
        results = await asyncio.wait_for(asyncio.gather(busy, *queued), 5)

    assert isinstance(info.value, Unavailable)
    assert info.value.retry_after_s > 0
    assert LABEL in info.value.message and "max_queue_size" in info.value.message
    assert 9.0 not in model.seen_values()
    assert [float(r["y"][0, 0]) for r in results] == [2.0, 4.0, 6.0]


async def test_queue_accepts_new_rows_once_it_drains(threads: ComputeThreads) -> None:
    model = Doubler()
    async with serving(
        model, threads, max_batch_size=2, max_queue_delay_ms=1, max_queue_size=2
    ) as batcher:
        for value in (1.0, 2.0, 3.0):
            result = await submit(batcher, rows_of(value, rows=2))
            assert float(result["y"][0, 0]) == 2 * value
        assert batcher.queued_rows == 0


async def test_request_with_more_rows_than_max_batch_size_is_rejected(
    threads: ComputeThreads,
) -> None:
    model = Doubler()
    async with serving(model, threads, max_batch_size=4, max_queue_delay_ms=1) as batcher:
        with pytest.raises(InvalidInput) as info:
            await submit(batcher, rows_of(1.0, rows=5))
        exact = await submit(batcher, rows_of(1.0, rows=4))

    assert "5 rows" in info.value.message and "max_batch_size" in info.value.message
    assert model.batch_sizes == [4]
    assert exact["y"].shape == (4, 2)


async def test_cancelled_queued_caller_does_not_break_the_batch_for_others(
    threads: ComputeThreads,
) -> None:
    gate = threading.Event()
    model = Doubler(gate=gate)
    async with serving(model, threads, max_batch_size=4, max_queue_delay_ms=1) as batcher:
        try:
            busy = asyncio.create_task(submit(batcher, rows_of(1.0)))
            await wait_entered(model)
            gone = asyncio.create_task(submit(batcher, rows_of(5.0)))
            stays = asyncio.create_task(submit(batcher, rows_of(6.0)))
            await wait_until(lambda: batcher.queued_rows == 2)
            gone.cancel()
            await asyncio.sleep(0)
        finally:
            gate.set()
        first, kept = await asyncio.wait_for(asyncio.gather(busy, stays), 5)
        later = await submit(batcher, rows_of(8.0))

    assert gone.cancelled()
    assert float(first["y"][0, 0]) == 2.0
    assert float(kept["y"][0, 0]) == 12.0
    assert float(later["y"][0, 0]) == 16.0
    assert 5.0 not in model.seen_values(), "predict ran the rows of a caller that went away"
    assert batcher.queued_rows == 0


async def test_cancelled_caller_inside_a_running_batch_does_not_break_it(
    threads: ComputeThreads,
) -> None:
    gate = threading.Event()
    model = Doubler(gate=gate)
    async with serving(model, threads, max_batch_size=2, max_queue_delay_ms=5000) as batcher:
        try:
            gone = asyncio.create_task(submit(batcher, rows_of(1.0)))
            stays = asyncio.create_task(submit(batcher, rows_of(2.0)))
            await wait_entered(model)  # both are in the batch now computing
            gone.cancel()
            await asyncio.sleep(0)
        finally:
            gate.set()
        kept = await asyncio.wait_for(stays, 5)
        gate_free_result = await asyncio.wait_for(
            asyncio.gather(submit(batcher, rows_of(3.0)), submit(batcher, rows_of(4.0))), 5
        )

    assert gone.cancelled()
    assert model.batch_sizes[0] == 2
    assert float(kept["y"][0, 0]) == 4.0
    assert [float(r["y"][0, 0]) for r in gate_free_result] == [6.0, 8.0]


# ---------------------------------------------------------------------------------------------
# Start and close


async def test_submit_before_start_is_refused(threads: ComputeThreads) -> None:
    batcher = Batcher(Doubler(), BatchingConfig(), threads, label=LABEL)
    with pytest.raises(ModelNotReady):
        await submit(batcher, rows_of(1.0))
    await batcher.close()


async def test_close_drains_queued_requests_then_refuses_new_ones(
    threads: ComputeThreads,
) -> None:
    gate = threading.Event()
    model = Doubler(gate=gate)
    async with serving(model, threads, max_batch_size=1, max_queue_delay_ms=1) as batcher:
        try:
            busy = asyncio.create_task(submit(batcher, rows_of(1.0)))
            await wait_entered(model)
            queued = [asyncio.create_task(submit(batcher, rows_of(v))) for v in (2.0, 3.0)]
            await wait_until(lambda: batcher.queued_rows == 2)
            closing = asyncio.create_task(batcher.close(drain_timeout=5))
            await asyncio.sleep(0.01)
            assert not closing.done(), "close() returned before the queue drained"
            with pytest.raises(ModelNotReady):
                await submit(batcher, rows_of(4.0))
        finally:
            gate.set()
        results = await asyncio.wait_for(asyncio.gather(busy, *queued), 5)
        await asyncio.wait_for(closing, 5)

        with pytest.raises(ModelNotReady) as info:
            await submit(batcher, rows_of(5.0))

    assert LABEL in info.value.message
    assert [float(r["y"][0, 0]) for r in results] == [2.0, 4.0, 6.0]
    assert model.batch_sizes == [1, 1, 1]
    assert {4.0, 5.0}.isdisjoint(model.seen_values())


async def test_close_does_not_wait_out_the_queue_delay(threads: ComputeThreads) -> None:
    model = Doubler()
    loop = asyncio.get_running_loop()
    async with serving(model, threads, max_batch_size=8, max_queue_delay_ms=5000) as batcher:
        pending = [asyncio.create_task(submit(batcher, rows_of(v))) for v in (1.0, 2.0)]
        await asyncio.sleep(0.02)
        started = loop.time()
        await asyncio.wait_for(batcher.close(drain_timeout=5), 2)
        results = await asyncio.gather(*pending)
        elapsed = loop.time() - started

    assert elapsed < 1.0
    assert [float(r["y"][0, 0]) for r in results] == [2.0, 4.0]


async def test_close_of_an_idle_batcher_returns_promptly(threads: ComputeThreads) -> None:
    batcher = Batcher(Doubler(), BatchingConfig(), threads, label=LABEL)
    batcher.start()
    await asyncio.wait_for(batcher.close(), 1)
    with pytest.raises(ModelNotReady):
        await submit(batcher, rows_of(1.0))


async def test_observer_hears_about_successful_and_failed_batches(
    threads: ComputeThreads,
) -> None:
    class Recorder:
        def __init__(self) -> None:
            self.batches: list[tuple[int, bool]] = []
            self.waits: list[float] = []

        def queue_wait(self, seconds: float) -> None:
            self.waits.append(seconds)

        def batch(self, rows: int, compute_seconds: float, ok: bool) -> None:
            assert compute_seconds >= 0
            self.batches.append((rows, ok))

    observer = Recorder()
    batcher = Batcher(
        Doubler(poison=-1.0),
        BatchingConfig(max_batch_size=4, max_queue_delay_ms=0),
        threads,
        label=LABEL,
        observer=observer,
    )
    batcher.start()
    try:
        await submit(batcher, rows_of(1.0, rows=3))
        with pytest.raises(InferenceFailed):
            await submit(batcher, rows_of(-1.0, rows=2))
    finally:
        await batcher.close()

    assert observer.batches == [(3, True), (2, False)]
    assert len(observer.waits) == 2 and all(w >= 0 for w in observer.waits)
    assert batcher.queued_rows == 0
