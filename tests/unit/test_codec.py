"""The OIP v2 tensor codec: requests in (JSON ``data`` and the binary extension), responses out."""

from __future__ import annotations

import json
import math
import struct
from typing import Any, Literal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from unit_helpers import (
    OIP_DTYPES,
    assert_same_tensor,
    binary_request,
    client_blob,
    json_request,
    parse_response,
)

from modelport.errors import InvalidInput
from modelport.serving.codec import (
    RequestedOutput,
    decode_request,
    deserialize_bytes,
    encode_response,
    serialize_bytes,
)

DATATYPES = sorted(OIP_DTYPES)
# Per-datatype properties run once per datatype, so each needs few examples; the mixed ones
# draw the datatypes themselves and get more.
PER_DATATYPE = settings(max_examples=15, deadline=None)
MIXED = settings(max_examples=50, deadline=None)

# ---------------------------------------------------------------------------------------------
# Strategies


FLOAT_WIDTHS: dict[int, Literal[16, 32, 64]] = {2: 16, 4: 32, 8: 64}


def elements(datatype: str, *, json_safe: bool) -> st.SearchStrategy[Any]:
    """Values of one datatype. ``json_safe``: only what JSON can carry (no NaN/inf, UTF-8 text)."""
    if datatype == "BOOL":
        return st.booleans()
    if datatype == "BYTES":
        return st.text(max_size=8).map(str.encode) if json_safe else st.binary(max_size=12)
    dtype = OIP_DTYPES[datatype]
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return st.integers(int(info.min), int(info.max))
    return st.floats(
        width=FLOAT_WIDTHS[dtype.itemsize], allow_nan=not json_safe, allow_infinity=not json_safe
    )


shapes = st.lists(st.integers(0, 3), max_size=3).map(tuple)


def make_array(datatype: str, values: list[Any], shape: tuple[int, ...]) -> np.ndarray:
    if datatype == "BYTES":
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out.reshape(shape)
    return np.array(values, dtype=OIP_DTYPES[datatype]).reshape(shape)


@st.composite
def tensors(draw: st.DrawFn, datatype: str, *, json_safe: bool) -> np.ndarray:
    shape = draw(shapes)
    count = math.prod(shape)
    values = draw(st.lists(elements(datatype, json_safe=json_safe), min_size=count, max_size=count))
    return make_array(datatype, values, shape)


def json_values(datatype: str, array: np.ndarray) -> list[Any]:
    """Flat JSON-ready values: strings for BYTES, Python numbers/bools otherwise."""
    if datatype == "BYTES":
        return [item.decode() for item in array.ravel()]
    return list(array.ravel().tolist())


def nest(flat: list[Any], shape: tuple[int, ...]) -> Any:
    if not shape:
        return flat[0]
    step = math.prod(shape[1:])
    return [nest(flat[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


def decode_one(body: bytes, header_length: int | None = None) -> np.ndarray:
    request = decode_request(body, header_length)
    assert len(request.inputs) == 1
    return request.inputs[0].array


def one_input(
    datatype: str = "FP32", shape: list[int] | None = None, data: Any = None, **extra: Any
) -> bytes:
    entry: dict[str, Any] = {
        "name": "x",
        "datatype": datatype,
        "shape": [2] if shape is None else shape,
    }
    if data is not None:
        entry["data"] = data
    entry.update(extra)
    return json_request([entry])


# ---------------------------------------------------------------------------------------------
# Requests: round trips


@pytest.mark.parametrize("datatype", DATATYPES)
@PER_DATATYPE
@given(data=st.data())
def test_every_datatype_round_trips_through_nested_json_data(datatype: str, data: Any) -> None:
    array = data.draw(tensors(datatype, json_safe=True))
    flat = json_values(datatype, array)
    payload = nest(flat, array.shape) if array.shape else flat
    body = one_input(datatype, list(array.shape), payload)

    request = decode_request(body)

    tensor = request.inputs[0]
    assert (tensor.name, tensor.datatype, tensor.shape) == ("x", datatype, array.shape)
    assert_same_tensor(tensor.array, array)


@pytest.mark.parametrize("datatype", DATATYPES)
@PER_DATATYPE
@given(data=st.data())
def test_every_datatype_round_trips_through_flat_json_data(datatype: str, data: Any) -> None:
    array = data.draw(tensors(datatype, json_safe=True))
    body = one_input(datatype, list(array.shape), json_values(datatype, array))

    assert_same_tensor(decode_one(body), array)


@pytest.mark.parametrize("datatype", DATATYPES)
@PER_DATATYPE
@given(data=st.data())
def test_every_datatype_round_trips_through_the_binary_extension(datatype: str, data: Any) -> None:
    array = data.draw(tensors(datatype, json_safe=False))
    body, header_length = binary_request([("x", datatype, array)])

    request = decode_request(body, header_length)

    tensor = request.inputs[0]
    assert (tensor.name, tensor.datatype, tensor.shape) == ("x", datatype, array.shape)
    assert_same_tensor(tensor.array, array)


@MIXED
@given(data=st.data())
def test_json_and_binary_inputs_mix_in_one_request(data: Any) -> None:
    """Binary blobs follow the header in input order; JSON inputs in between take no bytes."""
    count = data.draw(st.integers(1, 5))
    chosen = data.draw(st.lists(st.sampled_from(DATATYPES), min_size=count, max_size=count))
    binary_flags = data.draw(st.lists(st.booleans(), min_size=count, max_size=count))
    arrays = [data.draw(tensors(dt, json_safe=True)) for dt in chosen]
    entries: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for i, (datatype, array, binary) in enumerate(zip(chosen, arrays, binary_flags, strict=True)):
        entry: dict[str, Any] = {"name": f"in{i}", "datatype": datatype, "shape": list(array.shape)}
        if binary:
            blob = client_blob(datatype, array)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = json_values(datatype, array)
        entries.append(entry)
    header = json_request(entries, id="req-1")

    request = decode_request(header + b"".join(blobs), len(header))

    assert request.id == "req-1"
    assert [t.name for t in request.inputs] == [f"in{i}" for i in range(count)]
    for tensor, array in zip(request.inputs, arrays, strict=True):
        assert_same_tensor(tensor.array, array)


def test_plain_json_body_without_header_length_is_accepted() -> None:
    body = one_input("INT32", [2, 2], [[1, 2], [3, 4]])
    assert_same_tensor(decode_one(body, None), np.array([[1, 2], [3, 4]], dtype="<i4"))
    # A header length equal to the body length means "all header, no binary data".
    assert_same_tensor(decode_one(body, len(body)), np.array([[1, 2], [3, 4]], dtype="<i4"))


def test_scalar_data_is_accepted_for_a_one_element_tensor() -> None:
    assert_same_tensor(decode_one(one_input("FP64", [1], 2.5)), np.array([2.5]))


# ---------------------------------------------------------------------------------------------
# Requests: errors a client gets back


def invalid(body: bytes, header_length: int | None = None) -> str:
    with pytest.raises(InvalidInput) as info:
        decode_request(body, header_length)
    return info.value.message


def test_wrong_element_count_for_shape_is_rejected() -> None:
    message = invalid(one_input("FP32", [2, 2], [1.0, 2.0, 3.0]))
    assert "'x'" in message
    assert "[2, 2]" in message
    assert "4 elements" in message
    assert "3 elements" in message


def test_wrong_element_count_for_bytes_is_rejected() -> None:
    message = invalid(one_input("BYTES", [3], ["a", "b"]))
    assert "3 elements" in message and "2 elements" in message


def test_ragged_nested_data_is_rejected() -> None:
    message = invalid(one_input("INT32", [2, 2], [[1, 2], [3]]))
    assert "'x'" in message and "INT32" in message


def test_unknown_datatype_is_rejected_with_the_accepted_list() -> None:
    message = invalid(one_input("FP8", [1], [1.0]))
    assert "'FP8'" in message
    for name in ("BOOL", "BYTES", "FP32", "UINT64"):
        assert name in message


@pytest.mark.parametrize("datatype", [["FP32"], {"type": "FP32"}, 32, None])
def test_non_string_datatype_is_rejected_as_invalid_input(datatype: Any) -> None:
    message = invalid(one_input(datatype, [1], [1.0]))
    assert "datatype" in message


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"", b'{"inputs": [', b"\xff\xfe"],
    ids=["garbage", "empty", "truncated", "not-utf8"],
)
def test_bad_json_is_rejected(body: bytes) -> None:
    assert "not valid JSON" in invalid(body)


def test_json_that_is_not_an_object_is_rejected() -> None:
    assert "JSON object" in invalid(b"[1, 2, 3]")


@pytest.mark.parametrize("inputs", [None, [], {"name": "x"}])
def test_missing_or_empty_inputs_list_is_rejected(inputs: Any) -> None:
    body = json.dumps({} if inputs is None else {"inputs": inputs}).encode()
    assert "'inputs'" in invalid(body)


def test_binary_size_that_does_not_match_shape_is_rejected() -> None:
    # FP32 [2] needs 8 bytes; the client declares and sends only 4.
    header = json_request(
        [{"name": "x", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 4}}]
    )
    message = invalid(header + b"\x00" * 4, len(header))
    assert "'x'" in message and "8 bytes" in message and "binary_data_size is 4" in message


def test_binary_size_larger_than_the_body_is_rejected() -> None:
    header = json_request(
        [{"name": "x", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 8}}]
    )
    message = invalid(header + b"\x00" * 5, len(header))
    assert "binary_data_size=8" in message and "5 binary bytes" in message


def test_binary_bytes_no_input_declares_are_rejected() -> None:
    body, header_length = binary_request([("x", "INT32", np.arange(2, dtype="<i4"))])
    message = invalid(body + b"\x00\x00", header_length)
    assert "10 bytes" in message and "declare 8" in message


def test_bytes_binary_with_wrong_element_count_is_rejected() -> None:
    blob = serialize_bytes(np.array([b"a", b"b"], dtype=object))
    header = json_request(
        [
            {
                "name": "x",
                "datatype": "BYTES",
                "shape": [3],
                "parameters": {"binary_data_size": len(blob)},
            }
        ]
    )
    message = invalid(header + blob, len(header))
    assert "3 elements" in message and "2 elements" in message


def test_bytes_binary_with_truncated_element_is_rejected() -> None:
    blob = struct.pack("<I", 10) + b"abc"
    header = json_request(
        [
            {
                "name": "x",
                "datatype": "BYTES",
                "shape": [1],
                "parameters": {"binary_data_size": len(blob)},
            }
        ]
    )
    assert "overruns" in invalid(header + blob, len(header))


def test_binary_data_without_header_length_is_rejected() -> None:
    body, _ = binary_request([("x", "FP32", np.zeros(2, dtype="<f4"))])
    # Without Inference-Header-Content-Length the whole body is parsed as JSON.
    with pytest.raises(InvalidInput):
        decode_request(body)


def test_duplicate_input_names_are_rejected() -> None:
    entry = {"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}
    message = invalid(json_request([entry, dict(entry)]))
    assert "'x'" in message and "more than once" in message


def test_input_with_neither_data_nor_binary_size_is_rejected() -> None:
    message = invalid(one_input("FP32", [1]))
    assert "'x'" in message and "'data'" in message and "binary_data_size" in message


def test_input_with_both_data_and_binary_size_is_rejected() -> None:
    header = json_request(
        [
            {
                "name": "x",
                "datatype": "FP32",
                "shape": [1],
                "data": [1.0],
                "parameters": {"binary_data_size": 4},
            }
        ]
    )
    assert "both" in invalid(header + b"\x00" * 4, len(header))


@pytest.mark.parametrize("data", [[1, 0], [1.0, 0.0], [True, 1], ["true", "false"]])
def test_bool_given_anything_but_true_or_false_is_rejected(data: list[Any]) -> None:
    message = invalid(one_input("BOOL", [2], data))
    assert "'x'" in message and "BOOL" in message


@pytest.mark.parametrize("data", [[1, 2], [1.5, "a"], [None, "a"], [["a"], [3]]])
def test_bytes_given_anything_but_strings_is_rejected(data: list[Any]) -> None:
    shape = [2, 1] if isinstance(data[0], list) else [2]
    message = invalid(one_input("BYTES", shape, data))
    assert "'x'" in message and "BYTES" in message and "string" in message


@pytest.mark.parametrize(
    ("datatype", "value"), [("INT8", 128), ("UINT8", -1), ("UINT16", 70000), ("INT64", 2**63)]
)
def test_integers_out_of_range_for_the_datatype_are_rejected(datatype: str, value: int) -> None:
    message = invalid(one_input(datatype, [1], [value]))
    assert "'x'" in message and datatype in message


@pytest.mark.parametrize(("datatype", "value"), [("FP16", 1e10), ("FP32", 1e300)])
def test_floats_out_of_range_for_the_datatype_are_rejected(datatype: str, value: float) -> None:
    """A finite JSON number the datatype cannot hold must not silently become infinity."""
    message = invalid(one_input(datatype, [1], [value]))
    assert "'x'" in message and datatype in message


@pytest.mark.parametrize("header_length", [10_000, -1])
def test_header_length_outside_the_body_is_rejected(header_length: int) -> None:
    body = one_input("FP32", [1], [1.0])
    message = invalid(body, header_length)
    assert "Inference-Header-Content-Length" in message
    assert str(header_length) in message and str(len(body)) in message


@pytest.mark.parametrize("shape", [[-1], [1.5], "2", [True], None])
def test_bad_shape_is_rejected(shape: Any) -> None:
    body = json_request([{"name": "x", "datatype": "FP32", "shape": shape, "data": [1.0]}])
    assert "'shape'" in invalid(body)


HUGE_SHAPES = [
    [0, 9223372036854775807],
    [0, 2**62, 2**62],
    [2**62, 0, 2**62],
    [0, 2**31 + 1],
]


def binary_input(datatype: str, shape: list[int], blob: bytes) -> tuple[bytes, int]:
    header = json_request(
        [
            {
                "name": "x",
                "datatype": datatype,
                "shape": shape,
                "parameters": {"binary_data_size": len(blob)},
            }
        ]
    )
    return header + blob, len(header)


@pytest.mark.parametrize("shape", HUGE_SHAPES)
@pytest.mark.parametrize("datatype", ["FP32", "BYTES", "INT64"])
def test_an_empty_tensor_with_a_huge_dimension_is_rejected_in_json(
    datatype: str, shape: list[int]
) -> None:
    message = invalid(one_input(datatype, shape, []))
    assert "too large" in message and "'x'" in message and str(shape) in message


@pytest.mark.parametrize("shape", HUGE_SHAPES)
@pytest.mark.parametrize("datatype", ["FP32", "BYTES", "UINT8"])
def test_an_empty_tensor_with_a_huge_dimension_is_rejected_in_binary(
    datatype: str, shape: list[int]
) -> None:
    message = invalid(*binary_input(datatype, shape, b""))
    assert "too large" in message and str(shape) in message


def test_an_empty_tensor_within_the_element_limit_keeps_its_shape() -> None:
    request = decode_request(one_input("FP32", [0, 2**31], []))
    assert request.inputs[0].array.shape == (0, 2**31)


@given(
    shape=st.lists(
        st.one_of(st.integers(0, 3), st.integers(0, 2**64), st.sampled_from([0, 2**31, 2**63])),
        max_size=5,
    ),
    datatype=st.sampled_from(DATATYPES),
    binary=st.booleans(),
)
@MIXED
def test_any_shape_of_an_empty_tensor_decodes_or_is_refused_as_invalid_input(
    shape: list[int], datatype: str, binary: bool
) -> None:
    body, header_length = (
        binary_input(datatype, shape, b"") if binary else (one_input(datatype, shape, []), None)
    )
    try:
        request = decode_request(body, header_length)
    except InvalidInput as exc:
        assert exc.message
    else:
        assert request.inputs[0].array.shape == tuple(shape)
        assert request.inputs[0].array.size == 0


def test_non_string_request_id_is_rejected() -> None:
    body = json_request([{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}], id=7)
    assert "'id'" in invalid(body)


# ---------------------------------------------------------------------------------------------
# Requested outputs and binary output flags


def test_requested_outputs_carry_their_binary_data_flags() -> None:
    body = json_request(
        [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}],
        outputs=[
            {"name": "a", "parameters": {"binary_data": True}},
            {"name": "b"},
            {"name": "c", "parameters": {"binary_data": False}},
        ],
        parameters={"binary_data_output": True, "timeout_ms": 50},
    )

    request = decode_request(body)

    assert request.outputs == [
        RequestedOutput("a", True),
        RequestedOutput("b", None),
        RequestedOutput("c", False),
    ]
    assert request.binary_output is True
    assert request.parameters == {"binary_data_output": True, "timeout_ms": 50}


def test_without_outputs_or_parameters_every_output_defaults_to_json() -> None:
    request = decode_request(one_input("FP32", [1], [1.0]))
    assert request.outputs is None
    assert request.binary_output is False
    assert request.parameters == {}
    assert request.id is None


@pytest.mark.parametrize(
    "outputs", [{"name": "a"}, ["a"], [{"name": 3}], [{"parameters": {}}]], ids=str
)
def test_malformed_requested_outputs_are_rejected(outputs: Any) -> None:
    body = json_request(
        [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}], outputs=outputs
    )
    assert "output" in invalid(body)


def test_non_object_parameters_are_rejected() -> None:
    body = json_request(
        [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}], parameters=[1]
    )
    assert "'parameters'" in invalid(body)


# ---------------------------------------------------------------------------------------------
# Responses


@pytest.mark.parametrize("datatype", DATATYPES)
@PER_DATATYPE
@given(data=st.data())
def test_every_datatype_round_trips_through_a_json_response(datatype: str, data: Any) -> None:
    array = data.draw(tensors(datatype, json_safe=True))

    body, header_length = encode_response("m", "3", [("y", array, False)], request_id="r1")

    assert header_length is None
    doc, arrays = parse_response(body, header_length)
    assert doc["model_name"] == "m" and doc["model_version"] == "3" and doc["id"] == "r1"
    assert doc["outputs"][0]["datatype"] == datatype
    assert_same_tensor(arrays["y"], array)


@pytest.mark.parametrize("datatype", DATATYPES)
@PER_DATATYPE
@given(data=st.data())
def test_every_datatype_round_trips_through_a_binary_response(datatype: str, data: Any) -> None:
    array = data.draw(tensors(datatype, json_safe=False))

    body, header_length = encode_response("m", "3", [("y", array, True)])

    assert header_length is not None
    doc, arrays = parse_response(body, header_length)
    assert doc["outputs"][0]["datatype"] == datatype
    assert "id" not in doc
    assert_same_tensor(arrays["y"], array)


@MIXED
@given(data=st.data())
def test_json_and_binary_outputs_mix_in_one_response(data: Any) -> None:
    count = data.draw(st.integers(1, 5))
    chosen = data.draw(st.lists(st.sampled_from(DATATYPES), min_size=count, max_size=count))
    flags = data.draw(st.lists(st.booleans(), min_size=count, max_size=count))
    arrays = [data.draw(tensors(dt, json_safe=True)) for dt in chosen]
    outputs = [(f"out{i}", a, f) for i, (a, f) in enumerate(zip(arrays, flags, strict=True))]

    body, header_length = encode_response("m", "1", outputs, parameters={"note": "x"})

    assert (header_length is not None) == any(flags)
    doc, parsed = parse_response(body, header_length)
    assert doc["parameters"] == {"note": "x"}
    assert [o["name"] for o in doc["outputs"]] == [name for name, _, _ in outputs]
    for name, array, _ in outputs:
        assert_same_tensor(parsed[name], array)


@pytest.mark.parametrize(
    "array",
    [
        np.arange(6, dtype=">i4").reshape(2, 3),
        np.arange(6, dtype=">f8").reshape(3, 2),
        np.arange(12, dtype="<f4").reshape(3, 4)[:, ::2],
        np.arange(6, dtype="<i8").reshape(2, 3).T,
        np.array(["ab", "ü"]),
    ],
    ids=["big-endian-int", "big-endian-float", "strided", "transposed", "numpy-str"],
)
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_unusual_memory_layouts_encode_their_logical_values(
    array: np.ndarray, binary: bool
) -> None:
    body, header_length = encode_response("m", "1", [("y", array, binary)])

    _, parsed = parse_response(body, header_length)

    if array.dtype.kind == "U":
        assert parsed["y"].tolist() == [s.encode() for s in array.tolist()]
    else:
        assert parsed["y"].shape == array.shape
        assert parsed["y"].tolist() == array.tolist()


def test_bytes_serialisation_is_length_prefixed_little_endian() -> None:
    array = np.array([[b"ab", b""], [b"\x00\xff", b"xyz"]], dtype=object)
    blob = serialize_bytes(array)
    assert blob == (
        b"\x02\x00\x00\x00ab\x00\x00\x00\x00\x02\x00\x00\x00\x00\xff\x03\x00\x00\x00xyz"
    )
    assert deserialize_bytes(blob) == [b"ab", b"", b"\x00\xff", b"xyz"]


def test_bytes_deserialisation_rejects_a_cut_length_prefix() -> None:
    with pytest.raises(InvalidInput, match="length prefix"):
        deserialize_bytes(b"\x01\x00", "t")
