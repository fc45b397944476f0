"""Features joined into inference, through a real ``modelport serve`` on each online store
backend: callers send entity keys, the server fills the model's input from the online store.

The answers are checked against onnxruntime fed the expected feature vector directly.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import redis

from modelport.demo.models import build_ranker, ranker_config
from modelport.serving.config import CacheConfig, FeatureInput, FeaturesConfig
from redis_process import free_port, redis_server

from .conftest import Push, Server, push_models, running_server

pytestmark = pytest.mark.integration

REDIS_URL = os.environ.get("MODELPORT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PER_VIEW = 32
REFS = [f"user_stats:u{i}" for i in range(PER_VIEW)] + [f"item_stats:i{i}" for i in range(PER_VIEW)]


def view_body(entity: str, prefix: str) -> dict[str, Any]:
    return {
        "entity": entity,
        "ttl_s": 3600,
        "features": [
            {"name": f"{prefix}{i}", "dtype": "float", "default": 0.25} for i in range(PER_VIEW)
        ],
    }


def values(seed: int) -> list[float]:
    return [round(float(x), 4) for x in np.random.default_rng(seed).standard_normal(PER_VIEW)]


USERS = {"alice": values(1), "bob": values(2)}
ITEMS = {"book": values(3), "lamp": values(4)}


@pytest.fixture(scope="module", params=["memory", "redis"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp(f"feature-inference-{request.param}")
    db = f"sqlite+aiosqlite:///{workdir / 'registry.db'}"
    settings: dict[str, str] = {}
    prefix = f"mp-fi-{secrets.token_hex(4)}:f"
    if request.param == "redis":
        settings = {"redis_url": REDIS_URL, "feature_key_prefix": prefix}
    try:
        with running_server(workdir, db, **settings) as running:
            running.models["ranker"] = build_ranker(workdir / "ranker.onnx")
            _prepare(running)
            yield running
    finally:
        if request.param == "redis":
            client = redis.Redis.from_url(REDIS_URL)
            keys = list(client.scan_iter(f"{prefix}:*", count=1000))
            if keys:
                client.delete(*keys)
            client.close()


def _prepare(server: Server) -> None:
    now = dt.datetime.now(dt.UTC).timestamp()
    with server.client() as http:
        for view, entity, prefix, table in (
            ("user_stats", "user", "u", USERS),
            ("item_stats", "item", "i", ITEMS),
        ):
            assert (
                http.put(f"/v1/features/views/{view}", json=view_body(entity, prefix)).status_code
                == 200
            )
            rows = [
                {
                    "entity": key,
                    "values": {f"{prefix}{i}": v for i, v in enumerate(vals)},
                    "event_timestamp": now,
                }
                for key, vals in table.items()
            ]
            pushed = http.post(f"/v1/features/{view}/push", json={"rows": rows})
            assert pushed.status_code == 200, pushed.text
        for name, on_missing, sample, cached in (
            ("ranked", "default", 1.0, False),
            ("strict", "reject", 0.0, False),
            ("cached", "default", 0.0, True),
            ("cached_strict", "reject", 1.0, True),
        ):
            config = ranker_config().model_copy(
                update={
                    "cache": CacheConfig(enabled=cached),
                    "features": FeaturesConfig(
                        entities={"user": "user_id", "item": "item_id"},
                        inputs={"input": FeatureInput(features=REFS)},
                        on_missing=on_missing,
                        log_sample_rate=sample,
                    ),
                }
            )
            push_models(
                server.workdir,
                server.database_url,
                [Push(name, server.models["ranker"], config)],
            )
            loaded = http.post(f"/v2/repository/models/{name}/load")
            assert loaded.status_code == 200, loaded.text


def body(users: list[str], items: list[str], **parameters: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "inputs": [
            {"name": "user_id", "shape": [len(users)], "datatype": "BYTES", "data": users},
            {"name": "item_id", "shape": [len(items)], "datatype": "BYTES", "data": items},
        ]
    }
    if parameters:
        doc["parameters"] = parameters
    return doc


def expected_scores(server: Server, vectors: list[list[float]]) -> np.ndarray:
    session = ort.InferenceSession(str(server.models["ranker"]), providers=["CPUExecutionProvider"])
    batch = np.asarray(vectors, dtype=np.float32)
    return np.asarray(session.run(None, {"input": batch})[0])


def outputs(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    return {o["name"]: o for o in response.json()["outputs"]}


def test_callers_send_entity_keys_and_get_the_models_answer(server: Server) -> None:
    with server.client() as http:
        metadata = http.get("/v2/models/ranked").json()
        assert {i["name"]: i["datatype"] for i in metadata["inputs"]} == {
            "user_id": "BYTES",
            "item_id": "BYTES",
        }
        response = http.post(
            "/v2/models/ranked/infer", json=body(["alice", "bob"], ["lamp", "book"])
        )
    got = np.asarray(outputs(response)["score"]["data"], dtype=np.float32).reshape(2, 1)
    want = expected_scores(server, [USERS["alice"] + ITEMS["lamp"], USERS["bob"] + ITEMS["book"]])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_the_answer_can_carry_the_feature_values_used(server: Server) -> None:
    with server.client() as http:
        response = http.post(
            "/v2/models/ranked/infer",
            json=body(["alice", "nobody"], ["book", "book"], return_features=True),
        )
    # The model's output and the joined tensor; the missing-value counts are no output.
    assert list(outputs(response)) == ["score", "features:input"]
    used = outputs(response)["features:input"]
    assert used["shape"] == [2, 2 * PER_VIEW]
    rows = np.asarray(used["data"], dtype=np.float32).reshape(2, -1)
    np.testing.assert_allclose(rows[0], USERS["alice"] + ITEMS["book"], rtol=1e-6)
    # An unknown user: the view's defaults fill its half.
    np.testing.assert_allclose(rows[1], [0.25] * PER_VIEW + ITEMS["book"], rtol=1e-6)


def test_on_missing_reject_refuses_rows_without_values(server: Server) -> None:
    with server.client() as http:
        ok = http.post("/v2/models/strict/infer", json=body(["bob"], ["lamp"]))
        refused = http.post(
            "/v2/models/strict/infer", json=body(["bob", "nobody"], ["lamp", "lamp"])
        )
    assert ok.status_code == 200, ok.text
    assert refused.status_code == 400
    assert "on_missing: reject" in refused.json()["error"]
    assert "row(s) [1]" in refused.json()["error"]


def test_on_missing_reject_refuses_alike_when_answers_are_cached(server: Server) -> None:
    request = body(["bob", "nobody"], ["lamp", "lamp"])
    with server.client() as http:
        ok = http.post("/v2/models/cached_strict/infer", json=body(["bob"], ["lamp"]))
        refused = [http.post("/v2/models/cached_strict/infer", json=request) for _ in range(2)]
    assert ok.status_code == 200, ok.text
    assert list(outputs(ok)) == ["score"]
    for answer in refused:  # the second is refused too, not answered from the cache
        assert answer.status_code == 400
        assert "on_missing: reject" in answer.json()["error"]
        assert "row(s) [1]" in answer.json()["error"]
    sampled = [
        json.loads(line)
        for line in server.log_path.read_text().splitlines()
        if '"feature_sample"' in line and "'cached_strict'" in line
    ]
    assert {"user": "bob", "item": "lamp"} in [line["entities"] for line in sampled]


def test_the_view_versions_are_recorded_with_the_model_version(server: Server) -> None:
    with server.client() as http:
        detail = http.get("/v1/models/ranked/versions/1").json()
    assert detail["config"]["features"]["view_versions"] == {"user_stats": 1, "item_stats": 1}


def test_served_feature_vectors_are_sampled_into_the_log(server: Server) -> None:
    with server.client() as http:
        outputs(http.post("/v2/models/ranked/infer", json=body(["alice"], ["lamp"])))
    lines = [
        json.loads(line)
        for line in server.log_path.read_text().splitlines()
        if '"feature_sample"' in line
    ]
    lines = [line for line in lines if "'ranked'" in line["model"]]
    assert lines, "no feature_sample log line"
    sample = lines[-1]
    assert sample["entities"] == {"user": "alice", "item": "lamp"}
    np.testing.assert_allclose(
        sample["features"]["input"], USERS["alice"] + ITEMS["lamp"], rtol=1e-5
    )


def test_cached_answers_are_keyed_by_the_feature_values_joined(server: Server) -> None:
    # A user of its own: answers cached in a shared Redis by earlier runs must not answer here.
    user = f"carol-{secrets.token_hex(4)}"

    def push_user(vector: list[float], at: float) -> None:
        row = {"entity": user, "values": {f"u{i}": v for i, v in enumerate(vector)}}
        pushed = http.post(
            "/v1/features/user_stats/push", json={"rows": [{**row, "event_timestamp": at}]}
        )
        assert pushed.status_code == 200, pushed.text

    request = body([user], ["book"])
    now = dt.datetime.now(dt.UTC).timestamp()
    with server.client() as http:
        push_user(USERS["alice"], now)
        first = http.post("/v2/models/cached/infer", json=request)
        second = http.post("/v2/models/cached/infer", json=request)
        assert (first.headers["x-cache"], second.headers["x-cache"]) == ("miss", "hit")
        assert outputs(first)["score"]["data"] == outputs(second)["score"]["data"]
        # New values for the user: the same request is a new key, and the answer follows them.
        changed = [v + 1.0 for v in USERS["alice"]]
        push_user(changed, now + 1)
        third = http.post("/v2/models/cached/infer", json=request)
        assert third.headers["x-cache"] == "miss"
    got = np.asarray(outputs(third)["score"]["data"], dtype=np.float32).reshape(1, 1)
    np.testing.assert_allclose(
        got, expected_scores(server, [changed + ITEMS["book"]]), rtol=1e-5, atol=1e-6
    )


def test_a_missing_view_refuses_the_push(server: Server, tmp_path: Path) -> None:
    config = ranker_config().model_copy(
        update={
            "features": FeaturesConfig(
                entities={"user": "user_id"},
                inputs={"input": FeatureInput(features=["ghost:x"] * 64)},
            )
        }
    )
    with pytest.raises(Exception, match="feature view 'ghost' does not exist"):
        push_models(
            server.workdir, server.database_url, [Push("ghostly", server.models["ranker"], config)]
        )


# --------------------------------------------------------------------------- Redis outage


def _error_count(http: httpx.Client, admin_key: str) -> float:
    text = http.get("/metrics", headers={"Authorization": f"Bearer {admin_key}"}).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("modelport_feature_store_errors_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_redis_outage_degrades_to_defaults_and_heals(tmp_path: Path) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    db = f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}"
    with ExitStack() as first_redis:
        first_redis.enter_context(redis_server(port))
        with running_server(tmp_path, db, redis_url=url, feature_store_timeout_s="0.2") as server:
            server.models["ranker"] = build_ranker(tmp_path / "ranker.onnx")
            _prepare(server)
            with server.client() as http:
                request = body(["alice"], ["lamp"], return_features=True)

                def used() -> np.ndarray:
                    answer = outputs(http.post("/v2/models/ranked/infer", json=request))
                    return np.asarray(answer["features:input"]["data"], dtype=np.float32)

                np.testing.assert_allclose(used(), USERS["alice"] + ITEMS["lamp"], rtol=1e-6)

                first_redis.close()  # Redis goes away
                started = time.monotonic()
                for _ in range(20):
                    np.testing.assert_allclose(used(), [0.25] * (2 * PER_VIEW), rtol=1e-6)
                # The breaker keeps an outage from costing every request a timeout.
                assert time.monotonic() - started < 5.0
                strict = http.post("/v2/models/strict/infer", json=body(["bob"], ["lamp"]))
                assert strict.status_code == 503, strict.text
                assert strict.headers.get("retry-after")
                assert _error_count(http, server.admin_key) >= 1

                with redis_server(port):  # back, and empty: it keeps nothing on disk
                    _push_values(http)
                    deadline = time.monotonic() + 15
                    while time.monotonic() < deadline:
                        if np.allclose(used(), USERS["alice"] + ITEMS["lamp"], rtol=1e-6):
                            break
                        time.sleep(0.2)
                    else:
                        pytest.fail("feature values did not come back after Redis returned")


def _push_values(http: httpx.Client) -> None:
    now = dt.datetime.now(dt.UTC).timestamp()
    for view, prefix, table in (("user_stats", "u", USERS), ("item_stats", "i", ITEMS)):
        rows = [
            {
                "entity": key,
                "values": {f"{prefix}{i}": v for i, v in enumerate(vals)},
                "event_timestamp": now,
            }
            for key, vals in table.items()
        ]
        pushed = http.post(f"/v1/features/{view}/push", json={"rows": rows})
        assert pushed.status_code == 200, pushed.text
