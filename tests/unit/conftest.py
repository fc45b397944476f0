"""Fixtures for the unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="unit-predict")
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
