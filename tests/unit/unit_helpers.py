"""Helpers for the unit tests: an OIP client's encoders and decoders, and a tiny numpy model."""

from __future__ import annotations

import json
import struct
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

#: What an OIP client expects each datatype to carry, written out independently of the codec.
OIP_DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("?"),
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


def client_blob(datatype: str, array: np.ndarray) -> bytes:
    """The raw bytes an OIP client sends for one tensor under the binary extension."""
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(item)) + item for item in array.ravel())
    return np.ascontiguousarray(array, dtype=OIP_DTYPES[datatype]).tobytes()


def client_parse_bytes(blob: bytes) -> list[bytes]:
    items: list[bytes] = []
    pos = 0
    while pos < len(blob):
        (n,) = struct.unpack_from("<I", blob, pos)
        pos += 4
        items.append(blob[pos : pos + n])
        pos += n
    assert pos == len(blob)
    return items


def binary_request(tensors: Sequence[tuple[str, str, np.ndarray]], **top: Any) -> tuple[bytes, int]:
    """A request body as an OIP client builds it: JSON header, then one blob per input."""
    inputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, datatype, array in tensors:
        blob = client_blob(datatype, array)
        inputs.append(
            {
                "name": name,
                "datatype": datatype,
                "shape": list(array.shape),
                "parameters": {"binary_data_size": len(blob)},
            }
        )
        blobs.append(blob)
    header = json.dumps({**top, "inputs": inputs}).encode()
    return header + b"".join(blobs), len(header)


def json_request(inputs: list[dict[str, Any]], **top: Any) -> bytes:
    return json.dumps({**top, "inputs": inputs}).encode()


def parse_response(body: bytes, header_length: int | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Decode a response as an OIP client would; returns (header document, arrays by name)."""
    if header_length is None:
        header, rest = body, b""
    else:
        assert 0 < header_length <= len(body)
        header, rest = body[:header_length], body[header_length:]
    doc = json.loads(header)
    arrays: dict[str, Any] = {}
    pos = 0
    for out in doc["outputs"]:
        datatype = out["datatype"]
        shape = tuple(out["shape"])
        size = out.get("parameters", {}).get("binary_data_size")
        if size is not None:
            assert "data" not in out
            blob = rest[pos : pos + size]
            assert len(blob) == size
            pos += size
            if datatype == "BYTES":
                arrays[out["name"]] = _object_array(client_parse_bytes(blob), shape)
            else:
                arrays[out["name"]] = np.frombuffer(blob, dtype=OIP_DTYPES[datatype]).reshape(shape)
        else:
            data = out["data"]
            assert isinstance(data, list)
            if datatype == "BYTES":
                arrays[out["name"]] = _object_array([s.encode() for s in data], shape)
            else:
                arrays[out["name"]] = np.array(data, dtype=OIP_DTYPES[datatype]).reshape(shape)
    assert pos == len(rest), "response carries binary bytes no output declares"
    return doc, arrays


def _object_array(items: list[bytes], shape: tuple[int, ...]) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out.reshape(shape)


def assert_same_tensor(got: np.ndarray, expected: np.ndarray) -> None:
    """Equal dtype, shape and values; numbers compared bit for bit (so -0.0 != 0.0)."""
    assert got.shape == expected.shape
    assert got.dtype == expected.dtype, (got.dtype, expected.dtype)
    if expected.dtype == object:
        assert got.ravel().tolist() == expected.ravel().tolist()
    else:
        assert np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(expected).tobytes()


class Doubler:
    """A tiny numpy model: ``y = 2 * x``. Records every batch it is called with.

    ``poison``: a value that makes the call raise. ``gate``: an event the call waits on (so a
    test can hold the only compute slot); ``entered`` is set as soon as a call starts."""

    def __init__(self, poison: float | None = None, gate: threading.Event | None = None) -> None:
        self.poison = poison
        self.gate = gate
        self.entered = threading.Event()
        self.calls: list[dict[str, np.ndarray]] = []
        self._lock = threading.Lock()

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            self.calls.append({k: v.copy() for k, v in inputs.items()})
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10), "test never opened the gate"
        x = inputs["x"]
        if self.poison is not None and bool((x == self.poison).any()):
            raise ValueError(f"cannot handle the poisoned value {self.poison}")
        return {"y": x * 2}

    @property
    def batch_sizes(self) -> list[int]:
        return [call["x"].shape[0] for call in self.calls]

    def seen_values(self) -> set[float]:
        return {float(v) for call in self.calls for v in call["x"].ravel()}
