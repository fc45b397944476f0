"""Per-tenant quotas: rate limits (in-process and Redis), in-flight limits, size caps."""

from __future__ import annotations

import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from required_services import service_missing

from .conftest import Push, Server, issue_key, push_models, running_server
from .oip import metric
from .onnx_models import scale_model

pytestmark = pytest.mark.integration

REDIS_URL = os.environ.get("MODELPORT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def body(rows: int = 1, width: int = 4) -> dict[str, object]:
    return {
        "inputs": [
            {"name": "x", "shape": [rows, width], "datatype": "FP32", "data": [1.0] * rows * width}
        ]
    }


def set_quotas(server: Server, tenant: str, **quotas: float) -> None:
    with httpx.Client(base_url=server.base_url, timeout=10) as admin:
        response = admin.put(
            f"/v1/tenants/{tenant}/quotas",
            json=quotas,
            headers={"Authorization": f"Bearer {server.admin_key}"},
        )
    assert response.status_code == 200, response.text
    time.sleep(1.2)  # past the key cache TTL: every replica sees the new quotas


@pytest.fixture(scope="module")
def quota_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("quotas")
    db = f"sqlite+aiosqlite:///{workdir / 'registry.db'}"
    model = scale_model(workdir / "build" / "scale.onnx", 1.0)
    push_models(workdir, db, [Push("scale", model)])
    push_models(workdir, db, [Push("scale", model)], tenant="quiet")
    with running_server(workdir, db) as server:
        yield server


def test_rate_limit_refuses_with_retry_after_and_never_reaches_the_model(
    quota_server: Server,
) -> None:
    set_quotas(quota_server, "acme", rate_limit_rps=2, rate_limit_burst=5)
    try:
        with quota_server.client() as client:
            before = client.get("/metrics").text
            responses = [client.post("/v2/models/scale/infer", json=body()) for _ in range(12)]
            after = client.get("/metrics").text
        codes = [r.status_code for r in responses]
        assert codes[:5] == [200] * 5
        limited = [r for r in responses if r.status_code == 429]
        assert len(limited) >= 6, codes
        first = limited[0]
        assert "rate limit" in first.json()["error"]
        assert int(first.headers["retry-after"]) >= 1
        assert first.headers["ratelimit-limit"] == "5"
        assert first.headers["ratelimit-remaining"] == "0"
        assert int(first.headers["ratelimit-reset"]) >= 1
        labels = {"tenant": "acme", "model": "scale", "version": "1"}
        served = metric(after, "modelport_inference_requests_total", outcome="ok", **labels)
        served -= metric(before, "modelport_inference_requests_total", outcome="ok", **labels)
        assert served == codes.count(200)
        # Other routes count against the same bucket.
        with quota_server.client() as client:
            assert client.get("/v2/models/scale").status_code == 429
        time.sleep(1.1)  # two tokens refill
        with quota_server.client() as client:
            assert client.post("/v2/models/scale/infer", json=body()).status_code == 200
    finally:
        set_quotas(quota_server, "acme", rate_limit_rps=0)


def test_row_and_body_caps_answer_413(quota_server: Server) -> None:
    set_quotas(quota_server, "acme", max_rows=2, max_body_bytes=600)
    try:
        with quota_server.client() as client:
            assert client.post("/v2/models/scale/infer", json=body(rows=2)).status_code == 200
            too_many = client.post("/v2/models/scale/infer", json=body(rows=3))
            assert too_many.status_code == 413
            assert "at most 2" in too_many.json()["error"]
            big = client.post(
                "/v2/models/scale/infer",
                json={**body(rows=1), "parameters": {"pad": "x" * 1000}},
            )
            assert big.status_code == 413
            assert "600 bytes" in big.json()["error"]
    finally:
        set_quotas(quota_server, "acme", max_rows=0, max_body_bytes=0)


@pytest.fixture(scope="module")
def quiet_key(quota_server: Server) -> str:
    return issue_key(quota_server.workdir, quota_server.database_url, "quiet", ["infer"])


FLOODER = """
import asyncio, collections, json, sys, time
import httpx

async def main(url, key, seconds, connections):
    codes = collections.Counter()
    body = {"inputs": [{"name": "x", "shape": [8, 4], "datatype": "FP32", "data": [1.0] * 32}]}
    headers = {"Authorization": "Bearer " + key}
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=connections)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        async def worker():
            while time.monotonic() < deadline:
                r = await client.post("/v2/models/scale/infer", json=body, headers=headers)
                codes[r.status_code] += 1
        await asyncio.gather(*(worker() for _ in range(connections)))
    print(json.dumps(codes))

asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])))
"""


def quiet_latencies(server: Server, key: str, n: int) -> list[float]:
    out = []
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        for _ in range(n):
            started = time.perf_counter()
            r = client.post(
                "/v2/models/scale/infer", json=body(), headers={"Authorization": f"Bearer {key}"}
            )
            assert r.status_code == 200, r.text
            out.append(time.perf_counter() - started)
    return out


def test_a_tenant_over_its_concurrency_limit_does_not_slow_another(
    quota_server: Server, quiet_key: str
) -> None:
    set_quotas(quota_server, "acme", max_concurrency=2)
    try:
        baseline = statistics.median(quiet_latencies(quota_server, quiet_key, 30))
        flood = subprocess.Popen(
            [sys.executable, "-c", FLOODER, quota_server.base_url, quota_server.key, "3", "32"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            time.sleep(0.8)
            under_flood = statistics.median(quiet_latencies(quota_server, quiet_key, 30))
        finally:
            out, _ = flood.communicate(timeout=60)
        codes = {int(k): v for k, v in json.loads(out).items()}
        assert codes.get(429, 0) > 0 and codes.get(200, 0) > 0, codes
        assert set(codes) <= {200, 429}, codes
        # The quiet tenant never queues behind the noisy one: its median latency stays within
        # a small multiple of its baseline (rejecting the flood still costs some CPU).
        assert under_flood < max(8 * baseline, 0.04), (baseline, under_flood, codes)
    finally:
        set_quotas(quota_server, "acme", max_concurrency=0)


def test_redis_rate_limit_is_shared_by_replicas(tmp_path: Path) -> None:
    redis = pytest.importorskip("redis")
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping()
    except redis.RedisError as exc:
        service_missing("Redis", REDIS_URL, exc)
    tenant = f"shared-{secrets.token_hex(4)}"
    db = f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}"
    push_models(tmp_path, db, [Push("scale", scale_model(tmp_path / "scale.onnx", 1.0))], tenant)
    with ExitStack() as stack:
        admin_key = "mpadmin_" + secrets.token_urlsafe(32)
        replicas = [
            stack.enter_context(
                running_server(
                    tmp_path, db, redis_url=REDIS_URL, admin_key=admin_key,
                    tenant_rate_limit_rps="0.5", tenant_rate_limit_burst="6",
                )
            )
            for _ in range(2)
        ]  # fmt: skip
        key = issue_key(tmp_path, db, tenant, ["infer"])
        headers = {"Authorization": f"Bearer {key}"}
        responses = []
        for i in range(12):
            with httpx.Client(base_url=replicas[i % 2].base_url, timeout=10) as client:
                responses.append(
                    client.post("/v2/models/scale/infer", json=body(), headers=headers)
                )
        codes = [r.status_code for r in responses]
        # One bucket of 6 for the tenant, whichever replica answers.
        assert codes.count(200) == 6, codes
        assert codes.count(429) == 6, codes
        # A refusal decided from a replica's lease of the shared bucket reads like any other.
        for refused in (r for r in responses if r.status_code == 429):
            assert "over its rate limit of 0.5 requests/s" in refused.json()["error"]
            assert int(refused.headers["retry-after"]) >= 1
            assert refused.headers["ratelimit-limit"] == "6"
            assert refused.headers["ratelimit-remaining"] == "0"
            assert int(refused.headers["ratelimit-reset"]) >= 1
            assert refused.headers["x-request-id"]
