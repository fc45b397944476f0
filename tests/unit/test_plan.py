"""A version's request plan: it decodes common requests exactly as the general path does, and
hands everything else to the general path."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelport.errors import InvalidInput
from modelport.serving.codec import decode_document
from modelport.serving.request_plan import RequestPlan
from modelport.serving.signature import Signature, TensorSpec, validate_inputs

RANKER = Signature(
    (TensorSpec("input", "FP32", (-1, 4)),),
    (TensorSpec("score", "FP32", (-1, 1)),),
)
TWO_INPUTS = Signature(
    (TensorSpec("a", "FP64", (-1, 2)), TensorSpec("b", "FP16", (-1, 3))),
    (TensorSpec("y", "FP32", (-1, 1)),),
)


def general(signature: Signature, doc: Any) -> dict[str, np.ndarray]:
    """What the general decoder and the signature check make of ``doc`` (or InvalidInput)."""
    request = decode_document(orjson.loads(orjson.dumps(doc)))
    return validate_inputs(signature, request.inputs, "m")


def planned(signature: Signature, doc: Any) -> tuple[dict[str, np.ndarray], int] | None:
    plan = RequestPlan.compile(signature)
    assert plan is not None
    return plan.arrays(orjson.loads(orjson.dumps(doc)))


def ranker_doc(rows: list[list[float]], **extra: Any) -> dict[str, Any]:
    flat = [v for row in rows for v in row]
    doc: dict[str, Any] = {
        "inputs": [{"name": "input", "shape": [len(rows), 4], "datatype": "FP32", "data": flat}]
    }
    doc.update(extra)
    return doc


finite32 = st.floats(allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(finite32, min_size=4, max_size=4), min_size=1, max_size=8))
def test_a_plain_request_decodes_to_the_same_arrays_as_the_general_path(
    rows: list[list[float]],
) -> None:
    doc = ranker_doc(rows)
    got = planned(RANKER, doc)
    assert got is not None
    arrays, count = got
    expected = general(RANKER, doc)
    assert count == len(rows)
    assert arrays.keys() == expected.keys()
    for name, array in expected.items():
        assert arrays[name].dtype == array.dtype
        assert arrays[name].shape == array.shape
        np.testing.assert_array_equal(arrays[name], array)


def test_several_inputs_in_any_order_and_an_id_are_recognised() -> None:
    doc = {
        "id": "r-1",
        "inputs": [
            {"name": "b", "shape": [2, 3], "datatype": "FP16", "data": [1, 2, 3, 4, 5, 6]},
            {"name": "a", "shape": [2, 2], "datatype": "FP64", "data": [0.5, 1.5, 2.5, 3.5]},
        ],
    }
    got = planned(TWO_INPUTS, doc)
    assert got is not None
    arrays, rows = got
    assert rows == 2
    expected = general(TWO_INPUTS, doc)
    for name in ("a", "b"):
        assert arrays[name].dtype == expected[name].dtype
        np.testing.assert_array_equal(arrays[name], expected[name])


F32_MAX = float(np.finfo(np.float32).max)
F64_MAX = float(np.finfo(np.float64).max)


@pytest.mark.parametrize(
    ("signature", "doc"),
    [
        # Every value at the edge of FP32: the sum of their squares is far past the bound the
        # quick check uses, and the values are still accepted.
        (
            RANKER,
            {
                "inputs": [
                    {
                        "name": "input",
                        "shape": [1, 4],
                        "datatype": "FP32",
                        "data": [F32_MAX, -F32_MAX, F32_MAX, 1.0],
                    }
                ]
            },
        ),
        (
            TWO_INPUTS,
            {
                "inputs": [
                    {"name": "a", "shape": [1, 2], "datatype": "FP64", "data": [F64_MAX, -F64_MAX]},
                    {"name": "b", "shape": [1, 3], "datatype": "FP16", "data": [65504, -65504, 1]},
                ]
            },
        ),
    ],
)
def test_values_at_the_edge_of_the_range_take_the_plan(signature: Signature, doc: Any) -> None:
    got = planned(signature, doc)
    assert got is not None
    expected = general(signature, doc)
    for name, array in got[0].items():
        assert array.dtype == expected[name].dtype
        np.testing.assert_array_equal(array, expected[name])


@pytest.mark.parametrize("value", [65520.0, -1e6, 1e39])
def test_one_value_past_the_range_among_large_ones_goes_the_general_way(value: float) -> None:
    limit = float(np.finfo(np.float16).max)
    doc = {
        "inputs": [
            {"name": "a", "shape": [1, 2], "datatype": "FP64", "data": [1.0, 2.0]},
            {"name": "b", "shape": [1, 3], "datatype": "FP16", "data": [limit, -limit, value]},
        ]
    }
    assert planned(TWO_INPUTS, doc) is None
    with pytest.raises(InvalidInput):
        general(TWO_INPUTS, doc)


ROW = [0.1, 0.2, 0.3, 0.4]
INPUT = {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": ROW}


@pytest.mark.parametrize(
    ("doc", "why"),
    [
        ([INPUT], "not an object"),
        ({"inputs": []}, "no inputs"),
        ({"inputs": [INPUT, INPUT]}, "the input twice"),
        ({"inputs": [INPUT], "id": 7}, "an id that is not a string"),
        ({"inputs": [INPUT], "parameters": {"timeout_ms": 5}}, "parameters"),
        ({"inputs": [INPUT], "outputs": [{"name": "score"}]}, "an output selection"),
        ({"inputs": [{**INPUT, "name": "other"}]}, "an unknown input"),
        ({"inputs": [{**INPUT, "datatype": "FP64"}]}, "another datatype"),
        ({"inputs": [{**INPUT, "shape": [1, 5]}]}, "a shape the signature does not allow"),
        ({"inputs": [{**INPUT, "shape": [2, 4]}]}, "a shape the data does not fill"),
        ({"inputs": [{**INPUT, "shape": [0, 4], "data": []}]}, "no rows"),
        ({"inputs": [{**INPUT, "shape": [1, True]}]}, "a boolean dimension"),
        ({"inputs": [{**INPUT, "data": [[0.1, 0.2, 0.3, 0.4]]}]}, "nested data"),
        ({"inputs": [{**INPUT, "data": [0.1, None, 0.3, 0.4]}]}, "a null"),
        ({"inputs": [{**INPUT, "data": [0.1, "0.2", 0.3, 0.4]}]}, "a string"),
        ({"inputs": [{**INPUT, "data": [0.1, 1e39, 0.3, 0.4]}]}, "a value out of range"),
        ({"inputs": [{**INPUT, "data": [0.1, -1e39, 0.3, 0.4]}]}, "a value out of range below"),
        ({"inputs": [{**INPUT, "data": [0.1, 0.2, 0.3, 3.5e38]}]}, "the last value out of range"),
        ({"inputs": [{**INPUT, "parameters": {}}]}, "input parameters"),
        ({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32"}]}, "no data"),
    ],
)
def test_anything_unusual_goes_the_general_way(doc: Any, why: str) -> None:
    assert planned(RANKER, doc) is None, why


@pytest.mark.parametrize(
    "doc",
    [
        {"inputs": [{**INPUT, "data": [0.1, None, 0.3, 0.4]}]},
        {"inputs": [{**INPUT, "data": [0.1, 1e39, 0.3, 0.4]}]},
        {"inputs": [{**INPUT, "data": [0.1, -1e39, 0.3, 0.4]}]},
        {"inputs": [{**INPUT, "data": [0.1, 0.2, 0.3, 3.5e38]}]},
        {"inputs": [{**INPUT, "shape": [1, 5]}]},
        {"inputs": [{**INPUT, "name": "other"}]},
    ],
)
def test_what_the_plan_passes_on_as_a_mistake_the_general_path_refuses(doc: Any) -> None:
    with pytest.raises(InvalidInput):
        general(RANKER, doc)


@pytest.mark.parametrize(
    "data",
    [
        [True, False, 1, 2],
        [1, -(2**62), 2**63, 0],
        [0.0, -0.0, 1e-45, -1e-40],
        # 0.0 then a value whose low bytes are 80 7f: infinity's bytes across two values.
        [0.0, float(np.frombuffer(b"\x80\x7f\x00\x3f", np.float32)[0]), 0.0, 1.0],
        [0.0, float(np.frombuffer(b"\x80\xff\x00\xbf", np.float32)[0]), 0.0, 1.0],
    ],
)
def test_booleans_integers_tiny_values_and_infinity_lookalikes_decode_as_the_general_path(
    data: list[Any],
) -> None:
    doc = {"inputs": [{**INPUT, "data": data}]}
    got = planned(RANKER, doc)
    assert got is not None
    expected = general(RANKER, doc)["input"]
    assert got[0]["input"].dtype == expected.dtype
    np.testing.assert_array_equal(got[0]["input"], expected)
    assert np.signbit(got[0]["input"]).tolist() == np.signbit(expected).tolist()


def test_signatures_with_inputs_the_plan_does_not_decode_have_no_plan() -> None:
    ints = Signature((TensorSpec("ids", "INT64", (-1, 8)),), (TensorSpec("e", "FP32", (-1, 3)),))
    flags = Signature((TensorSpec("on", "BOOL", (-1, 1)),), (TensorSpec("e", "FP32", (-1, 3)),))
    assert RequestPlan.compile(ints) is None
    assert RequestPlan.compile(flags) is None
    assert RequestPlan.compile(RANKER) is not None


TEXTS = Signature((TensorSpec("text", "BYTES", (-1,)),), (TensorSpec("e", "FP32", (-1, 3)),))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(), min_size=1, max_size=6))
def test_texts_decode_to_the_same_bytes_as_the_general_path(texts: list[str]) -> None:
    doc = {"inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}]}
    try:
        expected = general(TEXTS, doc)
    except InvalidInput:
        assert planned(TEXTS, doc) is None
        return
    got = planned(TEXTS, doc)
    assert got is not None
    arrays, rows = got
    assert rows == len(texts)
    assert arrays["text"].dtype == object
    assert list(arrays["text"]) == list(expected["text"])


def test_texts_with_a_number_among_them_go_the_general_way() -> None:
    doc = {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a", 1]}]}
    assert planned(TEXTS, doc) is None
    with pytest.raises(InvalidInput):
        general(TEXTS, doc)


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=8), children, max_size=4)
        ),
        max_leaves=20,
    ),
    st.sampled_from(["name", "shape", "datatype", "data"]),
)
def test_no_document_makes_the_plan_raise(value: Any, field: str) -> None:
    """Whatever a client sends, the plan answers arrays or None, never an exception."""
    for signature in (RANKER, TWO_INPUTS, TEXTS):
        plan = RequestPlan.compile(signature)
        assert plan is not None
        plan.arrays(value)
        plan.arrays({"inputs": value})
        plan.arrays({"inputs": [value]})
        plan.arrays({"inputs": [{**INPUT, field: value}]})
