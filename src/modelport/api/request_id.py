"""Request ids: the client's ``X-Request-ID`` when it is sane, else a fresh one.

A fresh id is a random per-process prefix and a counter (16 hex digits): unique across
replicas and restarts in practice, and cheaper than reading the OS's random source per request.
"""

from __future__ import annotations

import itertools
import os

_PREFIX = os.urandom(4).hex().encode()
_COUNTER = itertools.count(int.from_bytes(os.urandom(3), "big"))


def sane_request_id(value: bytes) -> bytes | None:
    """``value`` when it is 1-128 ASCII letters, digits and dashes; None otherwise."""
    if 0 < len(value) <= 128 and value.isascii() and value.replace(b"-", b"").isalnum():
        return bytes(value)
    return None


def new_request_id() -> bytes:
    return b"%s%08x" % (_PREFIX, next(_COUNTER) & 0xFFFFFFFF)
