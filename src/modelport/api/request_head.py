"""What the edge reads from a request's headers, in one pass, for every route.

The front door and the infer fast path both start here, so a header means the same thing
everywhere: the request id, the key, the body's size and encoding, the browser origin and the
two routing headers. A request the head already shows to be unacceptable (headers too large,
two ``Authorization`` headers, a ``Content-Length`` that is not a number) carries its problem
here and is refused before anything else runs.
"""

from __future__ import annotations

from modelport.api.request_id import new_request_id, sane_request_id
from modelport.errors import HeadersTooLarge, InvalidInput, ModelportError


class RequestHead:
    """One request's headers as the edge uses them."""

    __slots__ = (
        "alias",
        "authorization",
        "content_length",
        "encoding",
        "experiment_unit",
        "header_length",
        "origin",
        "problem",
        "request_id",
        "routing_key",
    )

    def __init__(self) -> None:
        self.request_id: bytes = b""
        self.authorization: str | None = None
        self.content_length: int | None = None
        """None without a Content-Length header (no body, or a chunked one)."""
        self.encoding: bytes = b""
        self.origin: bytes = b""
        self.alias: str | None = None
        self.routing_key: str | None = None
        self.experiment_unit: str | None = None
        """``X-Experiment-Unit``: the caller's unit (user, session or custom key value) for
        experiments covering the route."""
        self.header_length: int | None = None
        """``Inference-Header-Content-Length`` (the binary tensor extension); -1 if malformed."""
        self.problem: ModelportError | None = None
        """Why the request is refused before it is routed, if it is."""


def read_head(headers: list[tuple[bytes, bytes]], max_header_bytes: int) -> RequestHead:
    head = RequestHead()
    request_id: bytes | None = None
    size = 0
    authorizations = 0
    lengths = 0
    for key, value in headers:
        size += len(key) + len(value)
        if key == b"authorization":
            authorizations += 1
            head.authorization = value.decode("latin-1")
        elif key == b"content-length":
            lengths += 1
            head.content_length = int(value) if value.isdigit() else -1
        elif key == b"content-type" or key == b"host":
            pass
        elif key == b"x-request-id":
            request_id = sane_request_id(value)
        elif key == b"inference-header-content-length":
            head.header_length = int(value) if value.isdigit() else -1
        elif key == b"content-encoding":
            head.encoding = value.lower()
        elif key == b"origin":
            head.origin = value
        elif key == b"x-model-alias":
            head.alias = value.decode("latin-1") or None
        elif key == b"x-routing-key":
            head.routing_key = value.decode("latin-1")
        elif key == b"x-experiment-unit":
            head.experiment_unit = value.decode("latin-1") or None
    head.request_id = request_id if request_id is not None else new_request_id()
    if size > max_header_bytes:
        head.problem = HeadersTooLarge(
            f"request headers of {size} bytes exceed the limit of {max_header_bytes} bytes "
            "(MODELPORT_MAX_HEADER_BYTES)"
        )
    elif authorizations > 1:
        head.problem = InvalidInput(
            "the request has more than one Authorization header; send exactly one"
        )
    elif lengths > 1 or (head.content_length is not None and head.content_length < 0):
        head.problem = InvalidInput("send one Content-Length header with a whole number of bytes")
    return head
