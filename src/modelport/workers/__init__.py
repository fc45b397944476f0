"""Stream consumers and the runtime that drives them (``modelport worker``, or in-process).

A consumer (``workers.consumer.Consumer``) reads one topic as one group; ``WorkerRuntime``
runs any number of them over a stream. ``builtin_consumers`` names the ones modelport ships;
``load_consumers`` builds others from ``module:factory`` (``modelport worker --consumer``).
"""

from __future__ import annotations

import importlib
import os
import socket
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from modelport.settings import Settings
from modelport.stores.streams import Stream
from modelport.workers.consumer import Consumer
from modelport.workers.runtime import WorkerRuntime

if TYPE_CHECKING:
    from modelport.wiring import Services

__all__ = [
    "Consumer",
    "WorkerRuntime",
    "builtin_consumers",
    "in_process_runtime",
    "load_consumers",
    "runs_in_process",
    "worker_name",
    "worker_runtime",
]


def builtin_consumers(services: Services) -> list[Consumer]:
    """The consumers modelport ships, built on ``services``."""
    from modelport.workers.features import FeatureConsumer

    return [FeatureConsumer(services.event_features)]


def load_consumers(spec: str, services: Services) -> list[Consumer]:
    """The consumers ``module:factory`` makes: ``factory(services)`` returns one consumer or
    an iterable of them. This is how an application adds its own consumers to a worker."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"{spec!r}: give the factory as module:function")
    factory = getattr(importlib.import_module(module_name), attribute, None)
    if not callable(factory):
        raise ValueError(f"{spec!r}: {module_name} has no callable {attribute!r}")
    made = factory(services)
    consumers = list(made) if isinstance(made, Iterable) else [made]
    for consumer in consumers:
        if not all(hasattr(consumer, a) for a in ("topic", "group", "handle")):
            raise ValueError(f"{spec!r} made {consumer!r}, which is not a consumer")
    return consumers


def runs_in_process(settings: Settings) -> bool:
    """Whether the server runs the consumers itself (``MODELPORT_WORKERS_IN_PROCESS``)."""
    if settings.workers_in_process is not None:
        return settings.workers_in_process
    return settings.redis_url is None


def worker_name() -> str:
    """This process's consumer name in its groups: unique per process, readable by people."""
    return f"{socket.gethostname()}-{os.getpid()}"


def worker_runtime(
    stream: Stream, consumers: Sequence[Consumer], services: Services, name: str | None = None
) -> WorkerRuntime:
    """A runtime over ``stream`` configured by the settings (``MODELPORT_WORKER_*``)."""
    settings = services.settings
    return WorkerRuntime(
        stream,
        consumers,
        name=name or worker_name(),
        concurrency=settings.worker_concurrency,
        batch_size=settings.worker_batch_size,
        max_attempts=settings.worker_max_attempts,
        backoff_base_s=settings.worker_backoff_base_s,
        backoff_max_s=settings.worker_backoff_max_s,
        claim_idle_s=settings.worker_claim_idle_s,
        metrics=services.metrics,
    )


def in_process_runtime(services: Services) -> WorkerRuntime | None:
    """The runtime a server runs itself (the embedded default), or None where
    ``modelport worker`` processes run the consumers (``MODELPORT_WORKERS_IN_PROCESS``)."""
    if not runs_in_process(services.settings):
        return None
    return worker_runtime(services.stream, builtin_consumers(services), services)
