"""Plain requests take the fast request plan (``serving/request_plan.py``), and operators can
see it: ``modelport_request_plan_total{path="fast"|"general"}`` counts each request by how it was
decoded. A change that silently sends plain traffic the general way fails here."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from .conftest import Push, Server, push_models, running_server
from .oip import binary_request, decode_response, metric
from .onnx_models import scale_model

pytestmark = pytest.mark.integration

PLAN = "modelport_request_plan_total"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("request-plan")
    db = f"sqlite+aiosqlite:///{workdir / 'registry.db'}"
    push_models(workdir, db, [Push("double", scale_model(workdir / "double.onnx", 2.0))])
    with running_server(workdir, db) as running:
        yield running


def _paths(client: httpx.Client) -> tuple[float, float]:
    text = client.get("/metrics").text
    return (
        metric(text, PLAN, model="double", path="fast"),
        metric(text, PLAN, model="double", path="general"),
    )


def _infer(client: httpx.Client, **kwargs: Any) -> httpx.Response:
    response = client.post("/v2/models/double/infer", **kwargs)
    assert response.status_code == 200, response.text
    return response


def test_plain_json_requests_take_the_fast_plan(server: Server) -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    plain = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [3, 4], "data": x.ravel().tolist()}]
    }
    with server.client() as client:
        fast, general = _paths(client)
        _, outputs = decode_response(_infer(client, json=plain))
        np.testing.assert_array_equal(outputs["y"], x * 2)
        # An id is part of a plain request too, and comes back.
        doc, outputs = decode_response(_infer(client, json={**plain, "id": "r-1"}))
        assert doc["id"] == "r-1" and doc["model_version"] == "1"
        np.testing.assert_array_equal(outputs["y"], x * 2)
        assert _paths(client) == (fast + 2, general)


def test_requests_the_plan_does_not_read_go_the_general_way_and_are_counted(
    server: Server,
) -> None:
    x = np.array([[1.5, -2.0, 3.0, 0.25]], dtype=np.float32)
    with_parameters = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": x.ravel().tolist()}],
        "parameters": {"binary_data_output": True},
    }
    # The plan reads JSON documents only: binary-extension data is decoded the general way.
    body, headers = binary_request([("x", "FP32", x)])
    with server.client() as client:
        fast, general = _paths(client)
        _, outputs = decode_response(_infer(client, json=with_parameters))
        np.testing.assert_array_equal(outputs["y"], x * 2)
        _, outputs = decode_response(_infer(client, content=body, headers=headers))
        np.testing.assert_array_equal(outputs["y"], x * 2)
        assert _paths(client) == (fast, general + 2)


def test_a_tenant_with_a_rows_quota_keeps_the_fast_plan(server: Server) -> None:
    """A ``max_rows`` quota is checked on the rows the plan decoded: the tenant's plain
    requests stay fast, and one over the quota is refused with the quota named."""
    x = np.ones((2, 4), dtype=np.float32)
    plain = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 4], "data": x.ravel().tolist()}]
    }
    with httpx.Client(base_url=server.base_url, timeout=10.0) as admin:
        admin.headers["Authorization"] = f"Bearer {server.admin_key}"
        response = admin.put("/v1/tenants/acme/quotas", json={"max_rows": 3})
        assert response.status_code == 200, response.text
    try:
        with server.client() as client:
            big = {**plain, "inputs": [{**plain["inputs"][0], "shape": [4, 4], "data": [1] * 16}]}
            # The key cache picks up the new quota within auth_cache_ttl_s.
            for _ in range(50):
                refused = client.post("/v2/models/double/infer", json=big)
                if refused.status_code == 413:
                    break
                time.sleep(0.1)
            assert refused.status_code == 413, refused.text
            assert "max_rows" in refused.json()["error"]
            fast, general = _paths(client)
            _infer(client, json=plain)
            assert _paths(client) == (fast + 1, general)
    finally:
        with httpx.Client(base_url=server.base_url, timeout=10.0) as admin:
            admin.headers["Authorization"] = f"Bearer {server.admin_key}"
            admin.put("/v1/tenants/acme/quotas", json={"max_rows": None})
