"""Per-version serving configuration, stored with the version in the registry."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

RuntimeKind = Literal["onnx", "text-embedding"]


class BatchingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(default=64, ge=0)
    """Most rows in one runtime call; 0 runs every request on its own."""
    max_queue_delay_ms: float = Field(default=2.0, ge=0)
    """Longest a request waits for others to join its batch while a worker is free."""
    preferred_batch_sizes: list[int] = Field(default_factory=list)
    """Batch sizes the runtime is fastest at; a batch is cut at the largest one available."""
    max_queue_size: int = Field(default=1024, gt=0)
    """Rows allowed to wait; beyond it requests are refused with 503 and Retry-After."""

    @model_validator(mode="after")
    def _preferred_within_max(self) -> BatchingConfig:
        if any(
            p <= 0 or (self.max_batch_size and p > self.max_batch_size)
            for p in self.preferred_batch_sizes
        ):
            raise ValueError("preferred_batch_sizes must be between 1 and max_batch_size")
        self.preferred_batch_sizes = sorted(set(self.preferred_batch_sizes))
        return self


class RuntimeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: RuntimeKind = "onnx"
    """``onnx`` serves the graph as is; ``text-embedding`` adds tokenisation before and mean
    pooling with L2 normalisation after a transformer encoder graph."""
    intra_op_threads: int = Field(default=1, ge=0)
    """Threads onnxruntime uses inside one operator (0: one per core)."""
    inter_op_threads: int = Field(default=1, ge=0)
    """Threads onnxruntime uses to run independent operators in parallel."""
    instances: int = Field(default=1, ge=1, le=16)
    """Batches of this version computed at the same time."""
    max_sequence_length: int = Field(default=256, ge=8, le=8192)
    """text-embedding only: tokens kept per text."""


class VersionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    warmup: list[dict[str, Any]] = Field(default_factory=list)
    """Warmup requests (OIP ``inputs`` lists) run before the version is READY. When empty, one
    request of a single row made of zeros (or short texts) is generated from the signature."""
