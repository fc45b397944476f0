"""The servers a benchmark measures: modelport through its public CLI, and the two floors.

modelport starts as shipped, ``python -m modelport serve`` with default settings (metrics on,
logging as shipped, authentication on), on the registry the scenario set up in its folder.
The floors are bare ASGI apps on the same uvicorn/uvloop/httptools stack
(``bench/floor_app.py``, ``bench/batching_floor_app.py``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from pathlib import Path

from harness.processes import HOST, Processes, Server, free_port, wait_ready

BENCH = Path(__file__).resolve().parents[1]
REPO = BENCH.parent
FLOOR_APP = BENCH / "floor_app.py"
BATCHING_FLOOR_APP = BENCH / "batching_floor_app.py"

#: The platform admin key every modelport this benchmark process starts accepts (``/metrics``).
ADMIN_KEY = "mpadmin_" + secrets.token_urlsafe(32)


def base_env() -> dict[str, str]:
    """This process's environment without any ``MODELPORT_`` setting."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MODELPORT_")}


def modelport_env(workdir: Path, port: int, **settings: str) -> dict[str, str]:
    """The environment of a modelport on ``workdir``'s registry; ``settings`` adds
    ``MODELPORT_<NAME>`` variables (``redis_url="redis://..."``)."""
    env = base_env()
    env.update(
        MODELPORT_DATABASE_URL=f"sqlite+aiosqlite:///{workdir / 'modelport.db'}",
        MODELPORT_ARTIFACTS_URI=str(workdir / "artifacts"),
        MODELPORT_CACHE_DIR=str(workdir / "cache"),
        MODELPORT_HOST=HOST,
        MODELPORT_PORT=str(port),
        MODELPORT_ADMIN_KEY=ADMIN_KEY,
    )
    env.update({f"MODELPORT_{name.upper()}": value for name, value in settings.items()})
    return env


def start_modelport(
    procs: Processes,
    workdir: Path,
    *,
    tenant_key: str,
    ready_timeout: float = 120,
    name: str = "modelport",
    plain: bool = False,
    ready_path: str = "/v2/health/ready",
    source: Path | None = None,
    **settings: str,
) -> Server:
    """``python -m modelport serve`` on a free port; requests to it authenticate with
    ``tenant_key``. With ``plain``, the same sources without their compiled modules (what
    ``make pure`` or a machine without a C compiler runs); with ``source``, the modelport
    under that ``src`` folder (another checkout, to compare with)."""
    port = free_port()
    env = modelport_env(workdir, port, **settings)
    if source is not None:
        env["PYTHONPATH"] = str(source)
    if plain:
        copy = workdir / "plain-src"
        if not copy.exists():
            shutil.copytree(
                REPO / "src" / "modelport",
                copy / "modelport",
                ignore=shutil.ignore_patterns("*.so", "__pycache__"),
            )
        env["PYTHONPATH"] = str(copy)  # ahead of the editable install's src/
    server = procs.start(
        name,
        [sys.executable, "-m", "modelport", "serve"],
        port,
        env,
        workdir,
        workdir / f"{name}-{port}.log",
    )
    server.tenant_key, server.admin_key = tenant_key, ADMIN_KEY
    wait_ready(server, ready_path, ready_timeout)
    return server


def start_floor(procs: Processes, workdir: Path, *, tenant_key: str = "") -> Server:
    """The HTTP floor: reads the body, parses it, answers a constant OIP response.
    ``tenant_key`` is sent as modelport's is, so that the floor reads the same request."""
    return _start_app(procs, workdir, "floor", [str(FLOOR_APP)], tenant_key)


def start_batching_floor(
    procs: Processes, workdir: Path, model: Path, *, tenant_key: str = ""
) -> Server:
    """The floor plus the least a batching server does, on ``model`` (an ONNX file)."""
    argv = [str(BATCHING_FLOOR_APP), "--model", str(model)]
    return _start_app(procs, workdir, "batching", argv, tenant_key)


def _start_app(
    procs: Processes, workdir: Path, name: str, argv: list[str], tenant_key: str
) -> Server:
    port = free_port()
    server = procs.start(
        name,
        [sys.executable, *argv, "--port", str(port)],
        port,
        base_env(),
        workdir,
        workdir / f"{name}-{port}.log",
    )
    server.tenant_key = tenant_key
    wait_ready(server, "/", 30)
    return server
