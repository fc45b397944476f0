"""What every answer carries, on every route: the request id, the security headers and CORS.

``add_common_headers`` adds them to each response the server sends (the front door wraps
FastAPI's ``send`` with it, the infer fast path appends it itself), and ``send_answer`` writes
an answer built by hand (errors, the infer path). ``log_access`` is the access log line.
"""

from __future__ import annotations

from typing import Any

import orjson
import structlog
from starlette.responses import JSONResponse
from starlette.types import Send

from modelport.api.cors import CorsPolicy

access_log = structlog.get_logger("modelport.http")

#: Sent with every response: no MIME sniffing, no framing, no referrer leaks.
SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)


#: On an answer given before the request's body was read: the rest of it is not taken in.
CLOSE = (b"connection", b"close")


class JsonResponse(JSONResponse):
    """JSON through orjson, for the responses routes build by hand (readiness)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def add_common_headers(
    headers: list[tuple[bytes, bytes]], request_id: bytes, cors: CorsPolicy, origin: bytes
) -> None:
    """Append what every answer carries to ``headers``."""
    headers.append((b"x-request-id", request_id))
    headers.extend(SECURITY_HEADERS)
    if origin:
        headers.extend(cors.response_headers(origin))


async def send_answer(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes, *, head: bool = False
) -> None:
    """Send a whole answer; ``head``: a HEAD request's, which carries the length but no body."""
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


def log_access(request_id: bytes, method: str, path: str, status: int) -> None:
    access_log.info(
        "request", request_id=request_id.decode(), method=method, path=path, status=status
    )
