"""A small, independent client side of the Open Inference Protocol v2 for the tests.

It deliberately does not reuse ``modelport.serving.codec``: the tests check the server against
the protocol as written, not against its own encoder.
"""

from __future__ import annotations

import functools
import json
import struct
from typing import Any

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

NUMPY_DTYPES: dict[str, np.dtype[Any]] = {
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

HEADER_LENGTH = "Inference-Header-Content-Length"


def encode_bytes(items: np.ndarray) -> bytes:
    """BYTES elements as the binary extension carries them: 4-byte LE length, then the bytes."""
    out = bytearray()
    for item in items.ravel():
        raw = item if isinstance(item, bytes) else str(item).encode()
        out += struct.pack("<I", len(raw)) + raw
    return bytes(out)


def decode_bytes(raw: bytes) -> list[bytes]:
    items, pos = [], 0
    while pos < len(raw):
        (n,) = struct.unpack_from("<I", raw, pos)
        items.append(raw[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return items


def tensor_bytes(array: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        return encode_bytes(array)
    return np.ascontiguousarray(array, dtype=NUMPY_DTYPES[datatype]).tobytes()


def json_tensor(name: str, datatype: str, array: np.ndarray) -> dict[str, Any]:
    """An input with JSON ``data`` (flat, row-major)."""
    flat = array.ravel()
    if datatype == "BYTES":
        data: list[Any] = [x.decode() if isinstance(x, bytes) else str(x) for x in flat]
    elif datatype == "FP16":
        data = [float(x) for x in flat]
    else:
        data = flat.tolist()
    return {"name": name, "datatype": datatype, "shape": list(array.shape), "data": data}


def binary_request(
    inputs: list[tuple[str, str, np.ndarray]],
    *,
    outputs: list[dict[str, Any]] | None = None,
    request_id: str | None = None,
    parameters: dict[str, Any] | None = None,
) -> tuple[bytes, dict[str, str]]:
    """A binary-extension request: JSON header, then every input's raw bytes in order."""
    doc: dict[str, Any] = {"inputs": []}
    blobs: list[bytes] = []
    for name, datatype, array in inputs:
        blob = tensor_bytes(array, datatype)
        doc["inputs"].append(
            {
                "name": name,
                "datatype": datatype,
                "shape": list(array.shape),
                "parameters": {"binary_data_size": len(blob)},
            }
        )
        blobs.append(blob)
    if outputs is not None:
        doc["outputs"] = outputs
    if request_id is not None:
        doc["id"] = request_id
    if parameters is not None:
        doc["parameters"] = parameters
    header = json.dumps(doc).encode()
    return header + b"".join(blobs), {
        HEADER_LENGTH: str(len(header)),
        "Content-Type": "application/octet-stream",
    }


def decode_response(response: httpx.Response) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The JSON document of an infer response and its outputs as numpy arrays."""
    body = response.content
    length = response.headers.get(HEADER_LENGTH)
    header = body if length is None else body[: int(length)]
    rest = b"" if length is None else body[int(length) :]
    doc = json.loads(header)
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for out in doc["outputs"]:
        datatype, shape = out["datatype"], tuple(out["shape"])
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            chunk = rest[offset : offset + size]
            offset += size
            if datatype == "BYTES":
                arr = np.empty(len(decode_bytes(chunk)), dtype=object)
                arr[:] = decode_bytes(chunk)
                arrays[out["name"]] = arr.reshape(shape)
            else:
                dtype = NUMPY_DTYPES[datatype]
                arrays[out["name"]] = np.frombuffer(chunk, dtype=dtype).reshape(shape)
        elif datatype == "BYTES":
            arr = np.empty(len(out["data"]), dtype=object)
            arr[:] = [s.encode() for s in out["data"]]
            arrays[out["name"]] = arr.reshape(shape)
        else:
            arrays[out["name"]] = np.asarray(out["data"], dtype=NUMPY_DTYPES[datatype]).reshape(
                shape
            )
    assert offset == len(rest), "binary outputs do not add up to the body"
    return doc, arrays


@functools.lru_cache(maxsize=32)
def _samples(text: str) -> tuple[tuple[str, dict[str, str], float], ...]:
    return tuple(
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    )


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of every sample called ``name`` whose labels include ``labels`` (0 when none)."""
    return sum(
        value
        for sample_name, sample_labels, value in _samples(text)
        if sample_name == name and all(sample_labels.get(k) == v for k, v in labels.items())
    )


def metric_labels(text: str, name: str) -> list[dict[str, str]]:
    return [labels for sample_name, labels, _ in _samples(text) if sample_name == name]
