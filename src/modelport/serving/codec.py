"""Open Inference Protocol v2 tensor codec: JSON ``data`` and the binary tensor data extension.

A request body is either plain JSON, or (binary extension) a JSON header of
``Inference-Header-Content-Length`` bytes followed by the raw bytes of every input that declares
``parameters.binary_data_size``, in input order. BYTES elements travel in binary as a 4-byte
little-endian length followed by the bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from modelport.errors import InvalidInput
from modelport.serving.datatypes import NUMPY_DTYPES, datatype_of

_LEN = struct.Struct("<I")
MAX_DIMS = 32
#: The most elements a tensor's shape may describe (far beyond any body the server accepts).
MAX_ELEMENTS = 2**31
_FLOAT_MAX = {
    "FP16": float(np.finfo(np.float16).max),
    "FP32": float(np.finfo(np.float32).max),
    "FP64": float(np.finfo(np.float64).max),
}
_NUMPY_OPTS = orjson.OPT_SERIALIZE_NUMPY
_NO_BINARY = memoryview(b"")


def float_range(datatype: str) -> float:
    """The largest magnitude a float datatype (FP16, FP32, FP64) holds."""
    return _FLOAT_MAX[datatype]


@dataclass(slots=True)
class InputTensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    array: np.ndarray


@dataclass(slots=True)
class RequestedOutput:
    name: str
    binary: bool | None = None


@dataclass(slots=True)
class InferRequest:
    inputs: list[InputTensor]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    outputs: list[RequestedOutput] | None = None
    binary_output: bool = False


def decode_request(body: bytes, header_length: int | None = None) -> InferRequest:
    """Parse an inference request body into numpy tensors, or raise ``InvalidInput``."""
    doc, binary = parse_body(body, header_length)
    return decode_document(doc, binary)


def parse_body(body: bytes, header_length: int | None = None) -> tuple[Any, memoryview]:
    """The body's JSON document and the binary data after it (binary tensor extension)."""
    if header_length is not None:
        if header_length < 0 or header_length > len(body):
            raise InvalidInput(
                f"Inference-Header-Content-Length is {header_length} but the body has "
                f"{len(body)} bytes"
            )
        header, binary = body[:header_length], memoryview(body)[header_length:]
    else:
        header, binary = body, _NO_BINARY
    try:
        return orjson.loads(header), binary
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from None


def decode_document(doc: Any, binary: memoryview = _NO_BINARY) -> InferRequest:
    """A parsed request document (and its binary data) as numpy tensors, or ``InvalidInput``."""
    if not isinstance(doc, dict):
        raise InvalidInput("request body must be a JSON object with an 'inputs' list")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput("request must have a non-empty 'inputs' list")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("'id' must be a string")
    parameters = _parameters(doc.get("parameters"), "request")

    inputs: list[InputTensor] = []
    offset = 0
    seen: set[str] = set()
    for raw in raw_inputs:
        tensor, used = _decode_input(raw, binary, offset)
        if tensor.name in seen:
            raise InvalidInput(f"input '{tensor.name}' appears more than once")
        seen.add(tensor.name)
        inputs.append(tensor)
        offset += used
    if offset != len(binary):
        raise InvalidInput(
            f"the body carries {len(binary)} bytes of binary data but the inputs declare {offset}"
        )

    outputs: list[RequestedOutput] | None = None
    raw_outputs = doc.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list):
            raise InvalidInput("'outputs' must be a list of {'name': …} objects")
        outputs = []
        for raw in raw_outputs:
            if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
                raise InvalidInput("each requested output must be an object with a 'name' string")
            out_params = _parameters(raw.get("parameters"), f"output '{raw['name']}'")
            binary_flag = out_params.get("binary_data")
            outputs.append(
                RequestedOutput(raw["name"], None if binary_flag is None else bool(binary_flag))
            )
    return InferRequest(
        inputs=inputs,
        id=request_id,
        parameters=parameters,
        outputs=outputs,
        binary_output=bool(parameters.get("binary_data_output", False)),
    )


def _parameters(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidInput(f"'parameters' of the {where} must be a JSON object")
    return raw


def _decode_input(raw: Any, binary: memoryview, offset: int) -> tuple[InputTensor, int]:
    if not isinstance(raw, dict):
        raise InvalidInput("each input must be an object with name, shape, datatype and data")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput("each input needs a 'name' string")
    datatype = raw.get("datatype")
    if not isinstance(datatype, str) or datatype not in NUMPY_DTYPES:
        raise InvalidInput(
            f"input '{name}' has datatype {datatype!r}; expected one of "
            f"{', '.join(sorted(NUMPY_DTYPES))}"
        )
    shape_raw = raw.get("shape")
    if type(shape_raw) is not list:
        raise InvalidInput(f"input '{name}' needs a 'shape' list of non-negative integers")
    if len(shape_raw) > MAX_DIMS:
        raise InvalidInput(f"input '{name}' has {len(shape_raw)} dimensions; at most {MAX_DIMS}")
    count = 1
    volume = 1
    for d in shape_raw:
        if type(d) is not int or d < 0:
            raise InvalidInput(f"input '{name}' needs a 'shape' list of non-negative integers")
        count *= d
        if d:
            volume *= d
    if volume > MAX_ELEMENTS:
        # numpy sizes a shape by its non-zero dimensions too: [0, 2**63 - 1] holds no element
        # but no array can take that shape.
        raise InvalidInput(
            f"input '{name}' declares shape {shape_raw}, which is too large: a tensor holds at "
            f"most {MAX_ELEMENTS} elements, and the product of its non-zero dimensions may not "
            "exceed that either"
        )
    shape = tuple(shape_raw)
    params = raw.get("parameters")
    size = (
        None if params is None else _parameters(params, f"input '{name}'").get("binary_data_size")
    )
    if size is not None:
        if "data" in raw:
            raise InvalidInput(f"input '{name}' has both 'data' and binary_data_size")
        if type(size) is not int or size < 0 or offset + size > len(binary):
            raise InvalidInput(
                f"input '{name}' declares binary_data_size={size!r} but only "
                f"{len(binary) - offset} binary bytes remain in the body"
            )
        chunk = binary[offset : offset + size]
        array = _from_binary(name, datatype, shape, count, chunk)
        return InputTensor(name, datatype, shape, array), size
    if "data" not in raw:
        raise InvalidInput(f"input '{name}' has neither 'data' nor parameters.binary_data_size")
    array = _from_json(name, datatype, shape, count, raw["data"])
    return InputTensor(name, datatype, shape, array), 0


def _from_json(
    name: str, datatype: str, shape: tuple[int, ...], count: int, data: Any
) -> np.ndarray:
    if not isinstance(data, list):
        data = [data]
    if datatype == "BYTES":
        flat = _flatten(data)
        if len(flat) != count:
            raise _count_mismatch(name, shape, count, len(flat))
        out = np.empty(count, dtype=object)
        for i, item in enumerate(flat):
            if isinstance(item, str):
                out[i] = item.encode()
            else:
                raise InvalidInput(f"input '{name}' is BYTES: every element must be a string")
        return out.reshape(shape)
    dtype = NUMPY_DTYPES[datatype]
    if dtype.kind == "f" and data and type(data[0]) is not list:
        array = _flat_floats(name, datatype, dtype, data)
    else:
        try:
            with np.errstate(over="raise", invalid="raise"):
                array = np.asarray(data, dtype=dtype)
        except FloatingPointError:
            raise _out_of_range(name, datatype) from None
        except (ValueError, TypeError, OverflowError) as exc:
            raise InvalidInput(
                f"input '{name}' data cannot be read as {datatype}: {_first_line(exc)}"
            ) from None
        if dtype.kind == "f" and np.isnan(array).any():
            raise _not_numbers(name, datatype)
    if array.size != count:
        raise _count_mismatch(name, shape, count, array.size)
    if datatype == "BOOL" and not _only_bools(data):
        raise InvalidInput(f"input '{name}' is BOOL: every element must be true or false")
    return array.reshape(shape)


def _flat_floats(name: str, datatype: str, dtype: np.dtype[Any], data: list[Any]) -> np.ndarray:
    """The common case, kept cheap: a flat list of JSON numbers. ``min``/``max`` reject nulls
    and strings (TypeError) and find values the datatype cannot hold before numpy would turn
    them into inf."""
    try:
        if max(data) > _FLOAT_MAX[datatype] or min(data) < -_FLOAT_MAX[datatype]:
            raise _out_of_range(name, datatype)
    except TypeError:
        raise _not_numbers(name, datatype) from None
    return np.asarray(data, dtype=dtype)


def _out_of_range(name: str, datatype: str) -> InvalidInput:
    return InvalidInput(f"input '{name}' has values outside the range of {datatype}")


def _not_numbers(name: str, datatype: str) -> InvalidInput:
    # JSON has no NaN literal: a NaN here came from null or a string.
    return InvalidInput(f"input '{name}' has null or non-numeric values; {datatype} needs numbers")


def _only_bools(data: list[Any]) -> bool:
    return all(_only_bools(x) if isinstance(x, list) else isinstance(x, bool) for x in data)


def _flatten(data: list[Any]) -> list[Any]:
    if not any(isinstance(x, list) for x in data):
        return data
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def _from_binary(
    name: str, datatype: str, shape: tuple[int, ...], count: int, chunk: memoryview
) -> np.ndarray:
    if datatype == "BYTES":
        items = deserialize_bytes(chunk, name)
        if len(items) != count:
            raise _count_mismatch(name, shape, count, len(items))
        out = np.empty(count, dtype=object)
        out[:] = items
        return out.reshape(shape)
    dtype = NUMPY_DTYPES[datatype]
    if len(chunk) != count * dtype.itemsize:
        raise InvalidInput(
            f"input '{name}' has shape {list(shape)} of {datatype}, which needs "
            f"{count * dtype.itemsize} bytes, but binary_data_size is {len(chunk)}"
        )
    return np.frombuffer(chunk, dtype=dtype).reshape(shape)


def _count_mismatch(name: str, shape: tuple[int, ...], expected: int, got: int) -> InvalidInput:
    return InvalidInput(
        f"input '{name}' declares shape {list(shape)} ({expected} elements) but its data has "
        f"{got} elements"
    )


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def serialize_bytes(array: np.ndarray) -> bytes:
    """BYTES elements as the binary extension sends them: length-prefixed, row-major."""
    parts: list[bytes] = []
    for item in array.ravel():
        raw = item if isinstance(item, bytes) else str(item).encode()
        parts.append(_LEN.pack(len(raw)))
        parts.append(raw)
    return b"".join(parts)


def deserialize_bytes(chunk: memoryview | bytes, name: str = "tensor") -> list[bytes]:
    view = memoryview(chunk)
    items: list[bytes] = []
    pos = 0
    while pos < len(view):
        if pos + 4 > len(view):
            raise InvalidInput(f"input '{name}' BYTES data ends inside an element length prefix")
        (n,) = _LEN.unpack_from(view, pos)
        pos += 4
        if pos + n > len(view):
            raise InvalidInput(f"input '{name}' BYTES element of {n} bytes overruns its data")
        items.append(bytes(view[pos : pos + n]))
        pos += n
    return items


def encode_response(
    model_name: str,
    model_version: str,
    outputs: list[tuple[str, np.ndarray, bool]],
    request_id: str | None = None,
    parameters: dict[str, Any] | None = None,
) -> tuple[bytes, int | None]:
    """Encode ``(name, array, binary)`` outputs. Returns the body and, when any output is binary,
    the JSON header length for ``Inference-Header-Content-Length``."""
    doc_outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, array, binary in outputs:
        datatype = datatype_of(array)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            blob = serialize_bytes(array) if datatype == "BYTES" else _le_bytes(array)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = _json_data(array, datatype)
        doc_outputs.append(entry)
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        doc["id"] = request_id
    if parameters:
        doc["parameters"] = parameters
    doc["outputs"] = doc_outputs
    header = orjson.dumps(doc, option=_NUMPY_OPTS)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def _le_bytes(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def _json_data(array: np.ndarray, datatype: str) -> Any:
    flat = array.reshape(-1)
    if datatype == "BYTES":
        return [
            x.decode("utf-8", errors="replace") if isinstance(x, bytes) else str(x) for x in flat
        ]
    if datatype == "FP16":
        # orjson serialises float16 arrays too, but widening keeps the printed values exact.
        return flat.astype(np.float32)
    if not flat.flags.c_contiguous or flat.dtype.byteorder == ">":
        return np.ascontiguousarray(flat, dtype=flat.dtype.newbyteorder("="))
    return flat
