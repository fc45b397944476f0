"""The one place where errors become HTTP status codes and ``{"error": …}`` bodies.

``error_response`` builds every error answer the server sends, on every route: the front door,
the infer fast path and FastAPI's exception handlers all call it. Two errors belong to HTTP
itself and live here rather than in ``modelport.errors``: ``EndpointNotFound`` and
``MethodNotAllowed``.
"""

from __future__ import annotations

import math

import orjson

from modelport.errors import (
    ArtifactError,
    Conflict,
    DeadlineExceeded,
    Forbidden,
    HeadersTooLarge,
    IdempotencyKeyReused,
    InferenceFailed,
    InvalidInput,
    ModelportError,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    TooManyRequests,
    Unauthenticated,
    Unavailable,
)


class EndpointNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("no such endpoint; see /docs for the API")


class MethodNotAllowed(ModelportError):
    def __init__(self, method: str, allowed: list[str]) -> None:
        super().__init__(f"method {method} is not allowed here; use {', '.join(allowed)}")
        self.allowed = allowed


#: The answer to an error nobody foresaw; the details are in the log under the request id.
INTERNAL_ERROR = "internal error; the request id in X-Request-ID identifies it in the logs"

_STATUS: tuple[tuple[type[ModelportError], int], ...] = (
    (PayloadTooLarge, 413),
    (HeadersTooLarge, 431),
    (InvalidInput, 400),
    (Unauthenticated, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (MethodNotAllowed, 405),
    (Conflict, 409),
    (PreconditionFailed, 412),
    (IdempotencyKeyReused, 422),
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
    if isinstance(exc, MethodNotAllowed):
        return [(b"allow", ", ".join(exc.allowed).encode())]
    return []


def error_response(exc: BaseException) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, headers and JSON body of the answer to ``exc``: a domain error's own status and
    message, anything else a 500 that tells nothing but where to look."""
    if isinstance(exc, ModelportError):
        status, body, headers = status_for(exc), error_body(exc.message), error_headers(exc)
    else:
        status, body, headers = 500, error_body(INTERNAL_ERROR), []
    headers.append((b"content-type", b"application/json"))
    return status, headers, body
