"""Fixtures for the unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from modelport.serving.compute import ComputeThreads


@pytest.fixture
def threads() -> Iterator[ComputeThreads]:
    pool = ComputeThreads(4, "unit-predict")
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, timeout=10)
