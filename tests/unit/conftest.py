"""Fixtures for the unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from modelport.serving.compute import ComputeThreads


@pytest.fixture
def executor() -> Iterator[ComputeThreads]:
    threads = ComputeThreads(4, "unit-predict")
    try:
        yield threads
    finally:
        threads.shutdown(wait=True, timeout=10)
