"""The response cache over real HTTP: ``X-Cache`` says where an answer came from, answers are
identical either way, a new version never serves the old one's entries, versions without the
cache are untouched, and replicas share answers through Redis."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from redis import Redis
from redis.exceptions import RedisError

from modelport.serving.cache_key import cache_key
from modelport.serving.config import CacheConfig, VersionConfig
from required_services import service_missing

from .conftest import TENANT, Push, Server, push_models, running_server
from .oip import binary_request, decode_response, metric
from .onnx_models import scale_model

pytestmark = pytest.mark.integration

REDIS_URL = os.environ.get("MODELPORT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
CACHED = VersionConfig(cache=CacheConfig(enabled=True, ttl_s=60))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("cache-http")
    build = workdir / "build"
    db = f"sqlite+aiosqlite:///{workdir / 'registry.db'}"
    push_models(
        workdir,
        db,
        [
            Push("cached", scale_model(build / "cached.onnx", 3.0), CACHED),
            Push("versions", scale_model(build / "versions-1.onnx", 1.0), CACHED),
            Push("plain", scale_model(build / "plain.onnx", 3.0)),
        ],
    )
    with running_server(workdir, db) as running:
        yield running


def row(*values: float) -> dict[str, Any]:
    return {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": list(values)}


def infer(client: httpx.Client, model: str, *values: float) -> httpx.Response:
    response = client.post(f"/v2/models/{model}/infer", json={"inputs": [row(*values)]})
    assert response.status_code == 200, response.text
    return response


def test_a_repeated_request_is_a_hit_with_the_same_answer(server: Server) -> None:
    with server.client() as client:
        first = infer(client, "cached", 1, 2, 3, 4)
        second = infer(client, "cached", 1, 2, 3, 4)
        assert first.headers["x-cache"] == "miss"
        assert second.headers["x-cache"] == "hit"
        assert first.json() == second.json()
        assert second.json()["outputs"][0]["data"] == [3.0, 6.0, 9.0, 12.0]
        assert second.headers["x-model-version"] == "1"

        # The same tensor sent with the binary extension is the same request; the hit is
        # shaped as this request asks (binary output).
        body, headers = binary_request(
            [("x", "FP32", np.array([[1, 2, 3, 4]], np.float32))],
            parameters={"binary_data_output": True},
        )
        binary = client.post("/v2/models/cached/infer", content=body, headers=headers)
        assert binary.status_code == 200, binary.text
        assert binary.headers["x-cache"] == "hit"
        _, outputs = decode_response(binary)
        assert outputs["y"].tolist() == [[3.0, 6.0, 9.0, 12.0]]


def test_different_inputs_miss(server: Server) -> None:
    with server.client() as client:
        assert infer(client, "cached", 5, 5, 5, 5).headers["x-cache"] == "miss"
        other = infer(client, "cached", 5, 5, 5, 6)
        assert other.headers["x-cache"] == "miss"
        assert other.json()["outputs"][0]["data"] == [15.0, 15.0, 15.0, 18.0]
        assert infer(client, "cached", 5, 5, 5, 5).headers["x-cache"] == "hit"


def test_a_new_version_never_serves_the_old_versions_answers(
    server: Server, tmp_path: Path
) -> None:
    with server.client() as client:
        assert infer(client, "versions", 1, 1, 1, 1).headers["x-cache"] == "miss"
        assert infer(client, "versions", 1, 1, 1, 1).headers["x-cache"] == "hit"
        push_models(
            server.workdir,
            server.database_url,
            [Push("versions", scale_model(tmp_path / "versions-2.onnx", 2.0), CACHED)],
        )
        loaded = client.post("/v2/repository/models/versions/load")
        assert loaded.json()["version"] == "2"
        fresh = infer(client, "versions", 1, 1, 1, 1)
        assert fresh.headers["x-cache"] == "miss"
        assert fresh.headers["x-model-version"] == "2"
        assert fresh.json()["outputs"][0]["data"] == [2.0, 2.0, 2.0, 2.0]
        again = infer(client, "versions", 1, 1, 1, 1)
        assert again.headers["x-cache"] == "hit"
        assert again.json()["outputs"][0]["data"] == [2.0, 2.0, 2.0, 2.0]


def test_a_version_without_the_cache_has_no_header(server: Server) -> None:
    with server.client() as client:
        for _ in range(2):
            response = infer(client, "plain", 1, 2, 3, 4)
            assert "x-cache" not in response.headers
            assert response.json()["outputs"][0]["data"] == [3.0, 6.0, 9.0, 12.0]


def test_errors_are_not_cached(server: Server) -> None:
    with server.client() as client:
        bad = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}
        for _ in range(2):
            response = client.post("/v2/models/cached/infer", json=bad)
            assert response.status_code == 400
            assert "x-cache" not in response.headers


def test_metrics_count_hits_and_misses(server: Server) -> None:
    with server.client() as client:
        infer(client, "cached", 9, 9, 9, 9)
        infer(client, "cached", 9, 9, 9, 9)
        text = client.get("/metrics").text
    assert metric(text, "modelport_cache_requests_total", model="cached", result="miss") >= 2
    assert metric(text, "modelport_cache_requests_total", model="cached", result="hit_memory") >= 2
    assert metric(text, "modelport_cache_requests_total", model="plain") == 0
    assert metric(text, "modelport_cache_bytes", tenant="acme") > 0
    assert metric(text, "modelport_inference_requests_total", model="cached", outcome="ok") >= 4


def _redis_or_skip() -> None:
    client = Redis.from_url(REDIS_URL, socket_timeout=2)
    try:
        client.ping()
    except (RedisError, OSError) as exc:
        service_missing("Redis", REDIS_URL, exc)
    finally:
        client.close()


def test_replicas_share_answers_through_redis(tmp_path_factory: pytest.TempPathFactory) -> None:
    _redis_or_skip()
    # A name of its own: entries of earlier runs in this Redis must not answer this one.
    name = f"shared_{secrets.token_hex(4)}"
    x = np.array([[1, 2, 3, 4]], np.float32)
    with ExitStack() as stack:
        servers = []
        for replica in ("a", "b"):
            workdir = tmp_path_factory.mktemp(f"cache-replica-{replica}")
            db = f"sqlite+aiosqlite:///{workdir / 'registry.db'}"
            model = scale_model(workdir / "build" / "shared.onnx", 4.0)
            (record,) = push_models(workdir, db, [Push(name, model, CACHED)])
            # A version is named by its number and its artifact's digest: the same model
            # registered in both replicas' registries shares its answers.
            identity = f"{record.version}:{record.sha256}"
            servers.append(stack.enter_context(running_server(workdir, db, redis_url=REDIS_URL)))
        redis_key = f"mp:c:{TENANT}:{cache_key(TENANT, name, identity, {'x': x}).hex()}"
        redis = stack.enter_context(Redis.from_url(REDIS_URL, socket_timeout=2))
        stack.callback(redis.delete, redis_key)
        with servers[0].client() as a, servers[1].client() as b:
            assert infer(a, name, 1, 2, 3, 4).headers["x-cache"] == "miss"
            # The write to Redis goes behind the answer.
            deadline = time.monotonic() + 5
            while not redis.exists(redis_key):
                assert time.monotonic() < deadline, "replica a never wrote its answer to Redis"
                time.sleep(0.02)
            assert 55_000 < int(redis.pttl(redis_key)) <= 60_000
            shared = infer(b, name, 1, 2, 3, 4)
            assert shared.headers["x-cache"] == "hit"
            assert shared.json()["outputs"][0]["data"] == [4.0, 8.0, 12.0, 16.0]
            assert infer(b, name, 1, 2, 3, 4).headers["x-cache"] == "hit"
            text = b.get("/metrics").text
        assert metric(text, "modelport_cache_requests_total", model=name, result="hit_redis") == 1
        assert metric(text, "modelport_cache_requests_total", model=name, result="hit_memory") == 1
        assert metric(text, "modelport_cache_requests_total", model=name, result="miss") == 0
