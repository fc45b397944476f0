"""Prometheus metrics. Each app owns its own registry, so tests and embedded apps never clash."""

from __future__ import annotations

from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from modelport.observability.loop_metrics import (
    LoopCounter,
    LoopCounterFamily,
    LoopHistogramFamily,
    LoopMetricsCollector,
)

LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
FRESHNESS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class QueueLike(Protocol):
    @property
    def queued_rows(self) -> int: ...


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ("tenant", "model", "version")
        loop = LoopMetricsCollector()
        self.requests = LoopCounterFamily(
            "modelport_inference_requests",
            "Inference requests by model, version and outcome.",
            (*labels, "outcome"),
        )
        self.request_seconds = LoopHistogramFamily(
            "modelport_inference_request_seconds",
            "Server-side end-to-end latency of inference requests (parse to response).",
            labels,
            LATENCY_BUCKETS,
        )
        self.queue_wait_seconds = LoopHistogramFamily(
            "modelport_queue_wait_seconds",
            "Time a request waited in its version's batch queue.",
            labels,
            LATENCY_BUCKETS,
        )
        self.compute_seconds = LoopHistogramFamily(
            "modelport_compute_seconds", "Runtime time per batch.", labels, LATENCY_BUCKETS
        )
        self.batch_size = LoopHistogramFamily(
            "modelport_batch_size", "Rows per runtime call.", labels, BATCH_BUCKETS
        )
        self.batches = LoopCounterFamily(
            "modelport_batches", "Runtime calls by outcome.", (*labels, "outcome")
        )
        self.shadow_requests = LoopCounterFamily(
            "modelport_shadow_requests",
            "Mirrored requests by shadow version and outcome (ok, error, dropped).",
            (*labels, "outcome"),
        )
        self.request_plans = LoopCounterFamily(
            "modelport_request_plan",
            "Requests by how they were decoded: fast (the version's request plan took the JSON "
            "document straight into the batcher's arrays) or general (the full decoder and "
            "signature validation).",
            (*labels, "path"),
        )
        self.fallbacks = LoopCounterFamily(
            "modelport_fallbacks",
            "Requests retried once on the fallback version, by the version that failed them.",
            labels,
        )
        self.cache_requests = LoopCounterFamily(
            "modelport_cache_requests",
            "Requests to cache-enabled versions by where the answer came from: hit_memory, "
            "hit_redis, coalesced (awaited an identical request's computation) or miss.",
            ("tenant", "model", "result"),
        )
        self.cache_evictions = LoopCounterFamily(
            "modelport_cache_evictions",
            "Entries pushed out of the in-process response cache to make room.",
            ("tenant",),
        )
        self.cache_errors = LoopCounterFamily(
            "modelport_cache_errors",
            "Failed response cache commands (each skips the tier for a back-off) and "
            "unreadable entries, by tier.",
            ("tier",),
        )
        for family in (
            self.cache_requests,
            self.cache_evictions,
            self.cache_errors,
            self.shadow_requests,
            self.fallbacks,
            self.request_plans,
            self.requests,
            self.request_seconds,
            self.queue_wait_seconds,
            self.compute_seconds,
            self.batch_size,
            self.batches,
        ):
            loop.add(family)
        self.registry.register(loop)
        self.queue_depth = Gauge(
            "modelport_queue_depth_rows",
            "Rows waiting in a version's batch queue.",
            labels,
            registry=self.registry,
        )
        self.version_ready = Gauge(
            "modelport_model_version_ready",
            "1 while a version is loaded, warmed and serving; 0 otherwise.",
            labels,
            registry=self.registry,
        )
        # Incremented from worker threads (the feature join runs there): a thread-safe counter.
        self.feature_store_errors = Counter(
            "modelport_feature_store_errors",
            "Batches of feature-joined models that found the online store unreachable (served "
            "with defaults, or refused with on_missing: reject).",
            ("tenant",),
            registry=self.registry,
        )
        self.release_generation = Gauge(
            "modelport_release_generation",
            "Generation of the release state (aliases, routing, rollouts) this replica applied; "
            "replicas that agree serve the same routing.",
            registry=self.registry,
        )
        self.rollout_guard_leader = Gauge(
            "modelport_rollout_guard_leader",
            "1 while this replica holds the rollout guard's lease.",
            registry=self.registry,
        )
        self.cache_bytes = Gauge(
            "modelport_cache_bytes",
            "Bytes the in-process response cache holds, by tenant.",
            ("tenant",),
            registry=self.registry,
        )
        self.loaded_versions = Gauge(
            "modelport_loaded_model_versions",
            "Model versions currently loaded and READY.",
            registry=self.registry,
        )
        # The stream consumers (``workers``): plain prometheus-client families, off the
        # request path.
        stream_labels = ("topic", "group")
        self.stream_lag = Gauge(
            "modelport_stream_lag",
            "Messages of a topic a consumer group has not acknowledged yet (pending or unread).",
            stream_labels,
            registry=self.registry,
        )
        self.stream_processed = Counter(
            "modelport_stream_processed",
            "Messages a consumer group applied and acknowledged.",
            stream_labels,
            registry=self.registry,
        )
        self.stream_retries = Counter(
            "modelport_stream_retries",
            "Failed consumer tries that were tried again (a failed batch, then each of its "
            "messages alone, with backoff).",
            stream_labels,
            registry=self.registry,
        )
        self.stream_dead_letters = Counter(
            "modelport_stream_dead_letters",
            "Messages moved to their group's dead letters after their last attempt failed.",
            stream_labels,
            registry=self.registry,
        )
        self.stream_freshness_seconds = Histogram(
            "modelport_stream_freshness_seconds",
            "From an event's acceptance (or a message's publication) to its effect applied by "
            "the consumer group.",
            stream_labels,
            buckets=FRESHNESS_BUCKETS,
            registry=self.registry,
        )

    def for_version(self, tenant: str, model: str, version: str) -> VersionMetrics:
        return VersionMetrics(self, (tenant, model, version))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class VersionMetrics:
    """Label children bound once per version: the hot path does no label lookups.

    Every method here is called on the event loop thread only."""

    __slots__ = (
        "_batch_err",
        "_batch_ok",
        "_batch_size",
        "_compute",
        "_depth",
        "_latency",
        "_outcomes",
        "_parent",
        "_plan_fast",
        "_plan_general",
        "_wait",
        "labels",
    )

    def __init__(self, metrics: Metrics, labels: tuple[str, str, str]) -> None:
        self._parent = metrics
        self.labels = labels
        self._latency = metrics.request_seconds.labels(*labels)
        self._wait = metrics.queue_wait_seconds.labels(*labels)
        self._compute = metrics.compute_seconds.labels(*labels)
        self._batch_size = metrics.batch_size.labels(*labels)
        self._batch_ok = metrics.batches.labels(*labels, "ok")
        self._batch_err = metrics.batches.labels(*labels, "error")
        self._depth = metrics.queue_depth.labels(*labels)
        self._plan_fast = metrics.request_plans.labels(*labels, "fast")
        self._plan_general = metrics.request_plans.labels(*labels, "general")
        self._outcomes: dict[str, LoopCounter] = {}

    def request(self, outcome: str, seconds: float) -> None:
        counter = self._outcomes.get(outcome)
        if counter is None:
            counter = self._outcomes[outcome] = self._parent.requests.labels(*self.labels, outcome)
        counter.inc()
        self._latency.observe(seconds)

    def fast_plan(self) -> None:
        """A request the version's request plan decoded (``serving.request_plan``)."""
        self._plan_fast.inc()

    def general_path(self) -> None:
        """A request the general decoder and validation took."""
        self._plan_general.inc()

    def fallback(self) -> None:
        """A request this version failed was retried on the fallback version."""
        self._parent.fallbacks.labels(*self.labels).inc()

    def watch_queue(self, queue: QueueLike) -> None:
        """Report the queue's depth when scraped: costs nothing per request."""
        self._depth.set_function(lambda: queue.queued_rows)

    def unwatch_queue(self) -> None:
        self._depth.set_function(lambda: 0)

    # BatchObserver

    def queue_wait(self, seconds: float) -> None:
        self._wait.observe(seconds)

    def batch(self, rows: int, compute_seconds: float, ok: bool) -> None:
        self._compute.observe(compute_seconds)
        self._batch_size.observe(rows)
        (self._batch_ok if ok else self._batch_err).inc()
