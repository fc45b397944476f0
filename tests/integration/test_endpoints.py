"""Every HTTP endpoint of a live server, on the SQLite and the PostgreSQL registry."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest

from modelport import __version__

from .conftest import DTYPE_MODELS, TENANT, Server, run_cli
from .oip import metric, metric_labels

pytestmark = pytest.mark.integration

RANKER_ROW = [0.1] * 64


def ranker_body(rows: int = 1, **extra: Any) -> dict[str, Any]:
    data = np.linspace(-1, 1, rows * 64, dtype=np.float32).reshape(rows, 64)
    return {
        "inputs": [
            {"name": "input", "datatype": "FP32", "shape": [rows, 64], "data": data.tolist()}
        ],
        **extra,
    }


def assert_json_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers.get("x-request-id")
    body = response.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"], str) and body["error"]
    return str(body["error"])


# --------------------------------------------------------------------------- server


def test_server_metadata(client: httpx.Client) -> None:
    response = client.get("/v2")
    assert response.status_code == 200
    assert response.json() == {
        "name": "modelport",
        "version": __version__,
        "extensions": ["binary_tensor_data", "model_repository"],
    }


def test_live(client: httpx.Client) -> None:
    response = client.get("/v2/health/live")
    assert response.status_code == 200
    assert response.json() == {"live": True}


def test_ready_when_every_required_model_is_ready(client: httpx.Client) -> None:
    """broken_optional failed to load, but it is optional: the server is still ready."""
    response = client.get("/v2/health/ready")
    assert response.status_code == 200, client.post("/v2/repository/index").json()
    assert response.json() == {"ready": True}


# --------------------------------------------------------------------------- model metadata


def test_model_metadata(client: httpx.Client) -> None:
    response = client.get("/v2/models/ranker")
    assert response.status_code == 200
    assert response.json() == {
        "name": "ranker",
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}],
        "outputs": [{"name": "score", "datatype": "FP32", "shape": [-1, 1]}],
    }


def test_text_embedding_metadata(client: httpx.Client) -> None:
    meta = client.get("/v2/models/minilm").json()
    assert meta["platform"] == "modelport_text_embedding"
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert meta["outputs"] == [{"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}]


def test_model_metadata_lists_every_version(client: httpx.Client) -> None:
    meta = client.get("/v2/models/versioned").json()
    assert meta["versions"] == ["1", "2"]
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]


def test_version_metadata(client: httpx.Client) -> None:
    for version in ("1", "2"):
        response = client.get(f"/v2/models/versioned/versions/{version}")
        assert response.status_code == 200
        assert response.json()["name"] == "versioned"
        assert response.json()["versions"] == [version]


def test_metadata_of_every_datatype_model(client: httpx.Client) -> None:
    for model, datatype in DTYPE_MODELS.items():
        meta = client.get(f"/v2/models/{model}").json()
        assert meta["inputs"] == [{"name": "x", "datatype": datatype, "shape": [-1, 3]}]
        assert meta["outputs"] == [{"name": "y", "datatype": datatype, "shape": [-1, 3]}]


# --------------------------------------------------------------------------- model readiness


def test_model_ready(client: httpx.Client) -> None:
    response = client.get("/v2/models/ranker/ready")
    assert response.status_code == 200
    assert response.json() == {"name": "ranker", "ready": True}
    response = client.get("/v2/models/ranker/versions/1/ready")
    assert response.status_code == 200
    assert response.json() == {"name": "ranker", "ready": True}


def test_model_ready_reflects_a_failed_load(client: httpx.Client) -> None:
    response = client.get("/v2/models/broken_optional/ready")
    assert response.status_code == 503
    assert response.json() == {"name": "broken_optional", "ready": False}
    assert client.get("/v2/models/broken_optional/versions/1/ready").status_code == 503


def test_only_the_newest_version_is_loaded_on_start(client: httpx.Client) -> None:
    assert client.get("/v2/models/versioned/ready").status_code == 200
    assert client.get("/v2/models/versioned/versions/2/ready").json()["ready"] is True
    response = client.get("/v2/models/versioned/versions/1/ready")
    assert response.status_code == 503
    assert response.json() == {"name": "versioned", "ready": False}


# --------------------------------------------------------------------------- inference


def test_infer(client: httpx.Client, main_server: Server) -> None:
    import onnxruntime as ort

    body = ranker_body(rows=3, id="req-1")
    response = client.post("/v2/models/ranker/infer", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-model-version"] == "1"
    doc = response.json()
    assert doc["model_name"] == "ranker"
    assert doc["model_version"] == "1"
    assert doc["id"] == "req-1"
    [out] = doc["outputs"]
    assert out["name"] == "score" and out["datatype"] == "FP32" and out["shape"] == [3, 1]
    session = ort.InferenceSession(
        str(main_server.models["ranker"]), providers=["CPUExecutionProvider"]
    )
    x = np.asarray(body["inputs"][0]["data"], dtype=np.float32)
    (expected,) = session.run(["score"], {"input": x})
    np.testing.assert_allclose(np.asarray(out["data"]).reshape(3, 1), expected, rtol=1e-5)


def test_infer_pinned_version(client: httpx.Client) -> None:
    x = {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1.0, 2.0, 3.0, 4.0]}
    response = client.post("/v2/models/versioned/versions/2/infer", json={"inputs": [x]})
    assert response.status_code == 200, response.text
    assert response.json()["model_version"] == "2"
    assert response.json()["outputs"][0]["data"] == [2.0, 4.0, 6.0, 8.0]
    # Unpinned requests go to the newest READY version.
    response = client.post("/v2/models/versioned/infer", json={"inputs": [x]})
    assert response.json()["model_version"] == "2"
    assert response.headers["x-model-version"] == "2"


def test_infer_on_a_registered_but_unloaded_version_is_503(client: httpx.Client) -> None:
    x = {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1.0, 2.0, 3.0, 4.0]}
    response = client.post("/v2/models/versioned/versions/1/infer", json={"inputs": [x]})
    message = assert_json_error(response, 503)
    assert "not loaded" in message
    assert response.headers["retry-after"] == "1"


def test_infer_on_a_failed_model_is_503(client: httpx.Client) -> None:
    x = {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1.0, 2.0, 3.0, 4.0]}
    response = client.post("/v2/models/broken_optional/infer", json={"inputs": [x]})
    message = assert_json_error(response, 503)
    assert "FAILED" in message
    assert response.headers["retry-after"]


def test_gzip_request_body(client: httpx.Client) -> None:
    import gzip
    import json

    raw = gzip.compress(json.dumps(ranker_body()).encode())
    response = client.post(
        "/v2/models/ranker/infer",
        content=raw,
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["shape"] == [1, 1]


def test_fixed_shape_model_is_served(client: httpx.Client) -> None:
    """A model without a batch dimension (Identity FP32 [2, 3]) loads and answers.

    BUG: the batcher checks every output's first dimension against the request's row count
    (1 for a model that cannot be batched), so the warmup fails and the version stays FAILED.
    """
    ready = client.get("/v2/models/fixed/ready")
    [entry] = [e for e in _index(client) if e["name"] == "fixed"]
    assert ready.status_code == 200, entry
    data = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    x = {"name": "x", "datatype": "FP32", "shape": [2, 3], "data": data}
    response = client.post("/v2/models/fixed/infer", json={"inputs": [x]})
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    x["shape"] = [3, 2]
    assert_json_error(client.post("/v2/models/fixed/infer", json={"inputs": [x]}), 400)


# --------------------------------------------------------------------------- repository


def _index(client: httpx.Client, body: Any = None) -> list[dict[str, Any]]:
    response = client.post("/v2/repository/index", json=body)
    assert response.status_code == 200, response.text
    return list(response.json())


def test_repository_index(client: httpx.Client) -> None:
    entries = {(e["name"], e["version"]): e for e in _index(client)}
    assert entries[("ranker", "1")] == {
        "name": "ranker",
        "version": "1",
        "state": "READY",
        "reason": "",
    }
    assert entries[("versioned", "2")]["state"] == "READY"
    assert ("versioned", "1") not in entries
    broken = entries[("broken_optional", "1")]
    assert broken["state"] == "FAILED"
    assert "onnxruntime cannot load the model" in broken["reason"]
    assert {"minilm", "toggle", "multi", *DTYPE_MODELS} <= {name for name, _ in entries}


def test_repository_index_ready_only(client: httpx.Client) -> None:
    everything = _index(client)
    ready = _index(client, {"ready": True})
    assert ready == [e for e in everything if e["state"] == "READY"]
    assert "broken_optional" not in {e["name"] for e in ready}
    assert _index(client, {"ready": False}) == everything


def test_repository_index_rejects_a_bad_body(client: httpx.Client) -> None:
    response = client.post("/v2/repository/index", json={"ready": "sometimes"})
    assert_json_error(response, 400)


def test_unload_and_load(client: httpx.Client) -> None:
    x = {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1.0, 2.0, 3.0, 4.0]}
    assert client.post("/v2/models/toggle/infer", json={"inputs": [x]}).status_code == 200
    try:
        response = client.post("/v2/repository/models/toggle/unload")
        assert response.status_code == 200, response.text
        assert response.json() == {"name": "toggle", "unloaded": ["1"]}

        assert client.get("/v2/models/toggle/ready").status_code == 503
        assert client.get("/v2/models/toggle/versions/1/ready").json()["ready"] is False
        response = client.post("/v2/models/toggle/infer", json={"inputs": [x]})
        assert "not loaded" in assert_json_error(response, 503)
        assert response.headers["retry-after"] == "1"
        # toggle is required (the CLI pushed it with --required): the server is not ready.
        assert client.get("/v2/health/ready").status_code == 503
        assert client.get("/v2/health/live").status_code == 200
        entry = next(e for e in _index(client) if e["name"] == "toggle")
        assert entry == {
            "name": "toggle",
            "version": "1",
            "state": "UNAVAILABLE",
            "reason": "not loaded",
        }
        # Metadata still comes from the registry.
        assert client.get("/v2/models/toggle").status_code == 200
        # Unloading again is harmless.
        again = client.post("/v2/repository/models/toggle/unload")
        assert again.json() == {"name": "toggle", "unloaded": []}
    finally:
        response = client.post("/v2/repository/models/toggle/load")
    assert response.status_code == 200, response.text
    assert response.json() == {"name": "toggle", "version": "1", "state": "READY"}
    assert client.get("/v2/models/toggle/ready").status_code == 200
    assert client.get("/v2/health/ready").status_code == 200
    response = client.post("/v2/models/toggle/infer", json={"inputs": [x]})
    assert response.status_code == 200
    assert response.json()["outputs"][0]["data"] == [1.0, 2.0, 3.0, 4.0]


def test_load_of_an_already_loaded_model_is_idempotent(client: httpx.Client) -> None:
    response = client.post("/v2/repository/models/ranker/load")
    assert response.status_code == 200
    assert response.json() == {"name": "ranker", "version": "1", "state": "READY"}


def test_load_of_an_unloadable_model_is_400_with_the_reason(client: httpx.Client) -> None:
    response = client.post("/v2/repository/models/broken_optional/load")
    message = assert_json_error(response, 400)
    assert "failed to load" in message and "onnxruntime" in message
    assert client.get("/v2/health/ready").status_code == 200


def test_load_and_unload_of_an_unknown_model_is_404(client: httpx.Client) -> None:
    for action in ("load", "unload"):
        response = client.post(f"/v2/repository/models/nope/{action}")
        assert "nope" in assert_json_error(response, 404)


# --------------------------------------------------------------------------- metrics


def test_metrics(client: httpx.Client) -> None:
    before = client.get("/metrics").text
    assert client.post("/v2/models/ranker/infer", json=ranker_body(rows=2)).status_code == 200
    bad = ranker_body()
    bad["inputs"][0]["datatype"] = "FP64"
    assert client.post("/v2/models/ranker/infer", json=bad).status_code == 400

    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    after = response.text
    labels = {"model": "ranker", "version": "1"}

    def delta(name: str, **extra: str) -> float:
        return metric(after, name, **labels, **extra) - metric(before, name, **labels, **extra)

    assert delta("modelport_inference_requests_total", outcome="ok") == 1
    assert delta("modelport_inference_requests_total", outcome="invalid_input") == 1
    assert delta("modelport_inference_request_seconds_count") == 2
    assert delta("modelport_queue_wait_seconds_count") == 1
    assert delta("modelport_compute_seconds_count") == 1
    assert delta("modelport_batch_size_count") == 1
    assert delta("modelport_batch_size_sum") == 2
    assert delta("modelport_batches_total", outcome="ok") == 1
    assert delta("modelport_inference_request_seconds_sum") > 0
    # Histograms have buckets.
    assert any(
        lbl.get("model") == "ranker" and "le" in lbl
        for lbl in metric_labels(after, "modelport_queue_wait_seconds_bucket")
    )
    assert metric(after, "modelport_queue_depth_rows", **labels) == 0
    assert metric(after, "modelport_model_version_ready", **labels) == 1
    ready_labels = metric_labels(after, "modelport_model_version_ready")
    assert {"model": "broken_optional", "tenant": TENANT, "version": "1"} in ready_labels
    assert metric(after, "modelport_model_version_ready", model="broken_optional") == 0
    ready = [e for e in _index(client) if e["state"] == "READY"]
    assert metric(after, "modelport_loaded_model_versions") == len(ready)


# --------------------------------------------------------------------------- request ids


_GENERATED = re.compile(r"^[0-9a-f]{16}$")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v2", None),
        ("GET", "/v2/health/ready", None),
        ("GET", "/v2/models/ranker", None),
        ("POST", "/v2/models/ranker/infer", ranker_body()),
        ("POST", "/v2/models/ranker/infer", {"inputs": []}),
        ("POST", "/v2/models/nope/infer", ranker_body()),
        ("POST", "/v2/repository/index", {}),
        ("GET", "/metrics", None),
        ("GET", "/v2/no/such/endpoint", None),
    ],
)
def test_request_id(client: httpx.Client, method: str, path: str, body: Any) -> None:
    generated = client.request(method, path, json=body)
    assert _GENERATED.match(generated.headers["x-request-id"]), generated.headers
    other = client.request(method, path, json=body)
    assert other.headers["x-request-id"] != generated.headers["x-request-id"]
    echoed = client.request(method, path, json=body, headers={"X-Request-ID": "trace-42-abc"})
    assert echoed.headers["x-request-id"] == "trace-42-abc"
    assert echoed.status_code == generated.status_code


@pytest.mark.parametrize("sent", ["has space", "x" * 129, "semi;colon", "ünïcode"])
def test_unsafe_request_id_is_replaced(client: httpx.Client, sent: str) -> None:
    response = client.get("/v2", headers={"X-Request-ID": sent.encode("utf-8")})
    assert response.status_code == 200
    assert _GENERATED.match(response.headers["x-request-id"])


# --------------------------------------------------------------------------- HTTP errors


def test_unknown_endpoint_is_json_404(client: httpx.Client) -> None:
    assert "no such endpoint" in assert_json_error(client.get("/v3/models"), 404)


def test_wrong_method_is_json_405(client: httpx.Client) -> None:
    assert_json_error(client.get("/v2/models/ranker/infer"), 405)
    assert_json_error(client.delete("/v2/models/ranker"), 405)


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/nope",
        "/v2/models/nope/ready",
        "/v2/models/nope/versions/1",
        "/v2/models/nope/versions/1/ready",
    ],
)
def test_unknown_model_is_404(client: httpx.Client, path: str) -> None:
    assert "model 'nope' is not registered" in assert_json_error(client.get(path), 404)


@pytest.mark.parametrize("version", ["3", "0", "-1", "abc", "1.0"])
def test_unknown_version_is_404(client: httpx.Client, version: str) -> None:
    for path in (
        f"/v2/models/versioned/versions/{version}",
        f"/v2/models/versioned/versions/{version}/ready",
    ):
        assert "has no version" in assert_json_error(client.get(path), 404)


def test_openapi_documents_the_infer_route(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()
    assert "/v2/models/{model}/infer" in schema["paths"]
    assert "/v2/models/{model}/versions/{version}/infer" in schema["paths"]


# --------------------------------------------------------------------------- CLI


def test_cli_lists_and_shows_the_registry(main_server: Server) -> None:
    commands = [("models", "list"), ("models", "show", "toggle")]
    with ThreadPoolExecutor(len(commands)) as pool:
        listed, shown = pool.map(
            lambda args: run_cli(main_server.workdir, main_server.database_url, *args).stdout,
            commands,
        )
    for name in ("ranker", "minilm", "versioned", "toggle", "broken_optional"):
        assert name in listed
    assert re.search(r"versioned\s+│\s+1, 2\s+│", listed), listed
    assert re.search(r"broken_optional\s+│.*│\s+no\s+│", listed), listed
    assert "toggle version 1" in shown
    assert '"max_batch_size": 16' in shown
