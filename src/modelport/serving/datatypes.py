"""Open Inference Protocol datatypes and their numpy and ONNX counterparts."""

from __future__ import annotations

from typing import Final

import numpy as np

#: OIP datatype -> numpy dtype (little-endian, as the binary extension sends them).
NUMPY_DTYPES: Final[dict[str, np.dtype[np.generic]]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}

DATATYPES: Final[frozenset[str]] = frozenset(NUMPY_DTYPES)

_BY_KIND: Final[dict[tuple[str, int], str]] = {
    (dt.kind, dt.itemsize): name for name, dt in NUMPY_DTYPES.items() if name != "BYTES"
}

#: ONNX Runtime's type strings, as ``InferenceSession.get_inputs()`` reports them.
ORT_TYPES: Final[dict[str, str]] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}

#: ``onnx.TensorProto`` element types.
ONNX_ELEM_TYPES: Final[dict[int, str]] = {
    9: "BOOL",
    2: "UINT8",
    4: "UINT16",
    12: "UINT32",
    13: "UINT64",
    3: "INT8",
    5: "INT16",
    6: "INT32",
    7: "INT64",
    10: "FP16",
    1: "FP32",
    11: "FP64",
    8: "BYTES",
}


_BY_DTYPE: dict[np.dtype[np.generic], str] = {}


def datatype_of(array: np.ndarray) -> str:
    """The OIP datatype that carries ``array``'s values."""
    dt = array.dtype
    known = _BY_DTYPE.get(dt)
    if known is not None:
        return known
    _BY_DTYPE[dt] = name = _datatype_of_dtype(dt)
    return name


def _datatype_of_dtype(dt: np.dtype[np.generic]) -> str:
    if dt.kind in ("O", "S", "U"):
        return "BYTES"
    if dt.kind == "b":
        return "BOOL"
    try:
        return _BY_KIND[(dt.kind, dt.itemsize)]
    except KeyError:
        raise TypeError(f"numpy dtype {dt} has no Open Inference Protocol datatype") from None
