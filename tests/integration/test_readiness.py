"""Server readiness: no models, failed required models, optional models, runtime registration."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from .conftest import BACKENDS, Push, Server, push_models, registry_url, running_server
from .onnx_models import identity_model, scale_model

pytestmark = pytest.mark.integration

X = {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1.0, 2.0, 3.0, 4.0]}


def infer(client: httpx.Client, path: str) -> httpx.Response:
    return client.post(f"/v2/models/{path}/infer", json={"inputs": [X]})


def index(client: httpx.Client) -> dict[str, dict[str, str]]:
    response = client.post("/v2/repository/index")
    assert response.status_code == 200, response.text
    return {f"{e['name']}:{e['version']}": e for e in response.json()}


# --------------------------------------------------------------------------- empty registry


@pytest.fixture(scope="module", params=BACKENDS)
def empty_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp(f"empty-{request.param}")
    with ExitStack() as stack:
        db = registry_url(request.param, workdir, stack, request)
        yield stack.enter_context(running_server(workdir, db))


def test_empty_registry_is_live_but_not_ready(empty_server: Server) -> None:
    with empty_server.client() as client:
        live = client.get("/v2/health/live")
        assert live.status_code == 200 and live.json() == {"live": True}
        ready = client.get("/v2/health/ready")
        assert ready.status_code == 503
        assert ready.json() == {"ready": False}
        assert ready.headers.get("x-request-id")
        assert client.get("/v2").status_code == 200
        assert client.post("/v2/repository/index").json() == []
        assert client.post("/v2/repository/index", json={"ready": True}).json() == []
        assert client.get("/v2/models/anything").status_code == 404
        assert client.get("/v2/models/anything/ready").status_code == 404
        assert infer(client, "anything").status_code == 404
        metrics = client.get("/metrics")
        assert metrics.status_code == 200
        assert "modelport_loaded_model_versions 0.0" in metrics.text


def test_models_registered_while_serving(empty_server: Server, tmp_path: Path) -> None:
    """The server reads the registry live: a model pushed while it runs is served once loaded,
    and from then on counts for readiness. Optional models never hold readiness back."""
    push_models(
        empty_server.workdir,
        empty_server.database_url,
        [
            Push("late", scale_model(tmp_path / "v1" / "late.onnx", 1.0), required=True),
            Push(
                "extra", identity_model(tmp_path / "extra.onnx", "FP32", ("b", 4)), required=False
            ),
        ],
    )
    with empty_server.client() as client:
        # Registered and required but not loaded: the model is not ready, and the server
        # (asked to serve nothing yet) is not either.
        assert client.get("/v2/health/ready").status_code == 503
        assert client.get("/v2/models/late").status_code == 200
        assert client.get("/v2/models/late/ready").status_code == 503
        response = infer(client, "late")
        assert response.status_code == 503
        assert "POST /v2/repository/models/late/load" in response.json()["error"]
        assert response.headers["retry-after"] == "1"
        entries = index(client)
        assert entries["late:1"]["state"] == "UNAVAILABLE"
        assert entries["late:1"]["reason"] == "not loaded"
        assert entries["extra:1"]["state"] == "UNAVAILABLE"

        loaded = client.post("/v2/repository/models/late/load")
        assert loaded.status_code == 200, loaded.text
        assert loaded.json() == {"name": "late", "version": "1", "state": "READY"}
        # The optional "extra" is still not loaded, and does not matter.
        assert client.get("/v2/health/ready").status_code == 200
        assert client.get("/v2/models/extra/ready").status_code == 503
        assert infer(client, "late").json()["outputs"][0]["data"] == [1.0, 2.0, 3.0, 4.0]

    # A new version: load picks the newest, which then serves unpinned requests.
    push_models(
        empty_server.workdir,
        empty_server.database_url,
        [Push("late", scale_model(tmp_path / "v2" / "late.onnx", 2.0))],
    )
    with empty_server.client() as client:
        assert client.get("/v2/models/late").json()["versions"] == ["1", "2"]
        loaded = client.post("/v2/repository/models/late/load")
        assert loaded.json() == {"name": "late", "version": "2", "state": "READY"}
        response = infer(client, "late")
        assert response.json()["model_version"] == "2"
        assert response.json()["outputs"][0]["data"] == [2.0, 4.0, 6.0, 8.0]
        assert client.get("/v2/models/late/versions/2/ready").status_code == 200
        assert client.get("/v2/health/ready").status_code == 200

        # Unloading the only required model makes the server not ready again.
        assert client.post("/v2/repository/models/late/unload").status_code == 200
        assert client.get("/v2/health/ready").status_code == 503
        assert client.get("/v2/health/live").status_code == 200


def test_same_artifact_pushed_under_another_file_name(empty_server: Server, tmp_path: Path) -> None:
    """BUG: pushing bytes the store already holds for the model, from a file with another name,
    records a URI that does not exist, so the new version can never load.

    ``ArtifactStore.put`` copies into ``.<sha>.partial`` and then ``fs.mv``s it onto
    ``<model>/<sha>``; that folder already exists (from the first push), so the staging folder
    is moved *inside* it and ``<model>/<sha>/<new name>`` is missing.
    """
    first = identity_model(tmp_path / "first.onnx", "FP32", ("b", 4))
    renamed = tmp_path / "renamed.onnx"
    renamed.write_bytes(first.read_bytes())
    records = push_models(
        empty_server.workdir,
        empty_server.database_url,
        [Push("same_bytes", first, required=False), Push("same_bytes", renamed)],
    )
    assert records[0].sha256 == records[1].sha256
    with empty_server.client() as client:
        loaded = client.post("/v2/repository/models/same_bytes/load")
        assert loaded.status_code == 200, loaded.text
        assert loaded.json()["version"] == "2"


# --------------------------------------------------------------------------- failed loads


@pytest.fixture(scope="module")
def broken_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """good (required), corrupt (required, artifact altered after push: checksum mismatch),
    missing (optional, artifact deleted after push), newer (optional, its stored config has a
    field this release does not know, as one pushed by a newer release would)."""
    workdir = tmp_path_factory.mktemp("broken")
    build = workdir / "build"
    db = f"sqlite+aiosqlite:///{workdir / 'registry.db'}"
    records = push_models(
        workdir,
        db,
        [
            Push("good", identity_model(build / "good.onnx", "FP32", ("b", 4))),
            Push("corrupt", identity_model(build / "corrupt.onnx", "FP32", ("b", 4))),
            Push(
                "missing",
                identity_model(build / "missing.onnx", "FP32", ("b", 4)),
                required=False,
            ),
            Push(
                "newer",
                identity_model(build / "newer.onnx", "FP32", ("b", 4)),
                required=False,
            ),
        ],
    )
    stored = {r.model: Path(r.artifact_uri.removeprefix("file://")) for r in records}
    stored["corrupt"].write_bytes(stored["corrupt"].read_bytes() + b"tampered")
    stored["missing"].unlink()
    with sqlite3.connect(workdir / "registry.db") as sql:
        sql.execute(
            "UPDATE model_versions SET config = json_set(config, '$.batching.from_the_future', "
            "json('true')) WHERE model_id = (SELECT id FROM models WHERE name = 'newer')"
        )
    with running_server(workdir, db) as server:
        yield server


def test_a_failed_required_model_keeps_the_server_not_ready(broken_server: Server) -> None:
    with broken_server.client() as client:
        assert client.get("/v2/health/live").status_code == 200
        assert client.get("/v2/health/ready").status_code == 503
        assert client.get("/v2/models/good/ready").status_code == 200
        assert client.get("/v2/models/corrupt/ready").status_code == 503
        assert client.get("/v2/models/corrupt/versions/1/ready").status_code == 503
        assert client.get("/v2/models/missing/ready").status_code == 503

        entries = index(client)
        assert entries["good:1"]["state"] == "READY"
        assert entries["corrupt:1"]["state"] == "FAILED"
        assert "the registry recorded" in entries["corrupt:1"]["reason"]
        assert entries["missing:1"]["state"] == "FAILED"
        assert "missing from the artifact store" in entries["missing:1"]["reason"]
        # A config this release cannot read fails that version only, saying which field.
        assert entries["newer:1"]["state"] == "FAILED"
        assert "batching.from_the_future" in entries["newer:1"]["reason"]
        assert "newer release" in entries["newer:1"]["reason"]

        assert infer(client, "good").status_code == 200
        response = infer(client, "corrupt")
        assert response.status_code == 503
        assert "FAILED" in response.json()["error"]
        assert response.headers["retry-after"]

        # Retrying the load reports why it fails, and changes nothing.
        reload = client.post("/v2/repository/models/corrupt/load")
        assert reload.status_code == 400
        assert "failed to load" in reload.json()["error"]
        assert client.get("/v2/health/ready").status_code == 503


def test_a_repaired_required_model_makes_the_server_ready(
    broken_server: Server, tmp_path: Path
) -> None:
    push_models(
        broken_server.workdir,
        broken_server.database_url,
        [Push("corrupt", scale_model(tmp_path / "corrupt.onnx", 1.0))],
    )
    with broken_server.client() as client:
        assert client.get("/v2/health/ready").status_code == 503  # not loaded yet
        loaded = client.post("/v2/repository/models/corrupt/load")
        assert loaded.status_code == 200, loaded.text
        assert loaded.json() == {"name": "corrupt", "version": "2", "state": "READY"}
        # "missing" is still FAILED, but it is optional.
        assert client.get("/v2/models/missing/ready").status_code == 503
        ready = client.get("/v2/health/ready")
        assert ready.status_code == 200 and ready.json() == {"ready": True}
        assert infer(client, "corrupt").json()["model_version"] == "2"
