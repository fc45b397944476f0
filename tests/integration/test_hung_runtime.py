"""A runtime that hangs: its callers get 504, the version is reloaded or taken out of rotation.

The model is a real ONNX graph served by onnxruntime: a Loop whose trip count is the largest
value of the request, so zeros answer at once and 1e15 runs for days (until the reload tells
the abandoned run to stop). Its warmup runs a few loops of ~0.1 s each, which keeps a reload
in progress long enough to be observed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from modelport.serving.config import RuntimeConfig, VersionConfig

from .conftest import Push, Server, push_models, registry_url, running_server
from .onnx_models import _save

pytestmark = pytest.mark.integration

TIMEOUT_S = 1.0
#: How much later than the compute timeout a hung request may be answered.
MARGIN_S = 3.0
FOREVER = 1e15
WARMUP_TRIPS = 100_000


def hanging_model(path: Path, width: int = 4) -> Path:
    """FP32 ``x [batch, width]`` -> ``y = x``, after a Loop of ``max(x)`` trivial steps."""
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Add", ["state_in", "one"], ["state_out"]),
        ],
        "spin",
        [
            helper.make_tensor_value_info("iteration", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("state_in", TensorProto.FLOAT, []),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("state_out", TensorProto.FLOAT, []),
        ],
        initializer=[numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one")],
    )
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMax", ["x"], ["top"], keepdims=0),
            helper.make_node("Cast", ["top"], ["trips"], to=TensorProto.INT64),
            helper.make_node("Loop", ["trips", "keep_going", "start"], ["spun"], body=body),
            helper.make_node("Mul", ["spun", "nothing"], ["naught"]),
            helper.make_node("Add", ["x", "naught"], ["y"]),
        ],
        "hang",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        initializer=[
            numpy_helper.from_array(np.array(True), "keep_going"),
            numpy_helper.from_array(np.array(0.0, dtype=np.float32), "start"),
            numpy_helper.from_array(np.array(0.0, dtype=np.float32), "nothing"),
        ],
    )
    return _save(graph, path)


def x_input(value: float) -> dict[str, Any]:
    return {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [value, 1.0, 2.0, 3.0]}


def config(warmup_loops: int) -> VersionConfig:
    return VersionConfig(
        runtime=RuntimeConfig(compute_timeout_s=TIMEOUT_S),
        warmup=[{"inputs": [x_input(WARMUP_TRIPS)]}] * warmup_loops,
    )


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Server]:
    """hang        reloads after a hang (its warmup takes ~0.5 s, so the reload is visible)
    hang_lost   its artifact is damaged after loading: the reload after a hang fails
    """
    workdir = tmp_path_factory.mktemp("hung")
    with ExitStack() as stack:
        db = registry_url("sqlite", workdir, stack, request)
        records = push_models(
            workdir,
            db,
            [
                Push("hang", hanging_model(workdir / "build" / "hang.onnx"), config(6), False),
                Push("hang_lost", hanging_model(workdir / "build" / "lost.onnx"), config(1), False),
            ],
        )
        server = stack.enter_context(running_server(workdir, db))
        server.models = {r.model: Path(r.artifact_uri.removeprefix("file://")) for r in records}
        with server.client() as client:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                states = [client.get(f"/v2/models/{m}/ready").status_code for m in server.models]
                if states == [200, 200]:
                    break
                time.sleep(0.1)
        yield server


def infer(client: httpx.Client, model: str, value: float) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = client.post(f"/v2/models/{model}/infer", json={"inputs": [x_input(value)]})
    return response, time.monotonic() - started


def version_state(client: httpx.Client, model: str) -> dict[str, Any]:
    response = client.get(f"/v1/models/{model}")
    assert response.status_code == 200, response.text
    (version,) = response.json()["versions"]
    return dict(version)


def test_hung_batch_gets_504_and_the_version_reloads(server: Server) -> None:
    with server.client() as client, ThreadPoolExecutor(2) as pool:
        ok, _ = infer(client, "hang", 0.0)
        assert ok.status_code == 200, ok.text

        hung = pool.submit(infer, client, "hang", FOREVER)
        time.sleep(0.3)  # the hanging batch is running; the next request queues behind it
        queued = pool.submit(infer, client, "hang", 0.0)
        response, elapsed = hung.result(timeout=TIMEOUT_S + MARGIN_S + 5)

        assert response.status_code == 504, response.text
        assert TIMEOUT_S <= elapsed < TIMEOUT_S + MARGIN_S, elapsed
        message = response.json()["error"]
        assert "model 'hang' version '1'" in message
        assert f"compute timeout of {TIMEOUT_S:g} s" in message

        # The request queued behind the stuck batch is refused with it, not left waiting.
        behind, behind_elapsed = queued.result(timeout=MARGIN_S + 5)
        assert behind.status_code == 503, behind.text
        assert behind.headers["retry-after"] == "1"
        assert behind_elapsed < TIMEOUT_S + MARGIN_S

        # While a fresh runtime loads (its warmup takes ~0.5 s): unhealthy, and a fast 503.
        ready = client.get("/v2/models/hang/ready")
        assert ready.status_code == 503 and ready.json()["ready"] is False
        meanwhile, meanwhile_elapsed = infer(client, "hang", 0.0)
        assert meanwhile.status_code == 503, meanwhile.text
        assert meanwhile.headers["retry-after"] == "1"
        assert meanwhile_elapsed < 0.5, meanwhile_elapsed
        assert f"compute timeout of {TIMEOUT_S:g} s" in meanwhile.json()["error"]
        state = version_state(client, "hang")
        assert state["state"] in ("UNHEALTHY", "LOADING"), state
        assert f"compute timeout of {TIMEOUT_S:g} s" in state["error"], state

        deadline = time.monotonic() + 30
        while client.get("/v2/models/hang/ready").status_code != 200:
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.05)
        assert version_state(client, "hang")["state"] == "READY"
        after, _ = infer(client, "hang", 5.0)
        assert after.status_code == 200, after.text
        assert after.json()["outputs"][0]["data"] == [5.0, 1.0, 2.0, 3.0]

    log = server.log_path.read_text()
    assert '"event": "version_unhealthy"' in log and '"model": "hang"' in log
    assert '"event": "version_reloaded"' in log


def test_hung_version_whose_reload_fails_is_out_of_rotation(server: Server) -> None:
    # The artifact store loses the version's bytes: the reload cannot verify them.
    server.models["hang_lost"].write_bytes(b"not the model that was pushed")
    with server.client() as client:
        response, elapsed = infer(client, "hang_lost", FOREVER)
        assert response.status_code == 504, response.text
        assert elapsed < TIMEOUT_S + MARGIN_S, elapsed
        assert "model 'hang_lost' version '1'" in response.json()["error"]

        deadline = time.monotonic() + 30
        while (state := version_state(client, "hang_lost"))["state"] != "FAILED":
            assert time.monotonic() < deadline, (state, server.log_tail())
            time.sleep(0.05)
        assert "out of rotation" in state["error"], state
        assert "the reload failed" in state["error"] and "sha256" in state["error"], state

        ready = client.get("/v2/models/hang_lost/ready")
        assert ready.status_code == 503 and ready.json()["ready"] is False
        refused, refused_elapsed = infer(client, "hang_lost", 0.0)
        assert refused.status_code == 503, refused.text
        assert "out of rotation" in refused.json()["error"]
        assert refused_elapsed < 0.5, refused_elapsed
        # The other version of the server is unaffected.
        assert client.get("/v2/models/hang/ready").status_code == 200
    assert '"event": "version_out_of_rotation"' in server.log_path.read_text()
