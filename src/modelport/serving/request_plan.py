"""A version's request plan: its common requests decoded straight into the batcher's arrays.

Most traffic to a version looks the same: a plain JSON body whose inputs are exactly the
signature's, with numbers (or strings, for BYTES) in one flat list, no parameters and no
output selection. The plan
is compiled once when the version loads and recognises such a body's parsed document with a
handful of checks, skipping the general decoder's intermediate objects and the separate
signature validation. It never decides that a request is wrong: anything it does not recognise
(another datatype, nested data, a value out of range, parameters, a mistake of any kind) makes
``arrays`` return None, and the request goes through the general decoder and validation, which
also write every error message. What the plan accepts, the general path accepts with the same
arrays (``tests/unit/test_plan.py`` holds the two to that).
"""

from __future__ import annotations

from array import array as packed_floats
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelport.serving.codec import MAX_DIMS, float_range
from modelport.serving.datatypes import NUMPY_DTYPES
from modelport.serving.signature import Signature

#: Datatypes the plan decodes itself: JSON numbers into floats, JSON strings into BYTES.
_FLOATS = ("FP16", "FP32", "FP64")
_BYTES = "BYTES"
#: Floats the ``array`` module converts in C: one pass that also refuses non-numbers.
_TYPECODES = {"FP32": "f", "FP64": "d"}
#: An infinity as FP32 bytes (either sign): a JSON number past the FP32 range becomes one.
_INF32 = (b"\x00\x00\x80\x7f", b"\x00\x00\x80\xff")


@dataclass(frozen=True, slots=True)
class _Input:
    name: str
    datatype: str
    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    limit: float
    """The largest magnitude the datatype holds."""
    typecode: str
    """The ``array`` module's code for the datatype (FP32, FP64), else empty."""


class RequestPlan:
    """See the module docstring. ``None`` from ``compile`` means the signature has an input the
    plan does not handle; every request then takes the general path."""

    __slots__ = ("_batchable", "_inputs")

    def __init__(self, inputs: dict[str, _Input], batchable: bool) -> None:
        self._inputs = inputs
        self._batchable = batchable

    @classmethod
    def compile(cls, signature: Signature) -> RequestPlan | None:
        inputs: dict[str, _Input] = {}
        for spec in signature.inputs:
            if spec.datatype not in _FLOATS and spec.datatype != _BYTES:
                return None
            if not spec.shape or len(spec.shape) > MAX_DIMS:
                return None
            inputs[spec.name] = _Input(
                spec.name,
                spec.datatype,
                NUMPY_DTYPES[spec.datatype],
                spec.shape,
                float_range(spec.datatype) if spec.datatype in _FLOATS else 0.0,
                _TYPECODES.get(spec.datatype, ""),
            )
        if not inputs:
            return None
        return cls(inputs, signature.batchable)

    def arrays(self, doc: Any) -> tuple[dict[str, np.ndarray], int] | None:
        """The arrays by input name and the rows of a request this plan recognises, else None.

        Recognised: ``{"inputs": [...]}`` plus at most a string ``id``; every input an object
        of exactly name, shape, datatype and data, naming each of the signature's inputs once
        with its datatype, a shape that matches the signature, and a flat list of that many
        numbers in the datatype's range (strings for BYTES); batchable inputs agree on the rows
        and have some."""
        if type(doc) is not dict:
            return None
        raw_inputs = doc.get("inputs")
        if type(raw_inputs) is not list or len(raw_inputs) != len(self._inputs):
            return None
        if len(doc) != 1 and (len(doc) != 2 or type(doc.get("id")) is not str):
            return None
        arrays: dict[str, np.ndarray] = {}
        rows = -1
        for raw in raw_inputs:
            if type(raw) is not dict or len(raw) != 4:
                return None
            name = raw.get("name")
            if type(name) is not str:
                return None
            spec = self._inputs.get(name)
            if spec is None or name in arrays or raw.get("datatype") != spec.datatype:
                return None
            shape = raw.get("shape")
            data = raw.get("data")
            if type(shape) is not list or type(data) is not list:
                return None
            expected = spec.shape
            if len(shape) != len(expected):
                return None
            count = 1
            for got, want in zip(shape, expected, strict=True):
                if type(got) is not int or got < 0 or (want != -1 and got != want):
                    return None
                count *= got
            if count == 0 or len(data) != count:
                return None
            if spec.datatype == _BYTES:
                array = _texts(data, count)
                if array is None:
                    return None
            elif spec.typecode:
                array = _floats(data, spec.typecode, spec.dtype)
                if array is None:
                    return None
            else:
                try:
                    # Non-numbers (null, strings, lists, objects) raise TypeError here.
                    if max(data) > spec.limit or min(data) < -spec.limit:
                        return None
                except TypeError:
                    return None
                array = np.asarray(data, dtype=spec.dtype)
            array.shape = tuple(shape)
            if self._batchable:
                if rows != -1 and shape[0] != rows:
                    return None
                rows = shape[0]
            arrays[spec.name] = array
        return arrays, (rows if self._batchable else 1)


def _floats(data: list[Any], typecode: str, dtype: np.dtype[Any]) -> np.ndarray | None:
    """JSON numbers as an FP32 or FP64 array, or None when one is not a number or lies past
    the datatype's range.

    ``array.array`` (``packed_floats``) converts the list in one C loop and raises TypeError
    for anything but numbers (booleans count as numbers, as in the general path) and
    OverflowError for an integer past the FP64 range. An FP32 value past its range becomes
    an infinity there (JSON has no infinities of its own), so infinity's bytes at a value's
    offset in the buffer mean "go the general way"."""
    try:
        values = packed_floats(typecode, data)
    except (TypeError, OverflowError):
        return None
    if typecode == "f":
        raw = values.tobytes()
        for pattern in _INF32:
            at = raw.find(pattern)
            while at != -1:
                if at % 4 == 0:
                    return None
                at = raw.find(pattern, at + 1)  # the bytes straddle two values
    return np.frombuffer(values, dtype)  # positional: numpy parses keywords slowly


def _texts(data: list[Any], count: int) -> np.ndarray | None:
    """BYTES elements from JSON strings (UTF-8), or None when one is not a string."""
    out = np.empty(count, dtype=object)
    try:
        for i, item in enumerate(data):
            if type(item) is not str:
                return None
            out[i] = item.encode()
    except UnicodeEncodeError:
        return None  # a lone surrogate: the general path explains it
    return out
