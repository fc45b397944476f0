"""CORS for browser callers, one policy for every route (the infer fast path included).

Off unless ``MODELPORT_CORS_ORIGINS`` lists origins. A listed origin gets
``Access-Control-Allow-Origin`` on every answer and its preflight (``OPTIONS`` with
``Access-Control-Request-Method``) answered by the edge without a key; any other origin gets
neither, and the browser blocks the call.
"""

from __future__ import annotations

ALLOWED_METHODS = b"GET, HEAD, POST, PUT, DELETE"
ALLOWED_HEADERS = (
    b"Authorization, Content-Type, Content-Encoding, Inference-Header-Content-Length, "
    b"Idempotency-Key, If-Match, If-None-Match, X-Model-Alias, X-Routing-Key, X-Request-ID"
)
EXPOSED_HEADERS = (
    b"X-Request-ID, X-Model-Version, X-Cache, Inference-Header-Content-Length, Retry-After, "
    b"RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, ETag"
)
#: How long a browser may cache a preflight answer.
PREFLIGHT_MAX_AGE = b"600"


class CorsPolicy:
    __slots__ = ("_origins",)

    def __init__(self, origins: list[str]) -> None:
        self._origins = frozenset(o.encode("latin-1") for o in origins)

    @property
    def enabled(self) -> bool:
        return bool(self._origins)

    def allows(self, origin: bytes) -> bool:
        return bool(origin) and origin in self._origins

    def response_headers(self, origin: bytes) -> list[tuple[bytes, bytes]]:
        """Headers an answer to ``origin`` carries (none for an origin not listed)."""
        if not origin or origin not in self._origins:
            return []
        return [
            (b"access-control-allow-origin", origin),
            (b"access-control-expose-headers", EXPOSED_HEADERS),
            (b"vary", b"Origin"),
        ]

    def preflight_headers(self, origin: bytes) -> list[tuple[bytes, bytes]]:
        if not self.allows(origin):
            return [(b"vary", b"Origin")]
        return [
            (b"access-control-allow-origin", origin),
            (b"access-control-allow-methods", ALLOWED_METHODS),
            (b"access-control-allow-headers", ALLOWED_HEADERS),
            (b"access-control-max-age", PREFLIGHT_MAX_AGE),
            (b"vary", b"Origin"),
        ]
