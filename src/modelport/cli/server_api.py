"""The few calls the CLI makes to a running server (named in ``var/cli.json``).

Most commands work on the registry database directly, and every replica follows it. Two things
live in a server's memory and need it: the embedded online store's values, and whether a
version is loaded and serving. The standard library is enough for these calls: the CLI keeps
no HTTP client dependency.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from modelport.cli.config import CliConfig


class ServerUnreachable(Exception):
    """No server answered at the configured URL (not running, or another address)."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: Any


def call(
    config: CliConfig, method: str, path: str, body: Any = None, timeout_s: float = 30.0
) -> Answer:
    """One JSON request to the configured server with its key."""
    if config.server is None or not config.server.startswith(("http://", "https://")):
        raise ServerUnreachable("no server URL is configured")
    headers = {"Content-Type": "application/json"}
    key = config.key()
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
        config.server + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers=headers,
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            return Answer(response.status, _json(response.read()))
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, _json(exc.read()))
    except (urllib.error.URLError, OSError) as exc:
        raise ServerUnreachable(f"{config.server}: {exc}") from None


def wait_serving(config: CliConfig, model: str, version: str, timeout_s: float) -> bool:
    """Whether the server serves ``version`` of ``model`` (ready, and the model ready) within
    ``timeout_s``; raises ServerUnreachable when nothing answers."""
    deadline = time.monotonic() + timeout_s
    paths = (f"/v2/models/{model}/versions/{version}/ready", f"/v2/models/{model}/ready")
    while True:
        if all(call(config, "GET", p, timeout_s=5.0).status == 200 for p in paths):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode(errors="replace")
