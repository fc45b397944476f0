"""Online features through a real ``modelport serve``, on each online store backend: the embedded
one (memory persisted to SQLite) and a real Redis.

Views are defined over HTTP and with ``modelport features apply FILE.yaml``; values are pushed
and read back aligned with the keys asked for; bad input gets a 400 JSON error naming what was
wrong, never a 500; another tenant's view answers like a missing one (404).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from required_services import service_missing

from .conftest import PYTHON, TENANT, Server, issue_key, running_server

pytestmark = pytest.mark.integration

REDIS_URL = os.environ.get("MODELPORT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

USER_STATS = {
    "entity": "user",
    "ttl_s": 3600,
    "features": [
        {"name": "clicks", "dtype": "int", "default": 0},
        {"name": "ctr", "dtype": "float", "default": 0.5},
        {"name": "vip", "dtype": "bool", "default": False},
        {"name": "segment", "dtype": "string", "default": "none"},
    ],
}
ITEM_STATS = {
    "entity": "item",
    "ttl_s": 60,
    "features": [{"name": "price", "dtype": "float"}, {"name": "stock", "dtype": "int"}],
}


@dataclass
class Deployment:
    server: Server
    backend: str
    other_key: str
    """A key of another tenant, with every scope."""
    read_key: str
    """A key of ``TENANT`` with the read scope only."""

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {} if key is None else {"Authorization": f"Bearer {key}"}
        return self.server.client(headers=headers)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``modelport …`` with the server's settings (database, Redis, key prefix)."""
        return subprocess.run(
            [PYTHON, "-m", "modelport", *args],
            cwd=self.server.workdir,
            env=self.server.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


@pytest.fixture(scope="module", params=["memory", "redis"])
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    workdir = tmp_path_factory.mktemp(f"features-{request.param}")
    db = f"sqlite+aiosqlite:///{workdir / 'registry.db'}"
    settings: dict[str, str] = {}
    prefix = f"mp-it-{secrets.token_hex(4)}:f"
    if request.param == "redis":
        try:
            redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping()
        except (redis.RedisError, OSError) as exc:
            service_missing("Redis", REDIS_URL, exc)
        settings = {"redis_url": REDIS_URL, "feature_key_prefix": prefix}
    try:
        with running_server(workdir, db, **settings) as server:
            yield Deployment(
                server,
                request.param,
                issue_key(workdir, db, "rival", ["read", "write"]),
                issue_key(workdir, db, TENANT, ["read"]),
            )
    finally:
        if request.param == "redis":
            client = redis.Redis.from_url(REDIS_URL)
            keys = list(client.scan_iter(f"{prefix}:*", count=1000))
            if keys:
                client.delete(*keys)
            client.close()


@pytest.fixture(scope="module")
def http(deployment: Deployment) -> Iterator[httpx.Client]:
    with deployment.client() as client:
        yield client


@pytest.fixture(scope="module")
def views(http: httpx.Client) -> None:
    for name, body in (("user_stats", USER_STATS), ("item_stats", ITEM_STATS)):
        response = http.put(f"/v1/features/views/{name}", json=body)
        assert response.status_code == 200, response.text


def _error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    return str(body["error"])


# --------------------------------------------------------------------------- views


def test_applying_a_view_creates_a_version_only_when_it_changes(http: httpx.Client) -> None:
    name = f"v_{secrets.token_hex(3)}"
    first = http.put(f"/v1/features/views/{name}", json=USER_STATS).json()
    again = http.put(f"/v1/features/views/{name}", json=USER_STATS).json()
    changed = http.put(f"/v1/features/views/{name}", json={**USER_STATS, "ttl_s": 7.5}).json()
    assert first == {"view": name, "version": 1, "created": True}
    assert again == {"view": name, "version": 1, "created": False}
    assert changed == {"view": name, "version": 2, "created": True}
    latest = http.get(f"/v1/features/views/{name}").json()
    assert (latest["version"], latest["ttl_s"], latest["entity"]) == (2, 7.5, "user")
    assert latest["features"] == USER_STATS["features"]
    assert http.get(f"/v1/features/views/{name}", params={"version": 1}).json()["ttl_s"] == 3600
    listed = {v["view"]: v["version"] for v in http.get("/v1/features/views").json()}
    assert listed[name] == 2


# --------------------------------------------------------------------------- values


def test_pushed_values_read_back_aligned_with_the_keys_in_request_order(
    http: httpx.Client, views: None
) -> None:
    now = time.time()
    iso = dt.datetime.fromtimestamp(now - 10, dt.UTC).isoformat().replace("+00:00", "Z")
    rows = [
        {"entity": "u1", "values": {"clicks": 3, "ctr": 0.25, "vip": True}, "event_timestamp": iso},
        {
            "entity": "u2",
            "values": {"clicks": 7, "segment": "gold", "ctr": None},
            "event_timestamp": now - 5,
        },
    ]
    pushed = http.post("/v1/features/user_stats/push", json={"rows": rows})
    assert pushed.status_code == 200, pushed.text
    assert pushed.json() == {"written": 2, "stale": 0}
    item = {"entity": "i1", "values": {"price": 9.5, "stock": 2}, "event_timestamp": int(now)}
    pushed = http.post("/v1/features/item_stats/push", json={"rows": [item]})
    assert pushed.json() == {"written": 1, "stale": 0}

    response = http.post(
        "/v1/features/get",
        json={
            "features": ["user_stats:*", "item_stats:price", "user_stats:clicks"],
            "entities": {"user": ["u2", "nobody", "u1"], "item": ["i1", "i9"]},
        },
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [(r["entity"], r["key"]) for r in results] == [
        ("user", "u2"), ("user", "nobody"), ("user", "u1"), ("item", "i1"), ("item", "i9"),
    ]  # fmt: skip
    u2, nobody, u1, i1, i9 = (r["features"] for r in results)
    assert list(u2) == [
        "user_stats:clicks",
        "user_stats:ctr",
        "user_stats:vip",
        "user_stats:segment",
    ]
    assert u2["user_stats:clicks"] == {"value": 7, "status": "present", "event_timestamp": now - 5}
    assert u2["user_stats:segment"]["value"] == "gold"
    assert u2["user_stats:ctr"] == {"value": 0.5, "status": "missing", "event_timestamp": None}
    assert u2["user_stats:vip"] == {"value": False, "status": "missing", "event_timestamp": None}
    assert {v["status"] for v in nobody.values()} == {"missing"}
    assert nobody["user_stats:clicks"]["value"] == 0
    assert u1["user_stats:ctr"]["value"] == 0.25 and u1["user_stats:vip"]["value"] is True
    assert abs(u1["user_stats:clicks"]["event_timestamp"] - (now - 10)) < 1e-3
    assert i1 == {
        "item_stats:price": {"value": 9.5, "status": "present", "event_timestamp": int(now)}
    }
    assert i9 == {"item_stats:price": {"value": None, "status": "missing", "event_timestamp": None}}


def test_an_older_event_is_reported_stale_and_not_applied(http: httpx.Client, views: None) -> None:
    now = time.time()
    rows = [{"entity": "s1", "values": {"clicks": 2}, "event_timestamp": now - 1}]
    assert http.post("/v1/features/user_stats/push", json={"rows": rows}).json() == {
        "written": 1,
        "stale": 0,
    }
    old = [{"entity": "s1", "values": {"clicks": 1}, "event_timestamp": now - 100}]
    assert http.post("/v1/features/user_stats/push", json={"rows": old}).json() == {
        "written": 0,
        "stale": 1,
    }
    got = http.post(
        "/v1/features/get", json={"features": ["user_stats:clicks"], "entities": {"user": ["s1"]}}
    ).json()
    assert got["results"][0]["features"]["user_stats:clicks"]["value"] == 2


def test_a_value_past_the_view_ttl_reads_expired_with_the_default(http: httpx.Client) -> None:
    name = f"short_{secrets.token_hex(3)}"
    body = {
        "entity": "user",
        "ttl_s": 0.3,
        "features": [{"name": "x", "dtype": "int", "default": -1}],
    }
    assert http.put(f"/v1/features/views/{name}", json=body).status_code == 200
    ts = time.time()
    rows = [{"entity": "u1", "values": {"x": 5}, "event_timestamp": ts}]
    assert http.post(f"/v1/features/{name}/push", json={"rows": rows}).status_code == 200
    time.sleep(0.5)
    got = http.post(
        "/v1/features/get", json={"features": [f"{name}:x"], "entities": {"user": ["u1"]}}
    ).json()
    assert got["results"][0]["features"][f"{name}:x"] == {
        "value": -1,
        "status": "expired",
        "event_timestamp": ts,
    }


# --------------------------------------------------------------------------- bad input

GOOD_ROW = {"entity": "u1", "values": {"clicks": 1}, "event_timestamp": 1_700_000_000}
VIEW = "/v1/features/views/ok_view"
PUSH = "/v1/features/user_stats/push"
GET = "/v1/features/get"
JSON = {"Content-Type": "application/json"}


def _rows(**change: Any) -> dict[str, Any]:
    return {"rows": [{**GOOD_ROW, **change}]}


def _view(*features: dict[str, Any], **change: Any) -> dict[str, Any]:
    return {**USER_STATS, **({"features": list(features)} if features else {}), **change}


def _get(features: list[str], **entities: list[Any]) -> dict[str, Any]:
    return {"features": features, "entities": entities}


CLICKS = ["user_stats:clicks"]
BAD_REQUESTS = [
    ("PUT", "/v1/features/views/Bad-Name", USER_STATS, "path.view: String should match pattern"),
    ("PUT", VIEW, _view(entity="User"), "body.entity: String should match"),
    ("PUT", VIEW, _view(ttl_s=0), "body.ttl_s: Input should be greater than 0"),
    ("PUT", VIEW, _view(ttl_s="60"), "ttl_s"),
    ("PUT", VIEW, _view(features=[]), "features"),
    ("PUT", VIEW, _view(owner="x"), "owner"),
    ("PUT", VIEW, _view({"name": "a", "dtype": "double"}), "dtype"),
    ("PUT", VIEW, _view({"name": "a", "dtype": "int", "default": "1"}), "features.0.int.default"),
    ("PUT", VIEW, _view({"name": "a", "dtype": "int"}, {"name": "a", "dtype": "int"}), "twice"),
    ("POST", PUSH, _rows(values={"nope": 1}), "has no feature 'nope'"),
    ("POST", PUSH, _rows(values={"clicks": "many"}), "rows[0].values.clicks: expected int"),
    ("POST", PUSH, _rows(values={"vip": 1}), "expected bool"),
    ("POST", PUSH, _rows(event_timestamp="yesterday"), "not an ISO-8601 time"),
    ("POST", PUSH, _rows(event_timestamp=1_700_000_000_000), "less than 100000000000"),
    ("POST", PUSH, _rows(event_timestamp=time.time() + 86_400), "in the future"),
    ("POST", PUSH, _rows(event_timestamp=True), "event_timestamp"),
    ("POST", PUSH, _rows(entity=""), "body.rows.0.entity: String should have"),
    (
        "POST",
        PUSH,
        _rows(entity="\ud800x"),
        "rows.0.entity: Input should be a valid string, unable",
    ),
    ("POST", PUSH, _rows(entity="a\x00b"), "cannot contain NUL"),
    (
        "POST",
        PUSH,
        _rows(values={"segment": "\udc00"}),
        "values.segment.constrained-str: Input should be a valid string, unable",
    ),
    ("POST", PUSH, _rows(event_timestamp="1900-01-01T00:00:00Z"), "before 1970"),
    ("POST", PUSH, {"rows": [GOOD_ROW] * 10_001}, "rows"),
    ("POST", PUSH, {"rows": [{"entity": "u1", "values": {}}]}, "event_timestamp"),
    ("POST", GET, _get(["user_stats"], user=["u1"]), "body.features.0: String should match"),
    ("POST", GET, _get(["user_stats:nope"], user=["u1"]), "has no feature 'nope'"),
    ("POST", GET, _get(CLICKS, item=["i1"]), "keyed by entity 'user'"),
    ("POST", GET, _get(CLICKS, user=["u1"], item=["i1"]), "entity 'item'"),
    ("POST", GET, _get(CLICKS), "entities"),
    ("POST", GET, _get(CLICKS, user=[""]), "body.entities.user.0"),
    ("POST", GET, _get(CLICKS, user=[1]), "entities"),
    (
        "POST",
        GET,
        _get(CLICKS, user=["\udfff"]),
        "entities.user.0: Input should be a valid string, unable",
    ),
    ("POST", GET, _get(CLICKS, user=["u"] * 10_001), "at most 10000"),
    ("POST", GET, _get([], user=["u1"]), "features"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "message"),
    BAD_REQUESTS,
    ids=[f"{i:02d}-{path.rsplit('/', 1)[-1]}" for i, (_, path, _, _) in enumerate(BAD_REQUESTS)],
)
def test_bad_input_gets_a_400_json_error_saying_what_is_wrong(
    http: httpx.Client, views: None, method: str, path: str, body: Any, message: str
) -> None:
    # json.dumps escapes lone surrogates (httpx's own encoding would refuse them).
    content = json.dumps(body)
    response = http.request(method, path, content=content, headers=JSON)
    assert message in _error(response, 400)


def test_a_body_that_is_not_json_gets_400(http: httpx.Client, views: None) -> None:
    response = http.post(
        "/v1/features/user_stats/push",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    _error(response, 400)


def test_an_unknown_view_is_not_found(http: httpx.Client) -> None:
    assert "'ghost_view' does not exist" in _error(http.get("/v1/features/views/ghost_view"), 404)
    _error(http.post("/v1/features/ghost_view/push", json=_rows()), 404)
    body = {"features": ["ghost_view:x"], "entities": {"user": ["u1"]}}
    _error(http.post("/v1/features/get", json=body), 404)


def test_another_tenants_view_answers_like_a_missing_one(
    deployment: Deployment, views: None
) -> None:
    with deployment.client(deployment.other_key) as rival:
        assert rival.get("/v1/features/views").json() == []
        _error(rival.get("/v1/features/views/user_stats"), 404)
        _error(rival.post("/v1/features/user_stats/push", json=_rows()), 404)
        body = {"features": ["user_stats:clicks"], "entities": {"user": ["u1"]}}
        _error(rival.post("/v1/features/get", json=body), 404)


def test_a_read_only_key_may_read_but_not_push_or_define(
    deployment: Deployment, views: None
) -> None:
    with deployment.client(deployment.read_key) as reader:
        assert reader.get("/v1/features/views/user_stats").status_code == 200
        body = {"features": ["user_stats:clicks"], "entities": {"user": ["u1"]}}
        assert reader.post("/v1/features/get", json=body).status_code == 200
        _error(reader.post("/v1/features/user_stats/push", json=_rows()), 403)
        _error(reader.put("/v1/features/views/user_stats", json=USER_STATS), 403)


def test_an_unreachable_redis_gets_a_fast_503_with_retry_after(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Views live in SQL and keep working; pushes and reads fail fast, never hang."""
    workdir = tmp_path_factory.mktemp("features-down")
    db = f"sqlite+aiosqlite:///{workdir / 'registry.db'}"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    settings = {"redis_url": f"redis://127.0.0.1:{port}/0", "feature_store_timeout_s": "0.2"}
    with running_server(workdir, db, **settings) as server, server.client() as http:
        assert http.put("/v1/features/views/user_stats", json=USER_STATS).status_code == 200
        calls = [
            ("/v1/features/user_stats/push", {"rows": [{**GOOD_ROW, "event_timestamp": 1e9}]}),
            ("/v1/features/get", _get(CLICKS, user=["u1"])),
        ]
        for path, body in calls:
            began = time.monotonic()
            response = http.post(path, json=body)
            assert time.monotonic() - began < 2.0
            assert "online feature store (Redis) failed" in _error(response, 503)
            assert response.headers["retry-after"] == "1"
        assert "feature_store_unavailable" in server.log_tail(200)


# --------------------------------------------------------------------------- the CLI


VIEWS_YAML = """\
views:
  - name: cli_user
    entity: user
    ttl_s: 600
    features:
      - {name: orders, dtype: int, default: 0}
      - {name: spend, dtype: float, default: 0.0}
  - name: cli_item
    entity: item
    ttl_s: 60
    features:
      - {name: title, dtype: string}
"""


def test_cli_applies_views_from_yaml_and_the_server_serves_them(
    deployment: Deployment, http: httpx.Client, tmp_path: Path
) -> None:
    spec = tmp_path / "views.yaml"
    spec.write_text(VIEWS_YAML)
    first = deployment.cli("features", "apply", str(spec), "--tenant", TENANT)
    assert first.returncode == 0, first.stderr
    assert "cli_user: version 1 (created)" in first.stdout
    assert "cli_item: version 1 (created)" in first.stdout
    again = deployment.cli("features", "apply", str(spec), "--tenant", TENANT)
    assert "cli_user: version 1 (unchanged)" in again.stdout, again.stdout

    served = http.get("/v1/features/views/cli_user").json()
    assert served["features"] == [
        {"name": "orders", "dtype": "int", "default": 0},
        {"name": "spend", "dtype": "float", "default": 0.0},
    ]
    listed = deployment.cli("features", "list", "--tenant", TENANT)
    assert "cli_user" in listed.stdout and "orders:int" in listed.stdout

    rows = tmp_path / "rows.json"
    observed = dt.datetime.now(dt.UTC).isoformat()
    rows.write_text(
        json.dumps([{"entity": "u1", "values": {"orders": 4}, "event_timestamp": observed}])
    )
    pushed = deployment.cli("features", "push", "cli_user", str(rows), "--tenant", TENANT)
    assert pushed.returncode == 0, pushed.stderr
    assert "cli_user: 1 written, 0 stale" in pushed.stdout
    got = deployment.cli(
        "features", "get", "-f", "cli_user:orders", "-e", "user=u1", "--tenant", TENANT
    )
    assert got.returncode == 0, got.stderr
    assert '"value": 4' in got.stdout
    if deployment.backend == "redis":  # shared by the CLI and the server at once
        body = {"features": ["cli_user:orders"], "entities": {"user": ["u1"]}}
        value = http.post("/v1/features/get", json=body).json()["results"][0]["features"]
        assert value["cli_user:orders"]["value"] == 4
    else:
        assert "a running server sees these after a restart" in pushed.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("views: nope", "expected 'views:'"),
        ("views: [{name: a, entity: user}]", "give exactly"),
        ("views: [{name: a, entity: user, ttl_s: 5, features: [{dtype: int}]}]", "features"),
        ("views: [{name: A, entity: user, ttl_s: 5, features: [{name: x, dtype: int}]}]", "'A'"),
        (": : :", "views.yaml"),
    ],
)
def test_cli_refuses_a_bad_yaml_file_with_a_message(
    deployment: Deployment, tmp_path: Path, content: str, message: str
) -> None:
    spec = tmp_path / "views.yaml"
    spec.write_text(content)
    result = deployment.cli("features", "apply", str(spec), "--tenant", TENANT)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"entity": "\ud800", "values": {}, "event_timestamp": 1e9}, "not valid Unicode"),
        ({"entity": "u1", "values": {"orders": "x"}, "event_timestamp": 1e9}, "expected int"),
        ({"entity": "u1", "values": {}, "event_timestamp": "soon"}, "not an ISO-8601 time"),
        ({"entity": "u1", "values": {}}, "event_timestamp is required"),
        ({"entity": "u1", "values": [], "event_timestamp": 1e9}, "expected an object"),
        ("u1", "expected an object with entity"),
    ],
)
def test_cli_push_refuses_bad_rows_with_a_message(
    deployment: Deployment, http: httpx.Client, tmp_path: Path, row: Any, message: str
) -> None:
    view = {"entity": "user", "ttl_s": 60, "features": [{"name": "orders", "dtype": "int"}]}
    assert http.put("/v1/features/views/cli_rows", json=view).status_code == 200
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps([row]))
    result = deployment.cli("features", "push", "cli_rows", str(rows), "--tenant", TENANT)
    assert result.returncode == 1
    assert message in result.stdout, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
