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
    flush_when_idle: bool = True
    """Form the batch before the delay is up once no new request has arrived for two passes
    of the event loop (nothing more is coming, so waiting would only add latency and leave
    the server idle). False waits out ``max_queue_delay_ms`` whatever the traffic."""
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
    compute_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    """Longest one runtime call (one batch) may take. A batch past it fails with 504, and the
    version is marked unhealthy and reloaded with a fresh runtime (taken out of rotation if
    the reload fails): a hung runtime cannot keep callers waiting forever."""
    max_sequence_length: int = Field(default=256, ge=8, le=8192)
    """text-embedding only: tokens kept per text."""


class CacheConfig(BaseModel):
    """The response cache of a version: only for deterministic models."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    ttl_s: float = Field(default=300.0, gt=0, le=30 * 24 * 3600)
    """How long an answer may be served from the cache."""
    shared: bool = True
    """Also keep answers in Redis (when ``MODELPORT_REDIS_URL`` is set), shared by replicas;
    otherwise only in this process's memory."""


class FeatureInput(BaseModel):
    """One input tensor filled from the online store instead of the request."""

    model_config = ConfigDict(extra="forbid")

    features: list[str] = Field(min_length=1, max_length=4096)
    """``view:feature`` names, in the order of the tensor's last dimension."""


class FeaturesConfig(BaseModel):
    """Features joined into inference: which request inputs hold entity keys, and which
    feature values fill which model input."""

    model_config = ConfigDict(extra="forbid")

    entities: dict[str, str] = Field(min_length=1)
    """Entity name -> request input (BYTES ``[N]``) holding one key per row, e.g.
    ``{"user": "user_id", "item": "item_id"}``."""
    inputs: dict[str, FeatureInput] = Field(min_length=1)
    """Model input -> the features that fill it (FP32 ``[N, len(features)]``)."""
    on_missing: Literal["default", "reject"] = "default"
    """A missing or expired value: use the view's default, or refuse that request (400)."""
    log_sample_rate: float = Field(default=0.0, ge=0, le=1)
    """Share of served feature vectors written to the log (``feature_sample``) for
    training/serving skew checks."""
    view_versions: dict[str, int] = Field(default_factory=dict)
    """Filled at registration: the version of every view this model version was built on."""


class VersionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    features: FeaturesConfig | None = None
    warmup: list[dict[str, Any]] = Field(default_factory=list)
    """Warmup requests (OIP ``inputs`` lists) run before the version is READY. When empty, one
    request of a single row made of zeros (or short texts) is generated from the signature."""
