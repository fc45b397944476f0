"""Runtimes: what turns a batch of input arrays into output arrays.

A runtime is small and synchronous on purpose: ``predict`` runs in a worker thread (onnxruntime
and tokenizers release the GIL), never on the event loop.
"""

from __future__ import annotations

from pathlib import Path

from modelport.serving.config import RuntimeConfig
from modelport.serving.runtimes.base import Runtime
from modelport.serving.runtimes.onnx import OnnxRuntime, read_onnx_signature
from modelport.serving.runtimes.text_embedding import (
    TextEmbeddingRuntime,
    read_text_embedding_signature,
)
from modelport.serving.signature import Signature

__all__ = ["Runtime", "load_runtime", "read_signature"]


def load_runtime(path: Path, config: RuntimeConfig) -> Runtime:
    """Build the runtime a version's config asks for from its local artifact."""
    if config.kind == "text-embedding":
        return TextEmbeddingRuntime(path, config)
    return OnnxRuntime(path, config)


def read_signature(path: Path, config: RuntimeConfig) -> Signature:
    """The signature a version will serve, read from its artifact without running it."""
    if config.kind == "text-embedding":
        return read_text_embedding_signature(path)
    return read_onnx_signature(path)
