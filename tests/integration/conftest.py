"""Real modelport servers for the integration tests.

Each server is ``python -m modelport serve`` in a subprocess, with its own temporary folder
(registry database, artifact store, cache, log file) and a free port. Models are registered
beforehand through the real registry service, or through ``modelport models push``. The registry
runs on SQLite, or on a fresh PostgreSQL database per server, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from modelport.demo.models import build_minilm, build_ranker, minilm_config, ranker_config
from modelport.serving.config import VersionConfig
from modelport.settings import Settings
from modelport.stores.registry import VersionRecord
from modelport.wiring import build_services
from required_services import service_missing

from .onnx_models import (
    ONNX_TYPES,
    identity_model,
    multi_output_model,
    scale_model,
    unloadable_model,
)

PYTHON = sys.executable
POSTGRES_URL = os.environ.get(
    "MODELPORT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
STARTUP_TIMEOUT_S = 90.0

#: The tenant that owns every model the tests push.
TENANT = "acme"

#: Registry backends the parametrised fixtures run on.
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


# --------------------------------------------------------------------------- servers


class KeyAuth(httpx.Auth):
    """The tenant's key on every request, the platform admin key on ``/metrics``; a request
    that sets its own Authorization header keeps it."""

    def __init__(self, tenant_key: str, admin_key: str) -> None:
        self.tenant_key = tenant_key
        self.admin_key = admin_key

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        key = self.admin_key if request.url.path == "/metrics" else self.tenant_key
        request.headers.setdefault("Authorization", f"Bearer {key}")
        yield request


@dataclass
class Server:
    """A running ``modelport serve`` subprocess."""

    base_url: str
    workdir: Path
    database_url: str
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log_path: Path
    admin_key: str = ""
    key: str = ""
    """A key of ``TENANT`` with every scope."""
    models: dict[str, Path] = field(default_factory=dict)
    """Artifacts the fixture built, by model name (to compare against onnxruntime directly)."""

    def url(self, path: str) -> str:
        return self.base_url + path

    @property
    def auth_header(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def client(self, **kwargs: Any) -> httpx.Client:
        kwargs.setdefault("auth", KeyAuth(self.key, self.admin_key))
        return httpx.Client(base_url=self.base_url, timeout=30.0, **kwargs)

    def async_client(self, **kwargs: Any) -> httpx.AsyncClient:
        kwargs.setdefault("auth", KeyAuth(self.key, self.admin_key))
        return httpx.AsyncClient(base_url=self.base_url, timeout=30.0, **kwargs)

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    @property
    def host_port(self) -> str:
        return self.base_url.removeprefix("http://")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def modelport_env(workdir: Path, database_url: str, **settings: str) -> dict[str, str]:
    """The environment of a modelport process: only the MODELPORT_* settings given here."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELPORT_")}
    env.update(
        {
            "MODELPORT_DATABASE_URL": database_url,
            "MODELPORT_ARTIFACTS_URI": str(workdir / "artifacts"),
            "MODELPORT_CACHE_DIR": str(workdir / "cache"),
            "MODELPORT_HOST": "127.0.0.1",
            "MODELPORT_TENANT": TENANT,
            "MODELPORT_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
            "COLUMNS": "200",  # rich tables of the CLI are not wrapped
        }
    )
    env.update({f"MODELPORT_{k.upper()}": v for k, v in settings.items()})
    return env


def settings_for(workdir: Path, database_url: str) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=database_url,  # type: ignore[arg-type]
        artifacts_uri=str(workdir / "artifacts"),
        cache_dir=workdir / "cache",
    )


@contextmanager
def running_server(workdir: Path, database_url: str, **settings: str) -> Iterator[Server]:
    """Start ``python -m modelport serve`` and wait until it answers /v2/health/live."""
    port = free_port()
    admin_key = "mpadmin_" + secrets.token_urlsafe(32)
    settings.setdefault("admin_key", admin_key)
    env = modelport_env(workdir, database_url, port=str(port), **settings)
    log_path = workdir / f"server-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [PYTHON, "-m", "modelport", "serve"],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Server(f"http://127.0.0.1:{port}", workdir, database_url, env, process, log_path)
    server.admin_key = settings["admin_key"]
    try:
        _wait_live(server)
        server.key = issue_key(workdir, database_url, TENANT, ["infer", "read", "write", "admin"])
        yield server
    finally:
        _stop(server)


def _wait_live(server: Server) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(
                    f"modelport serve exited with {server.process.returncode}:\n"
                    + server.log_tail()
                )
            try:
                if client.get(server.url("/v2/health/live")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    raise RuntimeError(f"modelport serve did not come up in time:\n{server.log_tail()}")


def _stop(server: Server) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=10)


def run_cli(
    workdir: Path, database_url: str, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``python -m modelport <args>`` against the given registry."""
    result = subprocess.run(
        [PYTHON, "-m", "modelport", *args],
        cwd=workdir,
        env=modelport_env(workdir, database_url),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"modelport {' '.join(args)} exited with {result.returncode}:\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return result


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Push:
    name: str
    path: Path
    config: VersionConfig | None = None
    required: bool | None = None


def push_models(
    workdir: Path, database_url: str, pushes: list[Push], tenant: str = TENANT
) -> list[VersionRecord]:
    """Register versions through the real registry service (as the CLI does, in-process)."""

    async def main() -> list[VersionRecord]:
        services = await build_services(settings_for(workdir, database_url))
        try:
            await services.tenancy.ensure_tenant(tenant)
            return [
                await services.registry.push(tenant, p.name, p.path, p.config, required=p.required)
                for p in pushes
            ]
        finally:
            await services.close()

    return asyncio.run(main())


def issue_key(workdir: Path, database_url: str, tenant: str, scopes: list[str]) -> str:
    """A new API key of ``tenant`` (created if missing), straight from the registry database."""

    async def main() -> str:
        services = await build_services(settings_for(workdir, database_url))
        try:
            await services.tenancy.ensure_tenant(tenant)
            return (await services.tenancy.create_key(tenant, scopes, name="tests")).secret
        finally:
            await services.close()

    return asyncio.run(main())


def _postgres_execute(url: str, sql: str) -> None:
    import asyncpg

    async def main() -> None:
        conn = await asyncpg.connect(url, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(main())


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """The PostgreSQL URL new test databases are created from; when it is unreachable, the
    tests that need it skip (or fail, in CI)."""
    try:
        _postgres_execute(POSTGRES_URL, "SELECT 1")
    except Exception as exc:  # noqa: BLE001 - whatever the failure, the service is missing
        service_missing("PostgreSQL", POSTGRES_URL, f"{type(exc).__name__}: {exc}")
    return POSTGRES_URL


@contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """A fresh, empty database for one server; dropped (even while connected) afterwards."""
    name = f"modelport_it_{secrets.token_hex(6)}"
    _postgres_execute(admin_url, f'CREATE DATABASE "{name}"')
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        _postgres_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def registry_url(backend: str, workdir: Path, stack: ExitStack, request: Any) -> str:
    """A fresh registry on ``backend``; cleanup is attached to ``stack``."""
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{workdir / 'registry.db'}"
    admin_url = request.getfixturevalue("postgres_admin_url")
    return stack.enter_context(postgres_database(admin_url))


# --------------------------------------------------------------------------- the main server

DTYPE_MODELS = {f"id_{datatype.lower()}": datatype for datatype in ONNX_TYPES}


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def main_server(
    backend: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Server]:
    """One server with every model most tests need, on each registry backend.

    ranker, minilm            the demo models
    id_<datatype>             Identity ``x [batch, 3]`` -> ``y`` for each OIP datatype
    fixed                     FP32 Identity with the fixed, non-batch shape [2, 3]
    multi                     three outputs: doubled, negated, total
    versioned                 version 1 multiplies by 1, version 2 by 2 (only 2 is loaded)
    toggle                    pushed with the CLI; the load/unload tests switch it off and on
    broken_optional           pushed with the CLI as --optional; onnxruntime cannot load it
    """
    workdir = tmp_path_factory.mktemp(f"main-{backend}")
    build = workdir / "build"
    with ExitStack() as stack:
        db = registry_url(backend, workdir, stack, request)
        models = {
            "ranker": build_ranker(build / "ranker.onnx"),
            "minilm": build_minilm(build / "minilm"),
            "fixed": identity_model(build / "fixed.onnx", "FP32", (2, 3)),
            "multi": multi_output_model(build / "multi.onnx"),
        }
        pushes = [
            Push("ranker", models["ranker"], ranker_config(), required=True),
            Push("minilm", models["minilm"], minilm_config(), required=True),
            # Optional, so that a failure to load it (see test_fixed_shape_model_is_served)
            # does not hold back the readiness of the whole server.
            Push("fixed", models["fixed"], required=False),
            Push("multi", models["multi"]),
            Push("versioned", scale_model(build / "v1" / "scale.onnx", 1.0)),
            Push("versioned", scale_model(build / "v2" / "scale.onnx", 2.0)),
        ]
        for name, datatype in DTYPE_MODELS.items():
            models[name] = identity_model(build / f"{name}.onnx", datatype)
            pushes.append(Push(name, models[name]))
        records = push_models(workdir, db, pushes)
        assert [r.version for r in records if r.model == "versioned"] == ["1", "2"]

        models["toggle"] = identity_model(build / "toggle.onnx", "FP32", ("batch", 4))
        broken = unloadable_model(build / "broken.onnx")
        cli_pushes = [
            ("toggle", str(models["toggle"]), "--required", "--max-batch-size", "16",
             "--max-queue-delay-ms", "0.5"),
            ("broken_optional", str(broken), "--optional"),
        ]  # fmt: skip
        with ThreadPoolExecutor(len(cli_pushes)) as pool:
            results = list(
                pool.map(lambda a: run_cli(workdir, db, "models", "push", *a), cli_pushes)
            )
        for (name, *_), result in zip(cli_pushes, results, strict=True):
            assert f"registered {name} version 1" in result.stdout, result.stdout

        server = stack.enter_context(running_server(workdir, db, access_log="true"))
        server.models = models
        yield server


@pytest.fixture(scope="session")
def client(main_server: Server) -> Iterator[httpx.Client]:
    with main_server.client() as http:
        yield http
