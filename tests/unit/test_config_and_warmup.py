"""Per-version configuration validation and the warmup requests run before a version is READY."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from modelport.errors import InvalidInput
from modelport.serving.codec import InputTensor
from modelport.serving.config import BatchingConfig, VersionConfig
from modelport.serving.signature import Signature, TensorSpec, validate_inputs
from modelport.serving.warmup import generated_request, warmup_requests

# ---------------------------------------------------------------------------------------------
# VersionConfig


def test_defaults_are_a_valid_batching_configuration() -> None:
    config = VersionConfig()
    assert config.batching.max_batch_size == 64
    assert config.batching.max_queue_delay_ms == 2.0
    assert config.batching.preferred_batch_sizes == []
    assert config.batching.max_queue_size == 1024
    assert config.runtime.kind == "onnx"
    assert config.warmup == []


def test_preferred_batch_size_larger_than_max_batch_size_is_rejected() -> None:
    with pytest.raises(ValidationError, match="preferred_batch_sizes"):
        VersionConfig.model_validate(
            {"batching": {"max_batch_size": 8, "preferred_batch_sizes": [4, 16]}}
        )


@pytest.mark.parametrize("size", [0, -2])
def test_preferred_batch_size_below_one_is_rejected(size: int) -> None:
    with pytest.raises(ValidationError, match="preferred_batch_sizes"):
        BatchingConfig(max_batch_size=8, preferred_batch_sizes=[size])


def test_preferred_batch_sizes_are_sorted_and_deduplicated() -> None:
    config = BatchingConfig(max_batch_size=16, preferred_batch_sizes=[16, 4, 8, 4])
    assert config.preferred_batch_sizes == [4, 8, 16]


def test_preferred_batch_size_equal_to_max_batch_size_is_accepted() -> None:
    assert BatchingConfig(max_batch_size=8, preferred_batch_sizes=[8]).preferred_batch_sizes == [8]


@pytest.mark.parametrize(
    "batching",
    [
        {"max_batch_size": -1},
        {"max_queue_delay_ms": -0.5},
        {"max_queue_size": 0},
        {"max_batch": 8},
    ],
    ids=["negative-max", "negative-delay", "zero-queue", "unknown-key"],
)
def test_bad_batching_settings_are_rejected(batching: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        VersionConfig.model_validate({"batching": batching})


@pytest.mark.parametrize(
    "runtime",
    [
        {"kind": "tensorflow"},
        {"instances": 0},
        {"instances": 17},
        {"max_sequence_length": 4},
        {"compute_timeout_s": 0},
        {"compute_timeout_s": -1},
        {"compute_timeout_s": 3601},
    ],
    ids=[
        "unknown-kind",
        "no-instances",
        "too-many-instances",
        "short-sequences",
        "no-compute-time",
        "negative-compute-timeout",
        "compute-timeout-over-an-hour",
    ],
)
def test_bad_runtime_settings_are_rejected(runtime: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        VersionConfig.model_validate({"runtime": runtime})


def test_compute_timeout_defaults_to_thirty_seconds() -> None:
    assert VersionConfig().runtime.compute_timeout_s == 30.0
    stored = VersionConfig.model_validate({"runtime": {"compute_timeout_s": 2.5}})
    assert stored.runtime.compute_timeout_s == 2.5


def test_unknown_top_level_key_is_rejected() -> None:
    with pytest.raises(ValidationError):
        VersionConfig.model_validate({"batchin": {}})


def test_config_survives_a_json_round_trip() -> None:
    config = VersionConfig.model_validate(
        {
            "batching": {"max_batch_size": 32, "preferred_batch_sizes": [8, 32]},
            "runtime": {"kind": "text-embedding", "instances": 2},
            "warmup": [{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [0]}]}],
        }
    )
    assert VersionConfig.model_validate_json(config.model_dump_json()) == config


# ---------------------------------------------------------------------------------------------
# Warmup

TABULAR = Signature(
    inputs=(
        TensorSpec("features", "FP32", (-1, 4)),
        TensorSpec("mask", "BOOL", (-1, 4)),
        TensorSpec("ids", "INT64", (-1, -1)),
    ),
    outputs=(TensorSpec("scores", "FP32", (-1, 2)),),
)

TEXT = Signature(
    inputs=(TensorSpec("text", "BYTES", (-1,)),),
    outputs=(TensorSpec("embedding", "FP32", (-1, 8)),),
)

FIXED = Signature(
    inputs=(TensorSpec("image", "UINT8", (3, 2, 2)),),
    outputs=(TensorSpec("label", "INT64", (1,)),),
)


def test_generated_warmup_is_one_row_of_zeros_with_dynamic_dims_set_to_one() -> None:
    arrays = generated_request(TABULAR)

    assert set(arrays) == {"features", "mask", "ids"}
    assert arrays["features"].shape == (1, 4) and arrays["features"].dtype == np.float32
    assert arrays["mask"].shape == (1, 4) and arrays["mask"].dtype == np.bool_
    assert arrays["ids"].shape == (1, 1) and arrays["ids"].dtype == np.int64
    for array in arrays.values():
        assert not array.any()


def test_generated_warmup_for_text_is_a_short_text() -> None:
    arrays = generated_request(TEXT)
    assert arrays["text"].shape == (1,)
    assert arrays["text"].dtype == object
    (text,) = arrays["text"].tolist()
    assert isinstance(text, bytes) and text


def test_generated_warmup_keeps_fixed_shapes() -> None:
    arrays = generated_request(FIXED)
    assert arrays["image"].shape == (3, 2, 2) and arrays["image"].dtype == np.uint8


@pytest.mark.parametrize("signature", [TABULAR, TEXT, FIXED], ids=["tabular", "text", "fixed"])
def test_generated_warmup_passes_the_models_own_validation(signature: Signature) -> None:
    arrays = generated_request(signature)
    tensors = [
        InputTensor(spec.name, spec.datatype, arrays[spec.name].shape, arrays[spec.name])
        for spec in signature.inputs
    ]
    assert set(validate_inputs(signature, tensors, "m")) == set(arrays)


def test_no_configured_warmup_means_one_generated_request() -> None:
    requests = warmup_requests(TEXT, [], "enc")
    assert len(requests) == 1
    assert requests[0]["text"].shape == (1,)


def test_configured_warmup_requests_are_decoded_and_validated() -> None:
    configured = [
        {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["hi", "yo"]}]},
        {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["x"]}]},
    ]
    requests = warmup_requests(TEXT, configured, "enc")
    assert [r["text"].tolist() for r in requests] == [[b"hi", b"yo"], [b"x"]]


def test_configured_warmup_that_does_not_fit_the_signature_is_rejected() -> None:
    configured = [{"inputs": [{"name": "text", "datatype": "FP32", "shape": [1], "data": [0.0]}]}]
    with pytest.raises(InvalidInput, match="'text'"):
        warmup_requests(TEXT, configured, "enc")
