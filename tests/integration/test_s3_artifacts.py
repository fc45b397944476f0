"""Artifacts on S3: pushing from ``s3://`` URIs and keeping the artifact store in a bucket.

S3 is moto's server, a real S3-compatible HTTP server in its own process; modelport reaches it
through s3fs and the standard AWS environment variables, exactly as it would reach AWS.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]  # boto3 ships no type information
import httpx
import numpy as np
import pytest

from modelport.demo.models import RANKER_FEATURES, build_ranker, ranker_config
from modelport.errors import InvalidInput
from modelport.serving.config import VersionConfig
from modelport.settings import Settings
from modelport.stores.artifacts import ArtifactStore, artifact_sha256
from modelport.stores.registry import VersionRecord
from modelport.wiring import build_services

from .conftest import PYTHON, TENANT, Server, free_port, run_cli, running_server
from .onnx_models import scale_model

pytestmark = pytest.mark.integration

#: Fake credentials: moto accepts any. The secret must never show up in a message.
ACCESS_KEY = "AKIAMODELPORTTEST"
SECRET_KEY = "modelport-test-secret-" + secrets.token_hex(8)


# --------------------------------------------------------------------------- S3


@dataclass(frozen=True)
class S3:
    endpoint: str
    client: Any
    """A boto3 S3 client on the moto server, for arranging and inspecting buckets."""

    def bucket(self) -> str:
        name = f"models-{secrets.token_hex(4)}"
        self.client.create_bucket(Bucket=name)
        return name

    def upload(self, path: Path, bucket: str, key: str) -> str:
        self.client.upload_file(str(path), bucket, key)
        return f"s3://{bucket}/{key}"

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


@contextmanager
def moto_server(log_path: Path) -> Iterator[str]:
    """``python -m moto.server`` on a free loopback port; yields its endpoint URL."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [PYTHON, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"moto exited with {process.returncode}: {log_path.read_text()}")
            try:
                httpx.get(f"{endpoint}/moto-api/", timeout=1.0)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"moto did not come up: {log_path.read_text()}") from None
                time.sleep(0.05)
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    """A moto server, and the AWS environment that points this process and its children at it.

    Shared config files and instance metadata are switched off so that nothing on the host
    (a developer's ~/.aws, a CI runner's role) leaks into the tests."""
    workdir = tmp_path_factory.mktemp("moto")
    with moto_server(workdir / "moto.log") as endpoint, pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
            mp.delenv(name, raising=False)
        mp.setenv("AWS_ENDPOINT_URL", endpoint)
        mp.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        mp.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_CONFIG_FILE", str(workdir / "no-config"))
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(workdir / "no-credentials"))
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        yield S3(endpoint, boto3.client("s3"))


# --------------------------------------------------------------------------- modelport


def sqlite_url(workdir: Path) -> str:
    return f"sqlite+aiosqlite:///{workdir / 'registry.db'}"


def settings(workdir: Path, artifacts_uri: str | None = None) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=sqlite_url(workdir),  # type: ignore[arg-type]
        artifacts_uri=artifacts_uri or str(workdir / "artifacts"),
        cache_dir=workdir / "cache",
    )


def push(
    config: Settings, name: str, source: Path | str, version: VersionConfig | None = None
) -> VersionRecord:
    """``RegistryService.push`` in-process, as ``modelport models push`` runs it."""

    async def main() -> VersionRecord:
        services = await build_services(config)
        try:
            await services.tenancy.ensure_tenant(TENANT)
            return await services.registry.push(TENANT, name, source, version)
        finally:
            await services.close()

    return asyncio.run(main())


def registered_models(config: Settings) -> list[str]:
    async def main() -> list[str]:
        services = await build_services(config)
        try:
            await services.tenancy.ensure_tenant(TENANT)
            return [m.model.name for m in await services.registry.list_models(TENANT)]
        finally:
            await services.close()

    return asyncio.run(main())


def staged_leftovers(workdir: Path) -> list[Path]:
    cache = workdir / "cache"
    return sorted(cache.glob(".stage-*")) if cache.exists() else []


def ranker_rows(rows: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((rows, RANKER_FEATURES)).astype(np.float32)


def infer(client: httpx.Client, model: str, name: str, x: np.ndarray) -> np.ndarray:
    body = {
        "inputs": [
            {"name": name, "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}
        ]
    }
    response = client.post(f"/v2/models/{model}/infer", json=body)
    assert response.status_code == 200, response.text
    [out] = response.json()["outputs"]
    return np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])


def onnxruntime_scores(model: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    (scores,) = session.run(["score"], {"input": x})
    return np.asarray(scores)


def index(server: Server) -> dict[str, dict[str, Any]]:
    with server.client() as client:
        response = client.post("/v2/repository/index")
    assert response.status_code == 200, response.text
    return {entry["name"]: entry for entry in response.json()}


# --------------------------------------------------------------------------- pushing from S3


def test_model_pushed_from_s3_is_served(s3: S3, tmp_path: Path) -> None:
    ranker = build_ranker(tmp_path / "build" / "ranker.onnx")
    uri = s3.upload(ranker, s3.bucket(), "ranker.onnx")

    record = push(settings(tmp_path), "ranker", uri, ranker_config())
    cli = run_cli(tmp_path, sqlite_url(tmp_path), "models", "push", "ranker-cli", uri)

    assert record.sha256 == artifact_sha256(ranker)
    assert "registered ranker-cli version 1" in cli.stdout, cli.stdout
    assert staged_leftovers(tmp_path) == [], "the downloaded copy must be removed after a push"
    x = ranker_rows(5)
    with running_server(tmp_path, sqlite_url(tmp_path)) as server, server.client() as client:
        for model in ("ranker", "ranker-cli"):
            np.testing.assert_allclose(
                infer(client, model, "input", x), onnxruntime_scores(ranker, x), rtol=1e-5
            )


def test_folder_pushed_from_s3_arrives_whole(s3: S3, tmp_path: Path) -> None:
    bucket = s3.bucket()
    files = {"model.onnx": b"graph", "tokenizer.json": b"{}", "assets/labels.txt": b"cat\n"}
    for rel, data in files.items():
        s3.client.put_object(Bucket=bucket, Key=f"encoder/{rel}", Body=data)
    store = ArtifactStore(str(tmp_path / "artifacts"), tmp_path / "cache")

    async def stage() -> tuple[Path, dict[str, bytes]]:
        async with store.stage(f"s3://{bucket}/encoder/") as local:
            found = {
                p.relative_to(local).as_posix(): p.read_bytes()
                for p in local.rglob("*")
                if p.is_file()
            }
            return local, found

    local, found = asyncio.run(stage())

    assert found == files
    assert local.name == "encoder"
    assert not local.exists() and staged_leftovers(tmp_path) == []


def test_file_uri_is_pushed_like_a_local_path(tmp_path: Path) -> None:
    model = scale_model(tmp_path / "build" / "scale.onnx", 3.0)
    by_path = push(settings(tmp_path), "by-path", model)
    by_uri = push(settings(tmp_path), "by-uri", model.as_uri())
    assert by_uri.sha256 == by_path.sha256


def test_missing_s3_object_is_refused_and_registers_nothing(s3: S3, tmp_path: Path) -> None:
    uri = f"s3://{s3.bucket()}/nope.onnx"

    with pytest.raises(InvalidInput) as info:
        push(settings(tmp_path), "ghost", uri)
    cli = run_cli(tmp_path, sqlite_url(tmp_path), "models", "push", "ghost", uri, check=False)

    assert info.value.message == f"{uri} does not exist (no such file or folder)"
    assert cli.returncode == 1
    output = cli.stdout + cli.stderr
    assert f"{uri} does not exist" in output, output
    assert "Traceback" not in output and SECRET_KEY not in output
    assert registered_models(settings(tmp_path)) == []
    assert staged_leftovers(tmp_path) == []


def test_missing_local_path_is_a_clear_cli_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.onnx"
    cli = run_cli(tmp_path, sqlite_url(tmp_path), "models", "push", "x", str(missing), check=False)
    assert cli.returncode == 2
    assert f"{missing} does not exist" in cli.stderr, cli.stderr
    assert "Traceback" not in cli.stderr


# --------------------------------------------------------------------------- the store on S3


@dataclass(frozen=True)
class S3Store:
    server: Server
    bucket: str
    records: dict[str, VersionRecord]
    models: dict[str, Path]


@pytest.fixture(scope="module")
def s3_store(s3: S3, tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Store]:
    """A server whose artifact store is ``s3://<bucket>/store``: ranker and scaled are loaded."""
    workdir = tmp_path_factory.mktemp("s3-store")
    bucket = s3.bucket()
    config = settings(workdir, f"s3://{bucket}/store")
    models = {
        "ranker": build_ranker(workdir / "build" / "ranker.onnx"),
        "scaled": scale_model(workdir / "build" / "scaled.onnx", 2.0),
    }
    records = {name: push(config, name, path) for name, path in models.items()}
    with running_server(
        workdir, sqlite_url(workdir), artifacts_uri=f"s3://{bucket}/store"
    ) as server:
        yield S3Store(server, bucket, records, models)


def test_artifacts_are_stored_in_the_bucket_and_served(s3: S3, s3_store: S3Store) -> None:
    record = s3_store.records["ranker"]

    assert record.artifact_uri == (
        f"s3://{s3_store.bucket}/store/{TENANT}/ranker/{record.sha256}/ranker.onnx"
    )
    assert s3.keys(s3_store.bucket, f"store/{TENANT}/ranker/") == [
        f"store/{TENANT}/ranker/{record.sha256}/ranker.onnx"
    ], "one object under <tenant>/<model>/<sha256>/ and no staging leftovers"
    body = s3.client.get_object(Bucket=s3_store.bucket, Key=record.artifact_uri.split("/", 3)[3])
    assert body["Body"].read() == s3_store.models["ranker"].read_bytes()
    cached = s3_store.server.workdir / "cache" / record.sha256 / "ranker.onnx"
    assert artifact_sha256(cached) == record.sha256, "materialised into the cache and verified"
    x = ranker_rows(4, seed=1)
    with s3_store.server.client() as client:
        np.testing.assert_allclose(
            infer(client, "ranker", "input", x),
            onnxruntime_scores(s3_store.models["ranker"], x),
            rtol=1e-5,
        )


def test_folder_artifact_round_trips_through_the_bucket(
    s3: S3, s3_store: S3Store, tmp_path: Path
) -> None:
    folder = tmp_path / "encoder"
    for rel, data in {"model.onnx": b"graph", "assets/labels.txt": b"cat\n"}.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    store = ArtifactStore(f"s3://{s3_store.bucket}/folders", tmp_path / "cache")

    uri, sha = store.put("enc", folder)
    local = store.materialise(uri, sha)

    assert sha == artifact_sha256(folder) == artifact_sha256(local)
    assert local.is_relative_to(tmp_path / "cache")
    stored = [
        f"folders/enc/{sha}/encoder/assets/labels.txt",
        f"folders/enc/{sha}/encoder/model.onnx",
    ]
    assert s3.keys(s3_store.bucket, "folders/") == stored

    # What an interrupted upload leaves behind is completed by the next push, not trusted.
    s3.client.delete_object(Bucket=s3_store.bucket, Key=stored[0])
    assert store.put("enc", folder) == (uri, sha)
    assert s3.keys(s3_store.bucket, "folders/") == stored


def test_tampered_object_in_the_bucket_is_refused(s3: S3, s3_store: S3Store) -> None:
    server, record = s3_store.server, s3_store.records["scaled"]
    x = np.ones((1, 4), dtype=np.float32)
    with server.client() as client:
        np.testing.assert_allclose(infer(client, "scaled", "x", x), 2 * x)
        assert client.post("/v2/repository/models/scaled/unload").status_code == 200

        key = record.artifact_uri.split("/", 3)[3]
        s3.client.put_object(Bucket=s3_store.bucket, Key=key, Body=b"swapped weights")
        shutil.rmtree(server.workdir / "cache" / record.sha256)  # as on a fresh host
        response = client.post("/v2/repository/models/scaled/load")

        assert response.status_code == 400, response.text
        message = response.json()["error"]
        assert "sha256" in message and record.sha256[:12] in message, message
        assert "refusing to serve" in message, message
        assert SECRET_KEY not in message
        assert index(server)["scaled"]["state"] == "FAILED"
        assert "refusing to serve" in index(server)["scaled"]["reason"]
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1] * 4}]}
        refused = client.post("/v2/models/scaled/infer", json=body)
        assert refused.status_code == 503, refused.text
        assert "no READY version (1: FAILED" in refused.json()["error"]
        assert not (server.workdir / "cache" / record.sha256).exists(), "bad bytes not cached"
        # Nothing else is affected.
        assert server.process.poll() is None
        assert client.get("/v2/health/live").status_code == 200
        ranker = ranker_rows(2, seed=2)
        np.testing.assert_allclose(
            infer(client, "ranker", "input", ranker),
            onnxruntime_scores(s3_store.models["ranker"], ranker),
            rtol=1e-5,
        )
