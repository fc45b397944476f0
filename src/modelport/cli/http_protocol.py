"""The HTTP/1.1 server protocol ``modelport serve`` runs under uvicorn: httptools' parser, ASGI
3 towards the app, slow clients cut off, and compiled with the rest of the request path.

uvicorn's own httptools protocol is plain Python and, per request, builds an ``asyncio.Event``,
arms and cancels a keep-alive timer, checks every response header with two regular expressions
and writes the response head and its body in two ``write`` calls (two syscalls, two TCP
segments). On the inference benchmark that was about a third of the event loop's time, the
same on every route. This protocol does the same job in one compiled pass:

* **one write per answer**: the head is held until the first piece of the body and goes out
  with it (a streamed body goes out piece by piece after that);
* **no per-request timer or event**: one sweeper per event loop checks every connection's
  deadline once a second: a request's head within ``header_timeout_s`` of its first byte
  (or of connecting), its body within ``body_timeout_s`` of its head, the next request of an
  idle keep-alive connection within uvicorn's ``timeout_keep_alive``. A connection past its
  deadline is closed: the app, if it has the request, sees a disconnect and frees what the
  request held (its tenant's in-flight slot, its body budget);
* a waiter for the body only when the app asks for body that has not arrived;
* response headers checked in one pass (header names the process has seen before are not
  checked again; the values of one answer are checked with one search).

What it keeps from uvicorn's protocol: keep-alive and HTTP/1.0 rules, pipelined requests
answered in order, ``Expect: 100-continue``, flow control both ways (reading pauses while a
request's unread body passes 64 KiB or while the previous answer of a pipeline is pending;
``send`` waits while the client does not read), chunked answers when the app gives no
length, HEAD answers without a body, a 400 (and a closed connection) for bytes that are not
HTTP, a 500 when the app fails before answering, graceful shutdown through the server's
connection and task sets, and ``limit_concurrency``. It does not upgrade to WebSocket:
modelport serves none, and an upgrade request is answered as a plain request.
"""

from __future__ import annotations

import asyncio
import http
import logging
import re
import urllib.parse
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final, cast

import httptools
from uvicorn.config import Config
from uvicorn.server import ServerState

log = logging.getLogger("modelport.http")

ASGIApp = Callable[..., Awaitable[Any]]

SWEEP_INTERVAL_S: Final = 1.0
#: Unread request body above which reading pauses until the app takes it.
HIGH_WATER: Final = 65_536
#: At most this many distinct response header names are remembered as already checked.
CHECKED_NAMES_MAX: Final = 512

_BAD_NAME = re.compile(b'[\x00-\x1f\x7f()<>@,;:\\[\\]={} \t\\\\"]')
_BAD_VALUE = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")
_CHECKED_NAMES: set[bytes] = set()


def _status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase.encode()
    except ValueError:
        phrase = b""
    return b"HTTP/1.1 %d %s\r\n" % (status, phrase)


STATUS_LINES: Final = {status: _status_line(status) for status in range(100, 600)}

# Connection states: what a connection is waiting for, and so which deadline applies.
IDLE: Final = 0  # between requests: the next head (keep-alive timeout)
HEAD: Final = 1  # part of a head has arrived (header timeout)
BODY: Final = 2  # the head is in, the body is not (body timeout)
BUSY: Final = 3  # the request is in; the app is answering (no deadline)


class HttpConnection:
    """One client connection: parses its requests and runs each through the ASGI app."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        header_timeout_s: float = 10.0,
        body_timeout_s: float = 30.0,
    ) -> None:
        if not config.loaded:
            config.load()
        self.config = config
        self.app: ASGIApp = config.loaded_app
        self.loop: asyncio.AbstractEventLoop = _loop or asyncio.get_event_loop()
        self.server_state = server_state
        self.connections: set[Any] = server_state.connections
        self.tasks: set[asyncio.Task[None]] = server_state.tasks
        self.app_state = app_state
        self.root_path: str = config.root_path
        self.limit_concurrency: int | None = config.limit_concurrency
        self.keep_alive_s = float(config.timeout_keep_alive)
        self.header_timeout_s = header_timeout_s
        self.body_timeout_s = body_timeout_s
        self.asgi: dict[str, str] = {"version": config.asgi_version, "spec_version": "2.3"}
        self.parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
        self.transport: asyncio.Transport | None = None
        self.server: tuple[str, int] | None = None
        self.client: tuple[str, int] | None = None
        self.scheme = "http"
        self.read_paused = False
        self.write_paused = False
        self.writable: asyncio.Future[None] | None = None
        self.pipeline: deque[tuple[Exchange, ASGIApp]] = deque()
        self.exchange: Exchange | None = None
        # The request being parsed.
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.expect_continue = False
        # Deadlines (see the module's docstring).
        self.state = IDLE
        self.deadline = 0.0
        self.deadlines = _deadlines_of(self.loop)

    # -- asyncio protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.connections.add(self)
        # uvloop's transports do not derive from asyncio's; they have the same methods.
        self.transport = cast(asyncio.Transport, transport)
        self.server = _address(self.transport.get_extra_info("sockname"))
        self.client = _address(self.transport.get_extra_info("peername"))
        if self.transport.get_extra_info("sslcontext") is not None:
            self.scheme = "https"
        # A new connection owes its first head within the header timeout.
        self.state = HEAD
        self.deadline = self.loop.time() + self.header_timeout_s
        self.deadlines.watch(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.connections.discard(self)
        self.deadlines.forget(self)
        exchange = self.exchange
        if exchange is not None:
            if not exchange.response_complete:
                exchange.disconnected = True
            exchange.wake()
        for waiting, _ in self.pipeline:
            waiting.disconnected = True
        self.resume_writing()
        if exc is None and self.transport is not None:
            self.transport.close()
        self.parser = None

    def eof_received(self) -> None:
        pass

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        if self.write_paused:
            self.write_paused = False
            writable, self.writable = self.writable, None
            if writable is not None and not writable.done():
                writable.set_result(None)

    async def drain(self) -> None:
        """Wait until the client takes what was written (the transport's buffer drains)."""
        if self.writable is None:
            self.writable = self.loop.create_future()
        await self.writable

    def data_received(self, data: bytes) -> None:
        if self.state == IDLE:
            # The first bytes of a head: from now on the header timeout applies.
            self.state = HEAD
            self.deadline = self.loop.time() + self.header_timeout_s
        parser = self.parser
        if parser is None:
            return
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # No WebSocket here: the request was answered as a plain one; what follows the
            # upgrade request on this connection is not HTTP and is ignored.
            log.warning("http_upgrade_unsupported")
        except httptools.HttpParserError as exc:
            # A callback's own refusal arrives as the parser error's context.
            reason = exc.__context__
            if isinstance(reason, _BadRequest):
                self.refuse(str(reason))
            else:
                if reason is not None:
                    log.warning("http_request_unreadable", exc_info=reason)
                self.refuse("Invalid HTTP request received.")

    def refuse(self, message: str) -> None:
        """Answer 400 with ``message`` and close: the bytes were not a request we can read."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        body = message.encode("ascii", "replace")
        transport.write(
            b"".join(
                [
                    STATUS_LINES[400],
                    _default_block(self.server_state),
                    b"content-type: text/plain; charset=utf-8\r\ncontent-length: ",
                    str(len(body)).encode(),
                    b"\r\nconnection: close\r\n\r\n",
                    body,
                ]
            )
        )
        transport.close()

    # -- parser callbacks --------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.expect_continue = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        # llhttp keeps trailing whitespace, which RFC 9110 section 5.5 excludes from the value.
        value = value.rstrip(b" \t")
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        assert parser is not None  # noqa: S101 - called by it
        version = parser.get_http_version()
        path, raw_path, query = _split_url(self.url)
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": self.asgi,
            "http_version": version,
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,
            "method": parser.get_method().decode("ascii"),
            "root_path": self.root_path,
            "path": self.root_path + path if self.root_path else path,
            "raw_path": self.root_path.encode() + raw_path if self.root_path else raw_path,
            "query_string": query,
            "headers": self.headers,
            "state": self.app_state.copy(),
        }
        app = self.app
        limit = self.limit_concurrency
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
            log.warning("Exceeded concurrency limit.")
            app = _service_unavailable
        exchange = Exchange(
            self, scope, version != "1.0" and parser.should_keep_alive(), self.expect_continue
        )
        previous = self.exchange
        self.exchange = exchange
        self.state = BODY
        self.deadline = self.loop.time() + self.body_timeout_s
        if previous is None or previous.response_complete:
            self.start(exchange, app)
        else:
            # Pipelined: answered once the one before it is.
            self.pause_reading()
            self.pipeline.appendleft((exchange, app))

    def on_body(self, body: bytes) -> None:
        exchange = self.exchange
        if exchange is None or exchange.response_complete:
            return
        exchange.body.append(body)
        exchange.body_size += len(body)
        if exchange.body_size > HIGH_WATER:
            self.pause_reading()
        exchange.wake()

    def on_message_complete(self) -> None:
        exchange = self.exchange
        if self.state != IDLE:
            self.state = BUSY
            self.deadline = 0.0
        if exchange is None or exchange.response_complete:
            return
        exchange.more_body = False
        exchange.wake()

    # -- requests ----------------------------------------------------------------------------

    def start(self, exchange: Exchange, app: ASGIApp) -> None:
        task = self.loop.create_task(exchange.run(app))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def answered(self) -> None:
        """The current exchange's answer is complete: start the next one or wait for it."""
        self.server_state.total_requests += 1
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self.resume_reading()
        if self.pipeline:
            exchange, app = self.pipeline.pop()
            self.start(exchange, app)
        elif self.state == BUSY:
            self.state = IDLE
            self.deadline = self.loop.time() + self.keep_alive_s

    def pause_reading(self) -> None:
        if not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused and self.transport is not None:
            self.read_paused = False
            self.transport.resume_reading()

    def shutdown(self) -> None:
        """The server is stopping: close now if idle, else after the answer in progress."""
        exchange = self.exchange
        if exchange is None or exchange.response_complete:
            if self.transport is not None:
                self.transport.close()
        else:
            exchange.keep_alive = False

    def too_slow(self) -> None:
        """Past the deadline (slow head, slow body or idle keep-alive): close the connection.
        The app, if it has the request, sees a disconnect."""
        if self.state == IDLE:
            log.debug("http_keep_alive_expired")
        self.deadline = 0.0
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class Exchange:
    """One request and its answer: the ASGI ``receive`` and ``send`` of one call of the app."""

    def __init__(
        self,
        connection: HttpConnection,
        scope: dict[str, Any],
        keep_alive: bool,
        expect_continue: bool,
    ) -> None:
        self.connection = connection
        self.scope = scope
        self.keep_alive = keep_alive
        self.waiting_for_continue = expect_continue
        self.disconnected = False
        # The request body: pieces not yet given to the app.
        self.body: list[bytes] = []
        self.body_size = 0
        self.more_body = True
        self.last_given = False
        self.waiter: asyncio.Future[None] | None = None
        # The answer.
        self.response_started = False
        self.response_complete = False
        self.head = b""
        self.chunked = False
        self.expected_length = -1

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def run(self, app: ASGIApp) -> None:
        try:
            result: Any = await app(self.scope, self.receive, self.send)
        except Exception as exc:
            log.error("Exception in ASGI application", exc_info=exc)
            if not self.response_started:
                await self.send_500()
            else:
                self.close()
        except BaseException:  # cancelled: the server is stopping
            self.close()
            raise
        else:
            if result is not None:
                log.error("ASGI callable should return None, but returned '%s'.", result)
                self.close()
            elif not self.response_started and not self.disconnected:
                log.error("ASGI callable returned without starting response.")
                await self.send_500()
            elif not self.response_complete and not self.disconnected:
                log.error("ASGI callable returned without completing response.")
                self.close()

    def close(self) -> None:
        transport = self.connection.transport
        if transport is not None:
            transport.close()

    async def send_500(self) -> None:
        await self.send(
            {
                "type": "http.response.start",
                "status": 500,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", b"21"),
                    (b"connection", b"close"),
                ],
            }
        )
        await self.send({"type": "http.response.body", "body": b"Internal Server Error"})

    async def receive(self) -> dict[str, Any]:
        connection = self.connection
        transport = connection.transport
        if self.waiting_for_continue and transport is not None and not transport.is_closing():
            transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.waiting_for_continue = False
        if not self.disconnected and not self.response_complete:
            connection.resume_reading()
            if (not self.body and self.more_body) or self.last_given:
                # Nothing to give yet (or all was given: wait for the end of the exchange).
                waiter = self.waiter
                if waiter is None:
                    waiter = self.waiter = connection.loop.create_future()
                await waiter
        if self.disconnected or self.response_complete:
            return {"type": "http.disconnect"}
        pieces = self.body
        body = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        self.body = []
        self.body_size = 0
        if not self.more_body:
            self.last_given = True
        return {"type": "http.request", "body": body, "more_body": self.more_body}

    async def send(self, message: MutableMapping[str, Any]) -> None:
        connection = self.connection
        if connection.write_paused and not self.disconnected:
            await connection.drain()
        if self.disconnected:
            return
        transport = connection.transport
        assert transport is not None  # noqa: S101 - set before any request
        kind = message["type"]
        if not self.response_started:
            if kind != "http.response.start":
                raise RuntimeError(
                    f"Expected ASGI message 'http.response.start', but got '{kind}'."
                )
            self.response_started = True
            self.waiting_for_continue = False
            self.head = self.head_of(message["status"], message.get("headers", ()))
            return
        if self.response_complete:
            raise RuntimeError(
                f"Unexpected ASGI message '{kind}' sent, after response already completed."
            )
        if kind != "http.response.body":
            raise RuntimeError(f"Expected 'http.response.body', got '{kind}'.")
        body: bytes = message.get("body", b"")
        more_body: bool = message.get("more_body", False)
        if self.scope["method"] == "HEAD":
            out = b""
        elif self.chunked:
            out = b"%x\r\n%s\r\n" % (len(body), body) if body else b""
            if not more_body:
                out += b"0\r\n\r\n"
        else:
            if len(body) > self.expected_length:
                raise RuntimeError("Response content longer than Content-Length")
            self.expected_length -= len(body)
            out = body
        if self.head:
            out = self.head + out
            self.head = b""
        if out:
            transport.write(out)
        if not more_body:
            if self.expected_length > 0 and not self.chunked and self.scope["method"] != "HEAD":
                raise RuntimeError("Response content shorter than Content-Length")
            self.response_complete = True
            self.wake()
            if not self.keep_alive:
                transport.close()
            connection.answered()

    def head_of(self, status: int, headers: Any) -> bytes:
        """The status line and headers of the answer (date first), checked and encoded."""
        parts = [STATUS_LINES[status], _default_block(self.connection.server_state)]
        values = []
        close = False
        length = -1
        chunked = False
        for name, value in headers:
            if name not in _CHECKED_NAMES:
                if _BAD_NAME.search(name):
                    raise RuntimeError("Invalid HTTP header name.")
                name = name.lower()
                if len(_CHECKED_NAMES) < CHECKED_NAMES_MAX:
                    _CHECKED_NAMES.add(name)
            values.append(value)
            if name == b"content-length":
                if length < 0 and not chunked:
                    length = int(value.decode())
            elif name == b"transfer-encoding":
                if value.lower() == b"chunked":
                    chunked = True
            elif name == b"connection":
                if b"close" in [token.strip().lower() for token in value.split(b",")]:
                    close = True
            parts.append(name)
            parts.append(b": ")
            parts.append(value)
            parts.append(b"\r\n")
        if values and _BAD_VALUE.search(b"\t".join(values)):
            raise RuntimeError("Invalid HTTP header value.")
        if close:
            self.keep_alive = False
        elif not self.keep_alive:
            parts.append(b"connection: close\r\n")
        if chunked:
            self.chunked = True
        elif length >= 0:
            self.expected_length = length
        elif self.scope["method"] != "HEAD" and status not in (204, 304):
            # Neither a length nor chunked: send it chunked.
            self.chunked = True
            parts.append(b"transfer-encoding: chunked\r\n")
        else:
            self.expected_length = 0
        parts.append(b"\r\n")
        return b"".join(parts)


class _BadRequest(Exception):
    """A request head the parser accepted but the server cannot read (a non-ASCII path)."""


def _split_url(url: bytes) -> tuple[str, bytes, bytes]:
    """(path, raw path, query string) of a request target."""
    if url[:1] == b"/" and b"#" not in url:
        raw_path, _, query = url.partition(b"?")
    else:  # absolute form (a proxy's), or a fragment to drop
        try:
            parsed = httptools.parse_url(url)
        except httptools.HttpParserInvalidURLError:
            raise _BadRequest("Invalid HTTP request target.") from None
        raw_path, query = parsed.path or b"/", parsed.query or b""
    try:
        path = raw_path.decode("ascii")
    except UnicodeDecodeError:
        raise _BadRequest("The request target is not ASCII: percent-encode it.") from None
    if "%" in path:
        path = urllib.parse.unquote(path)
    return path, raw_path, query


def _address(value: object) -> tuple[str, int] | None:
    if isinstance(value, tuple) and len(value) >= 2:
        return str(value[0]), int(value[1])
    return None


async def _service_unavailable(
    scope: MutableMapping[str, Any],
    receive: Callable[[], Awaitable[dict[str, Any]]],
    send: Callable[[dict[str, Any]], Awaitable[None]],
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", b"19"),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"Service Unavailable"})


class _DefaultHeaders:
    """The server's default headers (its ``date``, refreshed each second by uvicorn), encoded
    once per change rather than once per answer."""

    def __init__(self) -> None:
        self.source: list[tuple[bytes, bytes]] | None = None
        self.block = b""


_defaults = _DefaultHeaders()


def _default_block(state: ServerState) -> bytes:
    headers = state.default_headers
    if headers is not _defaults.source:
        _defaults.block = b"".join(b"%s: %s\r\n" % (name, value) for name, value in headers)
        _defaults.source = headers
    return _defaults.block


class _Deadlines:
    """The connections of one event loop, their deadlines checked once a second."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.watched: set[HttpConnection] = set()
        self.timer: asyncio.TimerHandle | None = None

    def watch(self, connection: HttpConnection) -> None:
        self.watched.add(connection)
        if self.timer is None:
            self.timer = self.loop.call_later(SWEEP_INTERVAL_S, self.sweep)

    def forget(self, connection: HttpConnection) -> None:
        self.watched.discard(connection)

    def sweep(self) -> None:
        self.timer = None
        now = self.loop.time()
        for connection in list(self.watched):
            if connection.deadline and now > connection.deadline:
                connection.too_slow()
        if self.watched:
            self.timer = self.loop.call_later(SWEEP_INTERVAL_S, self.sweep)


_loop_deadlines: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Deadlines] = (
    weakref.WeakKeyDictionary()
)


def _deadlines_of(loop: asyncio.AbstractEventLoop) -> _Deadlines:
    deadlines = _loop_deadlines.get(loop)
    if deadlines is None:
        deadlines = _loop_deadlines[loop] = _Deadlines(loop)
    return deadlines


def http_protocol(header_timeout_s: float, body_timeout_s: float) -> type[asyncio.Protocol]:
    """What to pass as uvicorn's ``http=`` for these timeouts: a factory of ``HttpConnection``.
    (uvicorn's signature asks for a protocol class; it only ever calls it with these arguments.)"""

    def protocol(
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> HttpConnection:
        return HttpConnection(
            config, server_state, app_state, _loop, header_timeout_s, body_timeout_s
        )

    return cast("type[asyncio.Protocol]", protocol)
