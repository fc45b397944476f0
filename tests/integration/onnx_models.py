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
