"""The threads that run a version's runtime, off the event loop.

A fixed set of threads fed by one queue. A batch goes in with the asyncio future it settles; a
thread runs it and settles the future on the event loop with one ``call_soon_threadsafe``.

This is the hand-off ``loop.run_in_executor`` with a ``ThreadPoolExecutor`` also makes, minus
its bookkeeping: no ``concurrent.futures.Future`` with its lock and condition per call, no
chained callbacks between two futures, no worker-count adjustment per submit. For a model that
computes a batch in microseconds the hand-off is most of the batch's cost, and on a 2-core
machine this one serves about a tenth more requests per second (``bench/infer_throughput.py``).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[[Any], Any], Any]


class ComputeThreads:
    def __init__(self, count: int, name: str) -> None:
        if count < 1:
            raise ValueError("ComputeThreads needs at least one thread")
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}_{i}", daemon=True)
            for i in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def run(self, fn: Callable[[T], R], arg: T) -> asyncio.Future[R]:
        """Run ``fn(arg)`` on one of the threads; call from the event loop and await the result.

        Cancelling the returned future does not stop a call that already started; its result
        is dropped."""
        if self._closed:
            raise RuntimeError("the compute threads were shut down")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._jobs.put((loop, future, fn, arg))
        return future

    def shutdown(self, wait: bool = False, timeout: float | None = None) -> None:
        """Let the threads finish what is queued, then stop; with ``wait``, join them."""
        if not self._closed:
            self._closed = True
            for _ in self._threads:
                self._jobs.put(None)
        if wait:
            for thread in self._threads:
                thread.join(timeout)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            loop, future, fn, arg = job
            try:
                result = fn(arg)
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting caller
                _deliver(loop, future, None, exc)
            else:
                _deliver(loop, future, result, None)
            del job, future, arg  # drop references to the batch before waiting for the next


def _deliver(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    result: Any,
    exc: BaseException | None,
) -> None:
    try:
        loop.call_soon_threadsafe(_settle, future, result, exc)
    except RuntimeError:
        pass  # the event loop closed while the call ran: nobody waits for the result


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():
        return  # the caller went away
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
