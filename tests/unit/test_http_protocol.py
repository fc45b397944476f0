"""modelport's HTTP/1.1 protocol (``cli/http_protocol.py``) as a client on a raw socket sees it:
keep-alive, pipelining, 100-continue, HTTP/1.0, chunked and HEAD answers, big streamed bodies,
bad bytes, failing apps, disconnects, idle and slow connections, graceful shutdown."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from modelport.cli.http_protocol import http_protocol

HOST = "127.0.0.1"


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Echoes what it was asked; the path picks a behaviour."""
    path = scope["path"]
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if path == "/fail-before":
        raise RuntimeError("the app failed before answering")
    headers = [(b"content-type", b"text/plain")]
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for piece in (b"one,", b"two,", b"three"):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/fail-after":
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("the app failed while answering")
    if path == "/wait-disconnect":
        message = await receive()
        DISCONNECTS.append(message["type"])
        return
    if path == "/slow":
        await asyncio.sleep(0.5)
    answer = (
        f"{scope['method']} {path} q={scope['query_string'].decode()} "
        f"v={scope['http_version']} body={len(body)}"
    ).encode()
    headers.append((b"content-length", str(len(answer)).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


DISCONNECTS: list[str] = []


class Running:
    def __init__(self, server: uvicorn.Server, port: int, thread: threading.Thread) -> None:
        self.server, self.port, self.thread = server, port, thread

    def connect(self) -> socket.socket:
        return socket.create_connection((HOST, self.port), timeout=5.0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@pytest.fixture
def running() -> Iterator[Running]:
    port = _free_port()
    config = uvicorn.Config(
        app,
        host=HOST,
        port=port,
        loop="uvloop",
        http=http_protocol(header_timeout_s=1.0, body_timeout_s=1.0),
        lifespan="off",
        log_config=None,
        timeout_keep_alive=1,
        interface="asgi3",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    yield Running(server, port, thread)
    server.should_exit = True
    thread.join(10)


def read_answer(sock: socket.socket) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """One answer: (status line, headers, body), de-chunked."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        assert more, f"connection closed mid-head: {data!r}"
        data += more
    head, _, rest = data.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = dict(line.split(b": ", 1) for line in lines)
    if headers.get(b"transfer-encoding") == b"chunked":
        while not rest.endswith(b"0\r\n\r\n"):
            rest += sock.recv(65536)
        body = b""
        while True:
            size, _, rest = rest.partition(b"\r\n")
            n = int(size, 16)
            if n == 0:
                break
            body, rest = body + rest[:n], rest[n + 2 :]
        return status, headers, body
    length = int(headers.get(b"content-length", b"0"))
    while len(rest) < length:
        rest += sock.recv(65536)
    PENDING[sock.fileno()] = rest[length:]
    return status, headers, rest[:length]


PENDING: dict[int, bytes] = {}


def closed(sock: socket.socket, within_s: float) -> bool:
    sock.settimeout(within_s)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_a_keep_alive_connection_serves_requests_one_after_another(running: Running) -> None:
    with running.connect() as sock:
        for i in range(3):
            sock.sendall(f"GET /echo?i={i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            status, headers, body = read_answer(sock)
            assert status == b"HTTP/1.1 200 OK"
            assert body == f"GET /echo q=i={i} v=1.1 body=0".encode()
            assert b"date" in headers
            assert b"connection" not in headers


def test_pipelined_requests_are_answered_in_order(running: Running) -> None:
    with running.connect() as sock:
        sock.sendall(
            b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
            b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        first = read_answer(sock)[2]
        rest = PENDING.pop(sock.fileno(), b"")
        assert first == b"POST /slow q= v=1.1 body=3"
        data = rest
        while not data.endswith(b"body=0"):
            data += sock.recv(65536)
        assert data.endswith(b"GET /second q= v=1.1 body=0")


def test_expect_100_continue_is_answered_before_the_body_is_sent(running: Running) -> None:
    with running.connect() as sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        assert sock.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        assert read_answer(sock)[2] == b"POST /echo q= v=1.1 body=5"


def test_http_1_0_gets_its_answer_and_the_connection_closes(running: Running) -> None:
    with running.connect() as sock:
        sock.sendall(b"GET /echo HTTP/1.0\r\n\r\n")
        _status, headers, body = read_answer(sock)
        assert body == b"GET /echo q= v=1.0 body=0"
        assert headers[b"connection"] == b"close"
        assert closed(sock, 2.0)


def test_an_answer_without_a_length_is_sent_chunked(running: Running) -> None:
    with running.connect() as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        _status, headers, body = read_answer(sock)
        assert headers[b"transfer-encoding"] == b"chunked"
        assert body == b"one,two,three"


def test_head_gets_the_length_without_the_body(running: Running) -> None:
    with running.connect() as sock:
        sock.sendall(
            b"HEAD /echo HTTP/1.1\r\nHost: x\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        data = b""
        while b"GET /after" not in data:
            data += sock.recv(65536)
        first, _, second = data.partition(b"\r\n\r\n")
        assert b"content-length: 26" in first
        assert second.startswith(b"HTTP/1.1 200 OK")  # no body between the two answers


def test_a_big_body_sent_in_pieces_arrives_whole(running: Running) -> None:
    size = 3 * 1024 * 1024
    with running.connect() as sock:
        sock.sendall(f"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode())
        for _ in range(size // 65536):
            sock.sendall(b"x" * 65536)
        assert read_answer(sock)[2] == f"POST /echo q= v=1.1 body={size}".encode()


def test_bytes_that_are_not_http_get_a_400_and_the_connection_closes(running: Running) -> None:
    with running.connect() as sock:
        sock.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
        status, _headers, body = read_answer(sock)
        assert status.startswith(b"HTTP/1.1 400")
        assert body == b"Invalid HTTP request received."
        assert closed(sock, 2.0)


def test_a_path_that_is_not_ascii_gets_a_400_saying_so(running: Running) -> None:
    with running.connect() as sock:
        sock.sendall("GET /caf\u00e9 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        status, _, body = read_answer(sock)
        assert status.startswith(b"HTTP/1.1 400")
        assert b"percent-encode" in body or body == b"Invalid HTTP request received."


def test_percent_encoded_paths_reach_the_app_decoded(running: Running) -> None:
    with running.connect() as sock:
        sock.sendall(b"GET /caf%C3%A9 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_answer(sock)[2] == "GET /caf\u00e9 q= v=1.1 body=0".encode()


def test_an_app_that_fails_before_answering_gives_a_500(running: Running) -> None:
    with running.connect() as sock:
        sock.sendall(b"GET /fail-before HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _headers, body = read_answer(sock)
        assert status == b"HTTP/1.1 500 Internal Server Error"
        assert body == b"Internal Server Error"


def test_an_app_that_fails_while_answering_closes_the_connection(running: Running) -> None:
    with running.connect() as sock:
        sock.sendall(b"GET /fail-after HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        sock.settimeout(5.0)
        while True:
            more = sock.recv(65536)
            if not more:
                break
            data += more
        assert data.startswith(b"HTTP/1.1 200 OK")
        assert not data.endswith(b"0\r\n\r\n")  # the answer was not completed


def test_the_app_sees_a_disconnect_when_the_client_leaves(running: Running) -> None:
    DISCONNECTS.clear()
    with running.connect() as sock:
        sock.sendall(b"GET /wait-disconnect HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)
    deadline = time.monotonic() + 5
    while not DISCONNECTS and time.monotonic() < deadline:
        time.sleep(0.05)
    assert DISCONNECTS == ["http.disconnect"]


def test_an_idle_keep_alive_connection_is_closed(running: Running) -> None:
    with running.connect() as sock:
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        read_answer(sock)
        assert closed(sock, 4.0)  # timeout_keep_alive 1 s, checked each second


def test_a_half_sent_head_is_cut_off(running: Running) -> None:
    with running.connect() as sock:
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n")
        assert closed(sock, 4.0)


def test_a_stalled_body_is_cut_off(running: Running) -> None:
    with running.connect() as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        assert closed(sock, 4.0)


def test_shutdown_finishes_the_answer_in_progress(running: Running) -> None:
    with running.connect() as sock:
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.1)
        running.server.should_exit = True
        _status, _headers, body = read_answer(sock)
        assert body == b"GET /slow q= v=1.1 body=0"
        assert closed(sock, 5.0)
    running.thread.join(10)
    assert not running.thread.is_alive()
