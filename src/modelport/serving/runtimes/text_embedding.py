"""Sentence embeddings: tokenisation, a transformer encoder graph, mean pooling, L2 norm.

The artifact is a folder with ``model.onnx`` (inputs ``input_ids``, ``attention_mask`` and
optionally ``token_type_ids``; output ``[batch, tokens, hidden]``) and ``tokenizer.json``.
Clients send UTF-8 texts as BYTES and get FP32 ``[N, hidden]`` unit vectors back; the whole
pipeline runs per batch inside the server.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from tokenizers import Tokenizer

from modelport.errors import ArtifactError
from modelport.serving.config import RuntimeConfig
from modelport.serving.runtimes.base import check_utf8
from modelport.serving.runtimes.onnx import create_session, run_options, stop_runs
from modelport.serving.signature import Signature, TensorSpec

MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
INPUT_NAME = "text"
OUTPUT_NAME = "embedding"


def _files(path: Path) -> tuple[Path, Path]:
    model, tokenizer = path / MODEL_FILE, path / TOKENIZER_FILE
    if not path.is_dir() or not model.is_file() or not tokenizer.is_file():
        raise ArtifactError(
            f"a text-embedding artifact is a folder holding {MODEL_FILE} and {TOKENIZER_FILE}"
        )
    return model, tokenizer


def read_text_embedding_signature(path: Path) -> Signature:
    model_path, _ = _files(path)
    graph = onnx.load(str(model_path), load_external_data=False).graph
    names = {v.name for v in graph.input}
    if not {"input_ids", "attention_mask"} <= names:
        raise ArtifactError("the encoder graph must take input_ids and attention_mask")
    dims = graph.output[0].type.tensor_type.shape.dim
    if len(dims) != 3 or not dims[2].HasField("dim_value"):
        raise ArtifactError("the encoder graph's first output must be [batch, tokens, hidden]")
    return Signature(
        inputs=(TensorSpec(INPUT_NAME, "BYTES", (-1,)),),
        outputs=(TensorSpec(OUTPUT_NAME, "FP32", (-1, dims[2].dim_value)),),
    )


class TextEmbeddingRuntime:
    def __init__(self, path: Path, config: RuntimeConfig) -> None:
        model_path, tokenizer_path = _files(path)
        self._signature = read_text_embedding_signature(path)
        self._session = create_session(model_path, config)
        self._feeds = {i.name for i in self._session.get_inputs()}
        self._run_options = run_options()
        self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self._tokenizer.enable_truncation(max_length=config.max_sequence_length)
        self._tokenizer.enable_padding()

    @property
    def signature(self) -> Signature:
        return self._signature

    def check(self, inputs: dict[str, np.ndarray]) -> None:
        check_utf8(INPUT_NAME, inputs[INPUT_NAME])

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [
            item.decode("utf-8") if isinstance(item, bytes) else str(item)
            for item in inputs[INPUT_NAME].reshape(-1)
        ]
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._feeds:
            feed["token_type_ids"] = np.array([e.type_ids for e in encodings], dtype=np.int64)
        (hidden,) = self._session.run(
            [self._session.get_outputs()[0].name], feed, self._run_options
        )
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return {OUTPUT_NAME: (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)}

    def close(self) -> None:
        stop_runs(self._run_options)
        del self._session
