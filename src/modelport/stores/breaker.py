"""A circuit breaker for a remote dependency (Redis): after a failure, skip it for a back-off
that doubles while probes keep failing, and let one caller at a time probe it.

Callers bracket each command with :meth:`Breaker.enter` and :meth:`Breaker.leave`. The closed
state costs one attribute read; the rest takes a lock, so worker threads (the feature join) and
the event loop (the response cache) can share the same class.
"""

from __future__ import annotations

import enum
import threading
import time


class Call(enum.Enum):
    SKIP = "skip"
    """The dependency is being left alone: do not call it."""
    CALL = "call"
    """Closed: call it."""
    PROBE = "probe"
    """Open, back-off over: this caller tries it; the others keep skipping."""


class Breaker:
    def __init__(self, backoff_min_s: float = 1.0, backoff_max_s: float = 10.0) -> None:
        self._min = backoff_min_s
        self._max = backoff_max_s
        self._backoff = backoff_min_s
        self._open_until = 0.0
        self._probing = False
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        """False while the dependency is being skipped."""
        if not self._open_until:
            return True
        with self._lock:
            return not self._probing and time.monotonic() >= self._open_until

    def enter(self) -> Call:
        if not self._open_until:
            return Call.CALL
        with self._lock:
            if self._probing or time.monotonic() < self._open_until:
                return Call.SKIP
            self._probing = True
            return Call.PROBE

    def leave(self, call: Call, ok: bool) -> bool:
        """End a call; True when it closed an open breaker (the dependency is back)."""
        if call is Call.CALL and (not ok or not self._open_until):
            return False
        with self._lock:
            if call is Call.PROBE:
                self._probing = False
            if ok and self._open_until:
                self._open_until = 0.0
                self._backoff = self._min
                return True
        return False

    def failed(self) -> float | None:
        """Record a failure; the back-off it starts when it opened the breaker (None when it
        was already open, e.g. a call in flight when the dependency went away)."""
        with self._lock:
            now = time.monotonic()
            if self._open_until > now:
                return None
            opened = not self._open_until
            backoff = self._backoff
            self._open_until = now + backoff
            self._backoff = min(backoff * 2, self._max)
            return backoff if opened else None
