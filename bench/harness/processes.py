"""Server processes a benchmark starts: free ports, logs, readiness, and a clean stop.

Every server binds 127.0.0.1 only, runs in its own session with its output in a log file of
the run's temporary folder, and gets SIGTERM if the benchmark dies without stopping it.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"


def die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the benchmark dies without cleaning up."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


#: ``preexec_fn`` for every child process (servers and wrk).
PREEXEC = die_with_parent if sys.platform == "linux" else None


@dataclass
class Server:
    """A started server. ``tenant_key`` and ``admin_key`` are what requests to it authenticate
    with (modelport runs with authentication on, as shipped; the floors ignore them)."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    tenant_key: str = ""
    admin_key: str = ""

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class Processes:
    """Every server this run starts; ``stop_all`` ends them (SIGTERM, then SIGKILL)."""

    def __init__(self) -> None:
        self.servers: list[Server] = []

    def start(
        self, name: str, argv: list[str], port: int, env: dict[str, str], cwd: Path, log_path: Path
    ) -> Server:
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=PREEXEC,
            )
        server = Server(name, proc, port, log_path)
        self.servers.append(server)
        return server

    def stop(self, server: Server) -> None:
        proc = server.proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if server in self.servers:
            self.servers.remove(server)

    def stop_all(self) -> None:
        for server in list(self.servers):
            with contextlib.suppress(Exception):
                self.stop(server)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_ready(server: Server, path: str, timeout: float) -> None:
    """Poll ``GET path`` until it answers 200; fail with the log's tail if the server exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(
                f"{server.name} exited with code {server.proc.returncode} while starting:\n"
                f"{server.log_tail()}"
            )
        with contextlib.suppress(OSError):
            request = urllib.request.Request(server.url(path))  # noqa: S310 - loopback only
            try:
                with urllib.request.urlopen(request, timeout=2.0) as response:  # noqa: S310
                    if response.status == 200:
                        return
            except urllib.error.HTTPError:
                pass
        time.sleep(0.2)
    raise RuntimeError(f"{server.name} not ready after {timeout:.0f} s:\n{server.log_tail()}")


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so that ``finally`` blocks stop the servers."""
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
