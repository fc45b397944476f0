"""The batcher's pure functions: choosing a batch, stacking requests and slicing outputs back."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, cast

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelport.errors import InferenceFailed
from modelport.serving.batcher import Joined, Pending, batch_key, merge, split, take_batch


def pending(rows: int, key: Hashable = "a", value: float = 0.0) -> Pending:
    inputs = {"x": np.full((rows, 2), value)}
    return Pending(inputs, rows, key, cast(Any, None), enqueued=0.0)


def test_take_batch_of_nothing_is_empty() -> None:
    assert take_batch([], 8) == []


def test_take_batch_starts_with_the_oldest_and_adds_same_key_requests_that_fit() -> None:
    queue = [pending(2), pending(1, key="b"), pending(3), pending(2), pending(2)]
    assert take_batch(queue, 8) == [0, 2, 3]


def test_take_batch_skips_a_request_too_big_to_fit_and_stops_when_full() -> None:
    queue = [pending(3), pending(4), pending(1), pending(1)]
    assert take_batch(queue, 4) == [0, 2]


def test_take_batch_always_takes_the_head_even_of_another_key() -> None:
    queue = [pending(2, key="b"), pending(2), pending(2, key="b")]
    assert take_batch(queue, 8) == [0, 2]


def test_take_batch_with_max_zero_takes_only_the_head() -> None:
    assert take_batch([pending(5), pending(1)], 0) == [0]


@pytest.mark.parametrize(
    ("rows", "preferred", "expected"),
    [
        ([1] * 7, [2, 4], [0, 1, 2, 3]),
        ([1] * 3, [2, 4], [0, 1]),
        ([1, 1], [4], [0, 1]),
        ([3, 3], [4], [0]),
        ([2, 2, 2, 2], [4, 8], [0, 1, 2, 3]),
        ([5], [2], [0]),
    ],
    ids=["cut-to-4", "cut-to-2", "below-smallest", "uneven-rows", "exact-largest", "single"],
)
def test_take_batch_cuts_at_the_largest_preferred_size_reached(
    rows: list[int], preferred: list[int], expected: list[int]
) -> None:
    assert take_batch([pending(r) for r in rows], 8, preferred) == expected


def test_merge_stacks_rows_per_input_in_order() -> None:
    items = [
        Pending({"x": np.array([[1, 2]]), "m": np.array([1])}, 1, "k", cast(Any, None), 0.0),
        Pending(
            {"x": np.array([[3, 4], [5, 6]]), "m": np.array([0, 1])}, 2, "k", cast(Any, None), 0.0
        ),
    ]
    merged = merge(items)
    np.testing.assert_array_equal(merged["x"], [[1, 2], [3, 4], [5, 6]])
    np.testing.assert_array_equal(merged["m"], [1, 0, 1])


def test_merge_of_one_request_passes_its_arrays_through() -> None:
    item = pending(2)
    assert merge([item]) is item.inputs


def test_split_gives_each_request_its_rows() -> None:
    items = [pending(1), pending(3), pending(2)]
    outputs = {"y": np.arange(12).reshape(6, 2), "z": np.arange(6)}
    parts = split(outputs, items)
    assert [p["y"].shape[0] for p in parts] == [1, 3, 2]
    np.testing.assert_array_equal(parts[1]["y"], [[2, 3], [4, 5], [6, 7]])
    np.testing.assert_array_equal(parts[2]["z"], [4, 5])


def test_split_gives_each_request_its_rows_of_a_joined_answer_and_of_its_missing_counts() -> None:
    items = [pending(1), pending(3), pending(2)]
    answer = Joined({"y": np.arange(6)}, np.array([0, 1, 0, 2, 0, 3], dtype=np.int32))
    parts = split(answer, items)
    assert all(isinstance(p, Joined) for p in parts)
    joined = cast(list[Joined], parts)
    assert [p.missing.tolist() for p in joined] == [[0], [1, 0, 2], [0, 3]]
    assert [p.outputs["y"].tolist() for p in joined] == [[0], [1, 2, 3], [4, 5]]
    assert all(set(p.outputs) == {"y"} for p in joined)
    assert split(answer, [pending(6)])[0] is answer  # one request: the answer as it is


@pytest.mark.parametrize(
    "output", [np.zeros(5), np.asarray(3.0), np.zeros((0, 2))], ids=["short", "scalar", "empty"]
)
def test_split_rejects_outputs_without_one_row_per_input_row(output: np.ndarray) -> None:
    with pytest.raises(InferenceFailed, match="first dimension"):
        split({"y": output}, [pending(2), pending(4)])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=1, max_size=6))
def test_split_undoes_merge(row_counts: list[int]) -> None:
    items: list[Pending] = []
    start = 0
    for rows in row_counts:
        inputs = {"x": np.arange(start, start + rows * 3).reshape(rows, 3)}
        items.append(Pending(inputs, rows, batch_key(inputs), cast(Any, None), 0.0))
        start += rows * 3
    parts = split(merge(items), items)
    assert len(parts) == len(items)
    for item, part in zip(items, parts, strict=True):
        np.testing.assert_array_equal(part["x"], item.inputs["x"])


def test_batch_key_ignores_rows_but_not_dtype_trailing_shape_or_names() -> None:
    base = batch_key({"x": np.zeros((1, 3), np.float32)})
    assert batch_key({"x": np.zeros((9, 3), np.float32)}) == base
    assert batch_key({"x": np.zeros((1, 4), np.float32)}) != base
    assert batch_key({"x": np.zeros((1, 3), np.float64)}) != base
    assert batch_key({"x": np.zeros((1, 3, 1), np.float32)}) != base
    assert batch_key({"z": np.zeros((1, 3), np.float32)}) != base
    two = {"a": np.zeros((1, 2)), "b": np.zeros(1, np.int64)}
    assert batch_key(two) == batch_key(dict(reversed(two.items())))
