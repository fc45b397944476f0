"""Batch formation: which queued requests form the next batch, and how their rows are merged
into one runtime call and split back. Pure functions of their inputs, tested without a server;
the batcher (``serving.batcher``) decides when they run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelport.errors import InferenceFailed

Arrays = dict[str, np.ndarray]


@dataclass(slots=True)
class Joined:
    """The answer of a batch whose feature join ran in the batch: the model's outputs (with
    the joined feature tensors) and, per row, how many feature values were missing or expired.

    The counts are not an output of the model, so they travel beside the outputs rather than
    among them; ``split`` cuts both per request. Batches of models without features answer
    with their outputs alone, as plain ``Arrays``."""

    outputs: Arrays
    missing: np.ndarray


Answer = Arrays | Joined
"""What a batch (and so each request's share of it) answers with."""


@dataclass(slots=True)
class Pending:
    inputs: Arrays
    rows: int
    key: Hashable
    future: asyncio.Future[Answer]
    enqueued: float
    deadline: float = float("inf")


def batch_key(inputs: Arrays) -> Hashable:
    """Requests merge only when every input agrees on dtype and trailing dimensions."""
    if len(inputs) == 1:
        for name, a in inputs.items():
            return (name, a.dtype, a.shape[1:])
    return tuple(sorted(((name, a.dtype, a.shape[1:]) for name, a in inputs.items()), key=_first))


def _first(item: tuple[str, np.dtype[Any], tuple[int, ...]]) -> str:
    return item[0]


def take_batch(
    pending: Sequence[Pending], max_batch_size: int, preferred: Sequence[int] = ()
) -> list[int]:
    """Indices of the pending requests that form the next batch.

    The oldest request always goes first; later ones join if they have its key and the rows
    still fit. With preferred sizes, the batch is cut at the largest preferred size it reaches."""
    if not pending:
        return []
    head = pending[0]
    chosen = [0]
    rows = head.rows
    if max_batch_size > 0:
        for i in range(1, len(pending)):
            item = pending[i]
            if item.key == head.key and rows + item.rows <= max_batch_size:
                chosen.append(i)
                rows += item.rows
                if rows == max_batch_size:
                    break
    if preferred and len(chosen) > 1:
        target = max((p for p in preferred if p <= rows), default=0)
        if target:
            kept, total = [], 0
            for i in chosen:
                if total + pending[i].rows > target:
                    break
                kept.append(i)
                total += pending[i].rows
            chosen = kept or chosen[:1]
    return chosen


def merge(items: Sequence[Pending]) -> Arrays:
    if len(items) == 1:
        return items[0].inputs
    names = items[0].inputs.keys()
    return {name: np.concatenate([it.inputs[name] for it in items]) for name in names}


def split(answer: Answer, items: Sequence[Pending], stacked: bool = True) -> Sequence[Answer]:
    """Each request's rows of the batch's answer. Unstacked (a model without a batch
    dimension) batches hold one request, which gets the answer as it is."""
    if isinstance(answer, Joined):
        return _split_joined(answer, items, stacked)
    return _split_outputs(answer, items, stacked)


def _split_joined(answer: Joined, items: Sequence[Pending], stacked: bool) -> list[Joined]:
    outputs = _split_outputs(answer.outputs, items, stacked)
    if len(outputs) == 1:
        return [answer]
    missing = answer.missing
    parts: list[Joined] = []
    start = 0
    for it, part in zip(items, outputs, strict=True):
        stop = start + it.rows
        parts.append(Joined(part, missing[start:stop]))
        start = stop
    return parts


def _split_outputs(outputs: Arrays, items: Sequence[Pending], stacked: bool) -> list[Arrays]:
    if not stacked:
        return [outputs]
    total = sum(it.rows for it in items)
    for name, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != total:
            raise InferenceFailed(
                f"the model returned output '{name}' with shape {list(array.shape)} for a batch "
                f"of {total} rows; a batchable output must have the rows as its first dimension"
            )
    if len(items) == 1:
        return [outputs]
    parts: list[Arrays] = []
    start = 0
    for it in items:
        stop = start + it.rows
        parts.append({name: array[start:stop] for name, array in outputs.items()})
        start = stop
    return parts
