"""The HTTP/1.1 protocol ``modelport serve`` runs: uvicorn's httptools protocol, with slow
clients cut off.

uvicorn closes an idle keep-alive connection, but waits forever for a request's headers or body
to finish arriving: a few hundred connections that send half a header each hold their sockets,
and a stalled body holds its tenant's in-flight slot. Here every connection has a deadline
while a request is arriving: its headers within ``header_timeout_s`` of its first byte (or of
connecting), its body within ``body_timeout_s`` of its headers. One timer per process checks
the deadlines each second, so a request costs no timer of its own, and the protocol is hooked
once per read (``data_received``), not in its per-request parser callbacks: those hooks cost
the inference benchmark 2.5 points of the floor. A connection past its deadline is closed:
the app sees a disconnect, and frees what the request held.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

SWEEP_INTERVAL_S = 1.0


class _Deadlines:
    """The connections of one event loop that are waiting for bytes, checked every second."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._watched: weakref.WeakSet[GuardedHttpProtocol] = weakref.WeakSet()
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, protocol: GuardedHttpProtocol) -> None:
        self._watched.add(protocol)
        if self._timer is None:
            self._timer = self._loop.call_later(SWEEP_INTERVAL_S, self._sweep)

    def forget(self, protocol: GuardedHttpProtocol) -> None:
        self._watched.discard(protocol)

    def _sweep(self) -> None:
        self._timer = None
        now = self._loop.time()
        for protocol in list(self._watched):
            if protocol.deadline and now > protocol.deadline:
                self._watched.discard(protocol)
                protocol.too_slow()
        if self._watched:
            self._timer = self._loop.call_later(SWEEP_INTERVAL_S, self._sweep)


_deadlines: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Deadlines] = (
    weakref.WeakKeyDictionary()
)


class GuardedHttpProtocol(HttpToolsProtocol):
    header_timeout_s = 10.0
    body_timeout_s = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deadline = 0.0
        """When the bytes being waited for must have arrived (loop time); 0: none awaited."""
        self._waiting: object = None
        """What the deadline is for: HEAD, or the request cycle whose body is awaited."""
        deadlines = _deadlines.get(self.loop)
        if deadlines is None:
            deadlines = _deadlines[self.loop] = _Deadlines(self.loop)
        self._deadlines = deadlines

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._waiting = HEAD
        self.deadline = self.loop.time() + self.header_timeout_s
        self._deadlines.watch(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.deadline = 0.0
        self._deadlines.forget(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # The one hook per request: after uvicorn has parsed what arrived, see what is still
        # awaited. A whole request in one read (the usual case) costs two attribute checks.
        super().data_received(data)
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            if self._waiting is not HEAD:  # the first bytes of a head, the rest still coming
                self._waiting = HEAD
                self.deadline = self.loop.time() + self.header_timeout_s
        elif cycle.more_body:
            if self._waiting is not cycle:  # the head is in, its body is not
                self._waiting = cycle
                self.deadline = self.loop.time() + self.body_timeout_s
        elif self._waiting is not None:
            self._waiting = None
            self.deadline = 0.0

    def too_slow(self) -> None:
        """The client did not send in time: close the connection (the app, if it has the
        request, sees a disconnect)."""
        self.deadline = 0.0
        if not self.transport.is_closing():
            self.transport.close()


#: What a connection waits for before any request of it has a head.
HEAD = object()


def guarded_protocol(header_timeout_s: float, body_timeout_s: float) -> type[GuardedHttpProtocol]:
    """The protocol class for a server with these timeouts."""
    return type(
        "ModelportHttpProtocol",
        (GuardedHttpProtocol,),
        {"header_timeout_s": header_timeout_s, "body_timeout_s": body_timeout_s},
    )
