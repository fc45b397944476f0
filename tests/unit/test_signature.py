"""Validation of decoded request tensors against a model's signature, before any queueing."""

from __future__ import annotations

import numpy as np
import pytest

from modelport.errors import InvalidInput
from modelport.serving.codec import InputTensor
from modelport.serving.signature import Signature, TensorSpec, validate_inputs

BATCHABLE = Signature(
    inputs=(
        TensorSpec("features", "FP32", (-1, 3)),
        TensorSpec("ids", "INT64", (-1,)),
    ),
    outputs=(TensorSpec("scores", "FP32", (-1, 2)),),
)

FIXED = Signature(
    inputs=(TensorSpec("image", "UINT8", (2, 2)), TensorSpec("scale", "FP64", (1,))),
    outputs=(TensorSpec("label", "INT64", (1,)),),
)

_DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "UINT8": np.uint8}


def tensor(name: str, datatype: str, shape: tuple[int, ...]) -> InputTensor:
    return InputTensor(name, datatype, shape, np.zeros(shape, dtype=_DTYPES[datatype]))


def good_batch(rows: int = 2) -> list[InputTensor]:
    return [tensor("features", "FP32", (rows, 3)), tensor("ids", "INT64", (rows,))]


def rejected(signature: Signature, tensors: list[InputTensor]) -> str:
    with pytest.raises(InvalidInput) as info:
        validate_inputs(signature, tensors, "clf")
    return info.value.message


def test_matching_inputs_come_back_by_name() -> None:
    tensors = good_batch(4)
    arrays = validate_inputs(BATCHABLE, tensors, "clf")
    assert set(arrays) == {"features", "ids"}
    assert arrays["features"] is tensors[0].array
    assert arrays["ids"] is tensors[1].array


def test_input_order_does_not_matter() -> None:
    arrays = validate_inputs(BATCHABLE, list(reversed(good_batch())), "clf")
    assert set(arrays) == {"features", "ids"}


def test_unknown_input_name_is_rejected_with_the_known_names() -> None:
    message = rejected(BATCHABLE, [*good_batch(), tensor("extra", "FP32", (2,))])
    assert "'clf'" in message and "'extra'" in message
    assert "features" in message and "ids" in message


def test_wrong_datatype_is_rejected() -> None:
    message = rejected(
        BATCHABLE, [tensor("features", "FP64", (2, 3)), tensor("ids", "INT64", (2,))]
    )
    assert "'features'" in message and "FP32" in message and "FP64" in message


@pytest.mark.parametrize("shape", [(2,), (2, 3, 1), ()], ids=["rank1", "rank3", "scalar"])
def test_wrong_rank_is_rejected(shape: tuple[int, ...]) -> None:
    message = rejected(BATCHABLE, [tensor("features", "FP32", shape), tensor("ids", "INT64", (2,))])
    assert "'features'" in message
    assert str(list(shape)) in message and "[-1, 3]" in message


def test_fixed_dimension_mismatch_is_rejected() -> None:
    message = rejected(
        BATCHABLE, [tensor("features", "FP32", (2, 4)), tensor("ids", "INT64", (2,))]
    )
    assert "[2, 4]" in message and "[-1, 3]" in message


def test_fixed_shape_model_rejects_any_other_shape() -> None:
    message = rejected(FIXED, [tensor("image", "UINT8", (2, 3)), tensor("scale", "FP64", (1,))])
    assert "'image'" in message and "[2, 2]" in message


@pytest.mark.parametrize("rows", [1, 7, 1000])
def test_dynamic_dimension_accepts_any_size(rows: int) -> None:
    arrays = validate_inputs(BATCHABLE, good_batch(rows), "clf")
    assert arrays["features"].shape == (rows, 3)


def test_dynamic_inner_dimension_accepts_any_size() -> None:
    signature = Signature(
        inputs=(TensorSpec("tokens", "INT64", (-1, -1)),),
        outputs=(TensorSpec("vec", "FP32", (-1, 4)),),
    )
    for shape in [(1, 1), (3, 17), (2, 512)]:
        assert validate_inputs(signature, [tensor("tokens", "INT64", shape)], "enc")


def test_inputs_disagreeing_on_rows_are_rejected() -> None:
    message = rejected(
        BATCHABLE, [tensor("features", "FP32", (2, 3)), tensor("ids", "INT64", (3,))]
    )
    assert "rows" in message and "2" in message and "3" in message


def test_missing_input_is_rejected_by_name() -> None:
    message = rejected(BATCHABLE, [tensor("features", "FP32", (2, 3))])
    assert "'clf'" in message and "ids" in message


def test_zero_rows_are_rejected() -> None:
    message = rejected(BATCHABLE, good_batch(0))
    assert "no rows" in message


def test_fixed_shape_model_does_not_compare_rows() -> None:
    arrays = validate_inputs(
        FIXED, [tensor("image", "UINT8", (2, 2)), tensor("scale", "FP64", (1,))], "fixed"
    )
    assert set(arrays) == {"image", "scale"}


def test_batchable_means_every_tensor_has_a_dynamic_leading_dimension() -> None:
    assert BATCHABLE.batchable
    assert not FIXED.batchable
    half = Signature(
        inputs=(TensorSpec("x", "FP32", (-1, 3)),), outputs=(TensorSpec("y", "FP32", (1,)),)
    )
    assert not half.batchable
    assert not Signature((), ()).batchable


def test_signature_survives_a_dict_round_trip() -> None:
    assert Signature.from_dict(BATCHABLE.to_dict()) == BATCHABLE
    assert BATCHABLE.output_names == ("scores",)
