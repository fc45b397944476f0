"""Single HTTP requests to a benchmark's servers (setup, checks, admin calls), loopback only.

A request authenticates as the server's tenant, except ``/metrics`` which is for the platform
admin; ``key`` picks another key (one with the write scope for admin calls).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from harness.processes import HOST, Server


def request(
    server: Server,
    path: str,
    body: bytes | None = None,
    *,
    method: str | None = None,
    key: str | None = None,
    timeout: float = 10.0,
) -> tuple[int, bytes]:
    """(status, body) of one request; an HTTP error status is returned, not raised."""
    url = server.url(path)
    assert url.startswith(f"http://{HOST}:"), url  # loopback only
    if key is None:
        key = server.admin_key if path == "/metrics" else server.tenant_key
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=body, headers=headers, method=method)  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:  # noqa: S310
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


def call_json(
    server: Server, method: str, path: str, body: Any = None, *, key: str | None = None
) -> Any:
    """A JSON API call that must succeed; its decoded answer (``None`` for an empty one)."""
    data = None if body is None else json.dumps(body).encode()
    status, answer = request(server, path, data, method=method, key=key, timeout=60)
    if not 200 <= status < 300:
        raise RuntimeError(f"{method} {path} answered {status}: {answer[:500]!r}")
    return json.loads(answer or b"null")


def check_answer(server: Server, path: str, body: bytes, output: str) -> None:
    """The benchmark's body is answered 200 with output ``output``, before any load."""
    status, answer = request(server, path, body)
    if status != 200:
        raise RuntimeError(f"{server.name} answered {status} to the benchmark body: {answer!r}")
    outputs = {o["name"]: o for o in json.loads(answer)["outputs"]}
    if output not in outputs:
        raise RuntimeError(f"{server.name} answered without output {output!r}: {answer!r}")
