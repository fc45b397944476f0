"""The one place where domain errors become HTTP status codes and ``{"error": …}`` bodies."""

from __future__ import annotations

import math

import orjson

from modelport.errors import (
    ArtifactError,
    Conflict,
    DeadlineExceeded,
    Forbidden,
    HeadersTooLarge,
    InferenceFailed,
    InvalidInput,
    ModelportError,
    NotFound,
    PayloadTooLarge,
    TooManyRequests,
    Unauthenticated,
    Unavailable,
)

_STATUS: tuple[tuple[type[ModelportError], int], ...] = (
    (PayloadTooLarge, 413),
    (HeadersTooLarge, 431),
    (InvalidInput, 400),
    (Unauthenticated, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (TooManyRequests, 429),
    (Unavailable, 503),
    (DeadlineExceeded, 504),
    # Triton answers a failed load with 400 and the reason; OIP clients expect that.
    (ArtifactError, 400),
    (InferenceFailed, 500),
)


def status_for(exc: ModelportError) -> int:
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})


def _seconds(value: float) -> bytes:
    """A header's whole seconds: at least 1, at most a day, whatever the caller computed."""
    if not math.isfinite(value):
        value = 86_400.0
    return str(max(1, min(86_400, math.ceil(value)))).encode()


def error_headers(exc: ModelportError) -> list[tuple[bytes, bytes]]:
    if isinstance(exc, Unavailable):
        return [(b"retry-after", _seconds(exc.retry_after_s))]
    if isinstance(exc, TooManyRequests):
        return [
            (b"retry-after", _seconds(exc.retry_after_s)),
            (b"ratelimit-limit", str(exc.limit).encode()),
            (b"ratelimit-remaining", str(exc.remaining).encode()),
            (b"ratelimit-reset", _seconds(exc.reset_s)),
        ]
    if isinstance(exc, Unauthenticated):
        return [(b"www-authenticate", b'Bearer realm="modelport"')]
    return []
