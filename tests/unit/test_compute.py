"""The compute threads: calls run off the event loop and their results or errors come back."""

from __future__ import annotations

import asyncio
import threading

import pytest

from modelport.serving.compute import ComputeThreads


async def test_a_call_runs_on_a_compute_thread_and_returns_its_result() -> None:
    threads = ComputeThreads(2, "test-compute")
    try:
        name = await threads.run(lambda _: threading.current_thread().name, None)
        assert name.startswith("test-compute_")
        assert await threads.run(lambda x: x * 2, 21) == 42
    finally:
        threads.shutdown(wait=True, timeout=5)


async def test_an_error_reaches_the_caller() -> None:
    threads = ComputeThreads(1, "test-compute")

    def fail(_: object) -> None:
        raise ValueError("model exploded")

    try:
        with pytest.raises(ValueError, match="model exploded"):
            await threads.run(fail, None)
        assert await threads.run(lambda x: x, "still serving") == "still serving"
    finally:
        threads.shutdown(wait=True, timeout=5)


async def test_calls_run_at_the_same_time_on_as_many_threads() -> None:
    threads = ComputeThreads(3, "test-compute")
    barrier = threading.Barrier(3, timeout=5)
    try:
        results = await asyncio.gather(
            *(threads.run(lambda i: barrier.wait() >= 0 and i, i) for i in range(3))
        )
        assert sorted(results) == [0, 1, 2]
    finally:
        threads.shutdown(wait=True, timeout=5)


async def test_a_cancelled_caller_does_not_break_the_thread() -> None:
    threads = ComputeThreads(1, "test-compute")
    release = threading.Event()
    try:
        slow = threads.run(lambda _: release.wait(5), None)
        slow.cancel()
        release.set()
        assert await threads.run(lambda x: x + 1, 1) == 2
    finally:
        threads.shutdown(wait=True, timeout=5)


async def test_after_shutdown_no_call_is_taken_and_the_threads_end() -> None:
    threads = ComputeThreads(2, "test-compute")
    threads.shutdown(wait=True, timeout=5)
    assert not any(t.name.startswith("test-compute_") for t in threading.enumerate())
    with pytest.raises(RuntimeError, match="shut down"):
        threads.run(lambda x: x, 1)
