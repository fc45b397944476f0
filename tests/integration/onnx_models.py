"""Tiny ONNX graphs built with ``onnx.helper`` for the integration tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: Every Open Inference Protocol datatype and the ONNX element type that carries it.
ONNX_TYPES: dict[str, int] = {
    "BOOL": TensorProto.BOOL,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
}

Dims = Sequence[int | str]


def _save(graph: onnx.GraphProto, path: Path, *, check: bool = True) -> Path:
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="modelport-tests"
    )
    model.ir_version = 8
    if check:
        onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def identity_model(path: Path, datatype: str, dims: Dims = ("batch", 3)) -> Path:
    """``x`` -> ``y`` unchanged, for one OIP datatype."""
    elem = ONNX_TYPES[datatype]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        f"identity_{datatype.lower()}",
        [helper.make_tensor_value_info("x", elem, list(dims))],
        [helper.make_tensor_value_info("y", elem, list(dims))],
    )
    return _save(graph, path)


def scale_model(path: Path, factor: float, width: int = 4) -> Path:
    """FP32 ``x [batch, width]`` -> ``y = x * factor``."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "factor"], ["y"])],
        "scale",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        initializer=[numpy_helper.from_array(np.array([factor], dtype=np.float32), "factor")],
    )
    return _save(graph, path)


def multi_output_model(path: Path) -> Path:
    """FP32 ``x [batch, 4]`` -> ``doubled`` (x + x), ``negated`` (-x), ``total`` (row sums)."""
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["x", "x"], ["doubled"]),
            helper.make_node("Neg", ["x"], ["negated"]),
            helper.make_node("ReduceSum", ["x", "axes"], ["total"], keepdims=1),
        ],
        "multi",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [
            helper.make_tensor_value_info("doubled", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("negated", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("total", TensorProto.FLOAT, ["batch", 1]),
        ],
        initializer=[numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")],
    )
    return _save(graph, path)


def unloadable_model(path: Path) -> Path:
    """A graph whose signature reads fine but which onnxruntime refuses to load (unknown op)."""
    graph = helper.make_graph(
        [helper.make_node("NoSuchOperator", ["x"], ["y"], domain="ai.modelport.missing")],
        "unloadable",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[
            helper.make_opsetid("", 17),
            helper.make_opsetid("ai.modelport.missing", 1),
        ],
    )
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def lookup_model(path: Path, factor: float, size: int = 16, width: int = 4) -> Path:
    """FP32 ``x [batch, width]`` -> ``y = x * factor`` for whole numbers ``0 <= x < size``,
    through a lookup table (Gather): any other ``x`` makes onnxruntime fail the run, so the
    version loads and warms fine (warmup sends zeros) but errors at inference time."""
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["x"], ["index"], to=TensorProto.INT64),
            helper.make_node("Gather", ["table", "index"], ["y"], axis=0),
        ],
        "lookup",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        initializer=[numpy_helper.from_array(np.arange(size, dtype=np.float32) * factor, "table")],
    )
    return _save(graph, path)


def flaky_scale_model(path: Path, factor: float, threshold: float = 0.5, width: int = 4) -> Path:
    """Like :func:`scale_model`, but onnxruntime fails the run when any row's first value
    exceeds ``threshold``: a Gather on a one-element table whose index becomes 5 for such rows
    (out of range). Warmup (zeros) passes; the failure happens only at inference time."""
    graph = helper.make_graph(
        [
            helper.make_node("Slice", ["x", "zero", "one", "one"], ["first"]),
            helper.make_node("Greater", ["first", "threshold"], ["over"]),
            helper.make_node("Cast", ["over"], ["over_int"], to=TensorProto.INT64),
            helper.make_node("Mul", ["over_int", "far"], ["index"]),
            helper.make_node("Gather", ["gate_table", "index"], ["gate"], axis=0),
            helper.make_node("Mul", ["x", "gate"], ["gated"]),
            helper.make_node("Mul", ["gated", "factor"], ["y"]),
        ],
        "flaky_scale",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        initializer=[
            numpy_helper.from_array(np.array([0], dtype=np.int64), "zero"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "one"),
            numpy_helper.from_array(np.array([threshold], dtype=np.float32), "threshold"),
            numpy_helper.from_array(np.array([5], dtype=np.int64), "far"),
            numpy_helper.from_array(np.array([1.0], dtype=np.float32), "gate_table"),
            numpy_helper.from_array(np.array([factor], dtype=np.float32), "factor"),
        ],
    )
    return _save(graph, path)


def slow_scale_model(
    path: Path, factor: float, iterations: int = 150, width: int = 4, size: int = 256
) -> Path:
    """Like :func:`scale_model`, but each run first burns CPU in an ONNX Loop of
    ``iterations`` ``[size, size] x [size, size]`` MatMuls (about 0.3 ms each at size 256 on
    one thread). The loop's result is added times zero, so it cannot be pruned yet leaves
    ``y`` exact."""
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("MatMul", ["state_in", "weights"], ["product"]),
            helper.make_node("Tanh", ["product"], ["state_out"]),
        ],
        "burn",
        [
            helper.make_tensor_value_info("iteration", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("state_in", TensorProto.FLOAT, [size, size]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("state_out", TensorProto.FLOAT, [size, size]),
        ],
    )
    weights = np.random.default_rng(0).standard_normal((size, size)) / np.sqrt(size)
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["x"], ["mean"], keepdims=0),
            helper.make_node("Expand", ["mean", "state_shape"], ["state"]),
            helper.make_node("Loop", ["trips", "keep_going", "state"], ["burnt"], body=body),
            helper.make_node("ReduceSum", ["burnt"], ["total"], keepdims=0),
            helper.make_node("Mul", ["total", "nothing"], ["naught"]),
            helper.make_node("Mul", ["x", "factor"], ["scaled"]),
            helper.make_node("Add", ["scaled", "naught"], ["y"]),
        ],
        "slow_scale",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        initializer=[
            numpy_helper.from_array(weights.astype(np.float32), "weights"),
            numpy_helper.from_array(np.array([size, size], dtype=np.int64), "state_shape"),
            numpy_helper.from_array(np.array(iterations, dtype=np.int64), "trips"),
            numpy_helper.from_array(np.array(True), "keep_going"),
            numpy_helper.from_array(np.array(0.0, dtype=np.float32), "nothing"),
            numpy_helper.from_array(np.array([factor], dtype=np.float32), "factor"),
        ],
    )
    return _save(graph, path)
