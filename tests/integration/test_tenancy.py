"""Multi-tenant authentication through real HTTP against real servers.

Every endpoint but health and server metadata needs a key; scopes decide what a key may do;
keys are stored hashed, and revoking, rotating, expiring or suspending them takes effect on every
replica within the cache TTL (1 s, checked against 2 s). Tenants cannot see each other's models
or keys: another tenant's model answers exactly like a model that exists nowhere, on every route
of the OpenAPI schema that names a model. Secrets never reach the server log.

The tests that mutate tenants and keys run against their own server (``deployment``), on each
registry backend, so the shared ``main_server`` is left alone.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
import re
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from .conftest import (
    BACKENDS,
    TENANT,
    Push,
    Server,
    push_models,
    registry_url,
    run_cli,
    running_server,
)
from .onnx_models import scale_model

pytestmark = pytest.mark.integration

RIVAL = "rival"
SHARED = "shared_scaler"
"""Registered in both tenants: acme's multiplies by 2, rival's by 3."""
PRIVATE = "acme_private_scaler"
"""Registered only in acme."""
GHOST = "ghost_scaler_zz"
"""Registered nowhere."""
MISSING_TENANT = "does-not-exist"
FACTORS = {TENANT: 2.0, RIVAL: 3.0}
PRIVATE_FACTOR = 5.0
ALL_SCOPES = ["infer", "read", "write", "admin"]

#: How fast a revoked, expired or suspended key must stop working (the cache TTL is 1 s).
PROPAGATION_S = 2.0
KEY_PATTERN = re.compile(r"mp_([0-9a-f]{12})_[A-Za-z0-9_-]{43}")
PUBLIC = {("GET", "/v2"), ("GET", "/v2/health/live"), ("GET", "/v2/health/ready")}
INFER_ROUTES = {
    ("POST", "/v2/models/{model}/infer"),
    ("POST", "/v2/models/{model}/versions/{version}/infer"),
}
#: Routes with a {model} path parameter today; the schema walk must cover at least these.
MODEL_ROUTES = INFER_ROUTES | {
    ("GET", "/v2/models/{model}"),
    ("GET", "/v2/models/{model}/versions/{version}"),
    ("GET", "/v2/models/{model}/ready"),
    ("GET", "/v2/models/{model}/versions/{version}/ready"),
    ("POST", "/v2/repository/models/{model}/load"),
    ("POST", "/v2/repository/models/{model}/unload"),
    ("GET", "/v1/models/{model}"),
    ("GET", "/v1/models/{model}/versions/{version}"),
    ("DELETE", "/v1/models/{model}/versions/{version}"),
    ("PUT", "/v1/models/{model}/aliases/{alias}"),
    ("DELETE", "/v1/models/{model}/aliases/{alias}"),
    ("GET", "/v1/models/{model}/routing"),
    ("PUT", "/v1/models/{model}/routing"),
    ("DELETE", "/v1/models/{model}/routing"),
    ("GET", "/v1/models/{model}/history"),
    ("GET", "/v1/models/{model}/shadow"),
    ("GET", "/v1/models/{model}/golden"),
    ("PUT", "/v1/models/{model}/golden"),
    ("GET", "/v1/models/{model}/rollouts"),
    ("POST", "/v1/models/{model}/rollouts"),
    ("POST", "/v1/models/{model}/rollouts/current/{action}"),
}
#: Bodies that pass validation, so that the owner's probe reaches the model lookup. An alias
#: named ``probe`` does not change where unpinned traffic goes.
PROBE_BODIES: dict[tuple[str, str], Any] = {
    ("PUT", "/v1/models/{model}/aliases/{alias}"): {"version": "1"},
    ("PUT", "/v1/models/{model}/golden"): {"examples": []},
    ("POST", "/v1/models/{model}/rollouts"): {"candidate": "1"},
}
#: Routes with a {tenant} path parameter today.
TENANT_ROUTES = {
    ("GET", "/v1/tenants/{tenant}/keys"),
    ("POST", "/v1/tenants/{tenant}/keys"),
    ("POST", "/v1/tenants/{tenant}/keys/{prefix}/revoke"),
    ("POST", "/v1/tenants/{tenant}/keys/{prefix}/rotate"),
    ("POST", "/v1/tenants/{tenant}/suspend"),
    ("POST", "/v1/tenants/{tenant}/resume"),
}
#: The catalog's routes; those naming a product are walked like the model routes.
CATALOG_ROUTES = {
    ("PUT", "/v1/catalog/products/{product_id}"),
    ("GET", "/v1/catalog/products/{product_id}"),
    ("DELETE", "/v1/catalog/products/{product_id}"),
    ("GET", "/v1/catalog/products"),
    ("POST", "/v1/catalog/import"),
}
#: The experiments' routes; those naming an experiment are walked like the model routes.
EXPERIMENT_ROUTES = {
    ("POST", "/v1/experiments"),
    ("GET", "/v1/experiments"),
    ("GET", "/v1/experiments/{experiment_id}"),
    ("PATCH", "/v1/experiments/{experiment_id}"),
    ("DELETE", "/v1/experiments/{experiment_id}"),
    ("POST", "/v1/experiments/{experiment_id}/start"),
    ("POST", "/v1/experiments/{experiment_id}/stop"),
    ("POST", "/v1/experiments/{experiment_id}/runs"),
    ("GET", "/v1/experiments/{experiment_id}/results"),
}
#: Every authenticated route today; the unauthenticated walk must cover at least these.
PROTECTED_ROUTES = (
    MODEL_ROUTES
    | TENANT_ROUTES
    | CATALOG_ROUTES
    | EXPERIMENT_ROUTES
    | {
        ("POST", "/v2/repository/index"),
        ("GET", "/metrics"),
        ("GET", "/v1/tenants"),
        ("POST", "/v1/tenants"),
        ("POST", "/v1/events"),
    }
)
#: A body every POST of the schema accepts (extra fields are ignored by the request models).
GENERIC_BODY = {"scopes": ["read"], "overlap_s": 3600, "name": "probe-zz"}


# --------------------------------------------------------------------------- helpers


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def infer_body() -> dict[str, Any]:
    """Ones into a scale model: the output is its factor, four times."""
    return {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1.0] * 4}]}


def secret_part(key: str) -> str:
    """The random part of a tenant key (after ``mp_<prefix>_``), or the whole admin key."""
    return key.split("_", 2)[2] if KEY_PATTERN.fullmatch(key) else key


@dataclass
class Deployment:
    """A server of its own, with tenants ``acme`` and ``rival`` and a model in each."""

    backend: str
    workdir: Path
    database_url: str
    database_password: str | None
    server: Server
    rival_key: str
    issued: list[str] = field(default_factory=list)
    """Every key this module saw (admin keys included): none may reach a log."""
    log_paths: list[Path] = field(default_factory=list)

    def create_key(self, tenant: str, scopes: list[str], **extra: Any) -> dict[str, Any]:
        """A new key through the admin API (``POST /v1/tenants/{t}/keys``)."""
        response = httpx.post(
            self.server.url(f"/v1/tenants/{tenant}/keys"),
            json={"scopes": scopes, **extra},
            headers=bearer(self.server.admin_key),
            timeout=10,
        )
        assert response.status_code == 201, response.text
        issued: dict[str, Any] = response.json()
        self.issued.append(issued["key"])
        return issued


def _with_password(url: str) -> tuple[str, str | None]:
    """For PostgreSQL, the URL with a password in it (the test server trusts local connections,
    so any password works), to check that it never reaches a log; unchanged if that fails."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("postgresql"):
        return url, None
    if parsed.password:
        return url, str(parsed.password)
    password = "pgpw" + secrets.token_hex(16)
    candidate = parsed.set(password=password).render_as_string(hide_password=False)
    try:
        _pg_fetch(candidate, "SELECT 1")
    except Exception:  # noqa: BLE001 - password authentication: keep the URL as given
        return url, None
    return candidate, password


def _pg_fetch(url: str, sql: str) -> list[Any]:
    import asyncpg

    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)

    async def main() -> list[Any]:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            return list(await conn.fetch(sql))
        finally:
            await conn.close()

    return asyncio.run(main())


def registry_contents(database_url: str) -> bytes:
    """Everything the registry database holds: the SQLite files as bytes, or every row of every
    PostgreSQL table as text."""
    parsed = make_url(database_url)
    if parsed.drivername.startswith("sqlite"):
        path = Path(str(parsed.database))
        files = [path, *(path.with_name(path.name + s) for s in ("-wal", "-shm", "-journal"))]
        return b"".join(f.read_bytes() for f in files if f.exists())
    tables = _pg_fetch(
        database_url,
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()",
    )
    rows: list[str] = []
    for table in tables:
        name = table["tablename"]
        rows += [r[0] for r in _pg_fetch(database_url, f'SELECT t::text FROM "{name}" t')]  # noqa: S608
    assert any("api_keys" == t["tablename"] for t in tables)
    return "\n".join(rows).encode()


def routes(server: Server) -> dict[tuple[str, str], dict[str, Any]]:
    """Every (method, path template) of the server's OpenAPI schema (which is public)."""
    response = httpx.get(server.url("/openapi.json"), timeout=10)
    assert response.status_code == 200, response.text
    return {
        (method.upper(), path): operation
        for path, item in response.json()["paths"].items()
        for method, operation in item.items()
        if method in {"get", "post", "put", "patch", "delete"}
    }


def fill(template: str, **values: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), "1"), template)


def index_status(http: httpx.Client, key: str) -> int:
    """The status of ``POST /v2/repository/index`` (scope ``read``) with ``key``."""
    return http.post("/v2/repository/index", headers=bearer(key)).status_code


def until_refused(
    clients: dict[str, httpx.Client], key: str, start: float, deadline_s: float
) -> dict[str, float]:
    """Poll every server with ``key`` until each answers 401; the seconds since ``start`` at
    which each first did (servers that never did within ``deadline_s`` are left out)."""
    refused: dict[str, float] = {}
    while len(refused) < len(clients) and time.monotonic() - start < deadline_s:
        for name, http in clients.items():
            if name in refused:
                continue
            status = index_status(http, key)
            if status == 401:
                refused[name] = time.monotonic() - start
            else:
                assert status == 200, f"{name}: {status}"
        time.sleep(0.02)
    return refused


def shape(response: httpx.Response, *names: str) -> tuple[int, str | None, Any]:
    """Status, content type and JSON body, with each of ``names`` replaced by a placeholder."""
    text = response.text
    for name in names:
        text = text.replace(name, "<name>")
    try:
        body: Any = json.loads(text) if text else None
    except json.JSONDecodeError:
        body = text
    return response.status_code, response.headers.get("content-type"), body


# --------------------------------------------------------------------------- the deployment


@pytest.fixture(scope="module", params=BACKENDS)
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    backend = str(request.param)
    workdir = tmp_path_factory.mktemp(f"tenancy-{backend}")
    build = workdir / "build"
    with ExitStack() as stack:
        db, password = _with_password(registry_url(backend, workdir, stack, request))
        push_models(
            workdir,
            db,
            [
                Push(SHARED, scale_model(build / TENANT / "shared.onnx", FACTORS[TENANT])),
                Push(PRIVATE, scale_model(build / TENANT / "private.onnx", PRIVATE_FACTOR)),
            ],
            tenant=TENANT,
        )
        push_models(
            workdir,
            db,
            [Push(SHARED, scale_model(build / RIVAL / "shared.onnx", FACTORS[RIVAL]))],
            tenant=RIVAL,
        )
        server = stack.enter_context(running_server(workdir, db, access_log="true"))
        deployment = Deployment(backend, workdir, db, password, server, rival_key="")
        deployment.issued += [server.admin_key, server.key]
        deployment.log_paths.append(server.log_path)
        deployment.rival_key = deployment.create_key(RIVAL, ALL_SCOPES, name="rival")["key"]
        yield deployment


@pytest.fixture
def http(deployment: Deployment) -> Iterator[httpx.Client]:
    """A client of the deployment's server that sends no credentials of its own."""
    with deployment.server.client(auth=None) as client:
        yield client


# --------------------------------------------------------------------------- 1. no key


def test_every_endpoint_but_health_and_server_metadata_needs_a_key(
    deployment: Deployment, http: httpx.Client
) -> None:
    schema = routes(deployment.server)
    protected = {r for r in schema if r not in PUBLIC} | INFER_ROUTES
    missing = PROTECTED_ROUTES - protected
    assert not missing, f"the schema walk misses known routes: {sorted(missing)}"
    for method, template in sorted(protected):
        path = fill(template, model=SHARED, version="1", tenant=TENANT, prefix="0123456789ab")
        response = http.request(method, path)
        where = f"{method} {path}"
        assert response.status_code == 401, f"{where}: {response.status_code} {response.text}"
        assert response.headers["content-type"].startswith("application/json"), where
        assert isinstance(response.json().get("error"), str), where
        assert list(response.json()) == ["error"], where
        assert response.headers.get("www-authenticate", "").startswith("Bearer"), where

    assert http.get("/v2/health/live").json() == {"live": True}
    assert http.get("/v2/health/ready").status_code == 200
    metadata = http.get("/v2")
    assert metadata.status_code == 200 and metadata.json()["name"] == "modelport"
    # Public endpoints stay public whatever credentials come along.
    for path in ("/v2", "/v2/health/live", "/v2/health/ready"):
        assert http.get(path, headers={"Authorization": "Basic xyz"}).status_code == 200, path


def test_a_malformed_or_unknown_authorization_header_gets_401_never_500(
    deployment: Deployment, http: httpx.Client
) -> None:
    tenant_key = deployment.server.key
    wrong_secret = tenant_key[:-1] + ("A" if tenant_key[-1] != "A" else "B")
    headers: list[bytes] = [
        b"",
        b"Bearer",
        b"Basic xyz",
        b"Basic " + base64.b64encode(b"acme:" + tenant_key.encode()),
        b"Token " + tenant_key.encode(),
        b"Bearer not-a-key",
        b"Bearer a b",
        b"Bearer " + tenant_key.encode() + b" trailing",
        b"Bearer mp_0123456789ab_short",
        b"Bearer mp_" + b"0" * 12 + b"_" + b"A" * 43,  # well formed, unknown prefix
        b"Bearer " + wrong_secret.encode(),  # known prefix, wrong secret
        b"Bearer " + deployment.server.admin_key.encode() + b"x",
        b"Bearer \xc3\xa9t\xc3\xa9",
        b"Bearer \xff\xfe",
        b"Bearer " + b"x" * 4000,
    ]
    requests = [
        ("POST", f"/v2/models/{SHARED}/infer"),  # the bare ASGI fast path
        ("POST", f"/v2/models/{SHARED}/versions/1/infer"),
        ("GET", f"/v2/models/{SHARED}"),  # FastAPI
        ("POST", "/v2/repository/index"),
        ("GET", "/metrics"),
        ("GET", "/v1/tenants"),
        ("GET", f"/v1/tenants/{TENANT}/keys"),
    ]
    for value in headers:
        for method, path in requests:
            body = infer_body() if path.endswith("/infer") else None
            response = http.request(method, path, json=body, headers={b"Authorization": value})
            where = f"{method} {path} with Authorization {value[:40]!r}"
            assert response.status_code == 401, f"{where}: {response.status_code} {response.text}"
            assert isinstance(response.json()["error"], str), where
            assert response.headers.get("www-authenticate", "").startswith("Bearer"), where
    # The scheme is case-insensitive, as RFC 9110 says.
    assert (
        http.get(f"/v2/models/{SHARED}", headers={"Authorization": f"bearer {tenant_key}"}).json()[
            "name"
        ]
        == SHARED
    )


def test_a_request_without_a_key_is_refused_before_its_body_is_read(
    deployment: Deployment, http: httpx.Client
) -> None:
    """An anonymous caller must not make the server read and parse a JSON body (up to
    MODELPORT_MAX_REQUEST_BYTES of it): a broken body gets 401, like the infer fast path does."""
    schema = routes(deployment.server)
    with_body = {r for r, op in schema.items() if "requestBody" in op} | INFER_ROUTES
    assert ("POST", "/v1/tenants") in with_body and ("POST", "/v2/repository/index") in with_body
    answers = {}
    for method, template in sorted(with_body):
        path = fill(template, model=SHARED, version="1", tenant=TENANT, prefix="0123456789ab")
        response = http.request(
            method, path, content=b'{"not json', headers={"Content-Type": "application/json"}
        )
        answers[f"{method} {template}"] = f"{response.status_code} {response.text}"
    refused_late = {route: answer for route, answer in answers.items() if answer[:3] != "401"}
    assert not refused_late, f"the body was parsed before the key was checked: {refused_late}"


# --------------------------------------------------------------------------- 2. scopes


def test_scopes_decide_what_a_key_may_do_and_admin_implies_the_others(
    deployment: Deployment, http: httpx.Client
) -> None:
    keys = {
        scope: deployment.create_key(TENANT, [scope], name=f"only-{scope}")["key"]
        for scope in ALL_SCOPES
    }

    def infer(key: str) -> httpx.Response:
        return http.post(f"/v2/models/{SHARED}/infer", json=infer_body(), headers=bearer(key))

    def metadata(key: str) -> httpx.Response:
        return http.get(f"/v2/models/{SHARED}", headers=bearer(key))

    def ready(key: str) -> httpx.Response:
        return http.get(f"/v2/models/{SHARED}/ready", headers=bearer(key))

    def load(key: str) -> httpx.Response:
        return http.post(f"/v2/repository/models/{SHARED}/load", headers=bearer(key))

    def index(key: str) -> httpx.Response:
        return http.post("/v2/repository/index", headers=bearer(key))

    def forbidden(response: httpx.Response, scope: str) -> None:
        assert response.status_code == 403, response.text
        assert f"'{scope}' scope" in response.json()["error"], response.text

    forbidden(infer(keys["read"]), "infer")
    forbidden(load(keys["read"]), "write")
    assert metadata(keys["read"]).status_code == 200
    assert index(keys["read"]).status_code == 200

    assert infer(keys["infer"]).status_code == 200
    forbidden(metadata(keys["infer"]), "read")
    forbidden(ready(keys["infer"]), "read")
    forbidden(index(keys["infer"]), "read")
    forbidden(load(keys["infer"]), "write")

    assert load(keys["write"]).status_code == 200
    forbidden(infer(keys["write"]), "infer")
    forbidden(metadata(keys["write"]), "read")

    admin = keys["admin"]
    response = infer(admin)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [FACTORS[TENANT]] * 4
    assert metadata(admin).status_code == 200
    assert ready(admin).status_code == 200
    assert index(admin).status_code == 200
    assert load(admin).status_code == 200
    # The tenant's admin scope manages the tenant's own keys, but not the platform.
    assert http.get(f"/v1/tenants/{TENANT}/keys", headers=bearer(admin)).status_code == 200
    assert http.get("/v1/tenants", headers=bearer(admin)).status_code == 403


def test_metrics_and_tenants_are_for_the_platform_admin_key_only(
    deployment: Deployment, http: httpx.Client
) -> None:
    tenant = bearer(deployment.server.key)  # every scope, admin included
    platform = bearer(deployment.server.admin_key)
    for method, path, body in [
        ("GET", "/metrics", None),
        ("GET", "/v1/tenants", None),
        ("POST", "/v1/tenants", {"name": "sneaky"}),
        ("POST", f"/v1/tenants/{TENANT}/suspend", None),
        ("POST", f"/v1/tenants/{TENANT}/resume", None),
    ]:
        response = http.request(method, path, json=body, headers=tenant)
        assert response.status_code == 403, f"{method} {path}: {response.text}"
        assert "platform admin" in response.json()["error"]

    metrics = http.get("/metrics", headers=platform)
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "modelport_loaded_model_versions" in metrics.text
    names = {t["name"]: t["status"] for t in http.get("/v1/tenants", headers=platform).json()}
    assert names[TENANT] == "active" and names[RIVAL] == "active" and "sneaky" not in names
    # The platform admin key acts in no tenant: it cannot infer or read models.
    infer = http.post(f"/v2/models/{SHARED}/infer", json=infer_body(), headers=platform)
    assert infer.status_code == 403, infer.text
    assert http.get(f"/v2/models/{SHARED}", headers=platform).status_code == 403
    # Nothing changed for the tenant.
    assert index_status(http, deployment.server.key) == 200


# --------------------------------------------------------------------------- 3. hashed


def test_keys_are_stored_only_as_a_hash_and_never_listed(
    deployment: Deployment, http: httpx.Client
) -> None:
    issued = deployment.create_key(TENANT, ["infer", "read"], name="stored-hashed")
    key = issued["key"]
    match = KEY_PATTERN.fullmatch(key)
    assert match is not None and match.group(1) == issued["prefix"], issued
    assert issued["scopes"] == ["infer", "read"] and issued["tenant"] == TENANT
    assert index_status(http, key) == 200

    stored = registry_contents(deployment.database_url)
    assert hashlib.sha256(key.encode()).hexdigest().encode() in stored, "searched the wrong place"
    assert key.encode() not in stored
    assert secret_part(key).encode() not in stored

    listing = http.get(f"/v1/tenants/{TENANT}/keys", headers=bearer(deployment.server.admin_key))
    assert listing.status_code == 200
    assert key not in listing.text and secret_part(key) not in listing.text
    assert deployment.server.key not in listing.text
    entries = {e["prefix"]: e for e in listing.json()}
    assert issued["prefix"] in entries
    for entry in entries.values():
        assert "key" not in entry and "key_hash" not in entry, entry
    assert entries[issued["prefix"]]["name"] == "stored-hashed"


# --------------------------------------------------------------------------- 4-7. lifecycle


def test_a_revoked_key_is_refused_within_2_s_on_every_replica(
    deployment: Deployment, http: httpx.Client
) -> None:
    key = deployment.create_key(TENANT, ["read"], name="to-revoke")
    with (
        running_server(
            deployment.workdir, deployment.database_url, load_models_on_start="false"
        ) as replica,
        replica.client(auth=None) as replica_http,
    ):
        deployment.issued += [replica.admin_key, replica.key]
        deployment.log_paths.append(replica.log_path)
        clients = {"server": http, "replica": replica_http}
        for name, client in clients.items():  # both replicas now hold the key in their cache
            assert index_status(client, key["key"]) == 200, name

        start = time.monotonic()
        revoke = http.post(
            f"/v1/tenants/{TENANT}/keys/{key['prefix']}/revoke",
            headers=bearer(deployment.server.admin_key),
        )
        assert revoke.status_code == 204, revoke.text
        refused = until_refused(clients, key["key"], start, deadline_s=5.0)
        assert set(refused) == set(clients), f"still accepted after 5 s: {refused}"
        for name, seconds in refused.items():
            assert seconds < PROPAGATION_S, f"{name} refused the key only after {seconds:.2f} s"
        time.sleep(0.2)
        for name, client in clients.items():  # and it stays refused
            assert index_status(client, key["key"]) == 401, name
            assert index_status(client, deployment.server.key) == 200, name

    admin = bearer(deployment.server.admin_key)
    listed = {e["prefix"]: e for e in http.get(f"/v1/tenants/{TENANT}/keys", headers=admin).json()}
    assert listed[key["prefix"]]["revoked_at"] is not None
    again = http.post(f"/v1/tenants/{TENANT}/keys/{key['prefix']}/revoke", headers=admin)
    assert again.status_code == 404, again.text


def test_a_rotated_key_works_through_the_overlap_and_is_refused_after_it(
    deployment: Deployment, http: httpx.Client
) -> None:
    overlap_s = 2.0
    old = deployment.create_key(TENANT, ["read", "infer"], name="rotating")
    assert index_status(http, old["key"]) == 200

    start = time.monotonic()
    response = http.post(
        f"/v1/tenants/{TENANT}/keys/{old['prefix']}/rotate",
        json={"overlap_s": overlap_s},
        headers=bearer(deployment.server.admin_key),
    )
    assert response.status_code == 201, response.text
    new = response.json()
    deployment.issued.append(new["key"])
    assert new["prefix"] != old["prefix"] and new["key"] != old["key"]
    assert new["scopes"] == ["infer", "read"] and new["name"] == "rotating"
    assert index_status(http, new["key"]) == 200  # at once

    accepted = 0
    while (status := index_status(http, old["key"])) == 200:
        accepted += 1
        assert time.monotonic() - start < overlap_s + PROPAGATION_S, "accepted after the overlap"
        time.sleep(0.05)
    # Measured after the response, so the server refused the key at or before this time.
    refused_at = time.monotonic() - start
    assert status == 401, status
    assert accepted > 0
    assert refused_at >= overlap_s - 0.02, f"refused {refused_at:.2f} s into the overlap"
    assert index_status(http, new["key"]) == 200
    assert index_status(http, old["key"]) == 401


def test_rotating_without_a_body_keeps_the_old_key_for_the_default_overlap(
    deployment: Deployment, http: httpx.Client
) -> None:
    """``overlap_s`` defaults to 3600 s (RotateIn), so the body should be optional, as the CLI's
    ``--overlap`` is."""
    old = deployment.create_key(TENANT, ["read"], name="rotate-default")
    admin = bearer(deployment.server.admin_key)
    before = dt.datetime.now(dt.UTC)
    response = http.post(f"/v1/tenants/{TENANT}/keys/{old['prefix']}/rotate", headers=admin)
    assert response.status_code == 201, response.text
    deployment.issued.append(response.json()["key"])
    listed = {e["prefix"]: e for e in http.get(f"/v1/tenants/{TENANT}/keys", headers=admin).json()}
    expires = dt.datetime.fromisoformat(listed[old["prefix"]]["expires_at"])
    assert abs((expires - before).total_seconds() - 3600) < 5
    assert index_status(http, old["key"]) == 200


def test_a_key_works_until_it_expires(deployment: Deployment, http: httpx.Client) -> None:
    start = time.monotonic()
    key = deployment.create_key(TENANT, ["read"], name="short-lived", expires_in_s=1)
    assert index_status(http, key["key"]) == 200
    assert time.monotonic() - start < 0.9, "too slow to see the key working before it expired"
    created = dt.datetime.fromisoformat(key["created_at"])
    expires = dt.datetime.fromisoformat(key["expires_at"])
    assert abs((expires - created).total_seconds() - 1) < 0.1

    refused = until_refused({"server": http}, key["key"], start, deadline_s=5.0)
    assert "server" in refused, "the key still works 5 s after it expired"
    assert 1.0 - 0.02 <= refused["server"] < 1.0 + PROPAGATION_S, refused


def test_suspending_a_tenant_stops_its_keys_and_resuming_restores_them(
    deployment: Deployment, http: httpx.Client
) -> None:
    admin = bearer(deployment.server.admin_key)
    created = http.post("/v1/tenants", json={"name": "quiet"}, headers=admin)
    assert created.status_code == 201, created.text
    key = deployment.create_key("quiet", ["read"], name="quiet")["key"]
    assert index_status(http, key) == 200

    start = time.monotonic()
    suspended = http.post("/v1/tenants/quiet/suspend", headers=admin)
    assert suspended.status_code == 200 and suspended.json()["status"] == "suspended"
    refused = until_refused({"server": http}, key, start, deadline_s=5.0)
    assert refused.get("server", 99) < PROPAGATION_S, refused
    assert index_status(http, deployment.server.key) == 200  # other tenants are unaffected
    statuses = {t["name"]: t["status"] for t in http.get("/v1/tenants", headers=admin).json()}
    assert statuses["quiet"] == "suspended" and statuses[TENANT] == "active"

    start = time.monotonic()
    resumed = http.post("/v1/tenants/quiet/resume", headers=admin)
    assert resumed.status_code == 200 and resumed.json()["status"] == "active"
    while (status := index_status(http, key)) == 401:
        assert time.monotonic() - start < PROPAGATION_S, "the key still fails after resume"
        time.sleep(0.02)
    assert status == 200

    assert http.post(f"/v1/tenants/{MISSING_TENANT}/suspend", headers=admin).status_code == 404


# --------------------------------------------------------------------------- 8. isolation


def test_a_same_named_model_is_served_from_the_callers_own_tenant(
    deployment: Deployment, http: httpx.Client
) -> None:
    for tenant, key in ((TENANT, deployment.server.key), (RIVAL, deployment.rival_key)):
        expected = [FACTORS[tenant]] * 4
        for path in (f"/v2/models/{SHARED}/infer", f"/v2/models/{SHARED}/versions/1/infer"):
            response = http.post(path, json=infer_body(), headers=bearer(key))
            assert response.status_code == 200, f"{tenant} {path}: {response.text}"
            assert response.json()["outputs"][0]["data"] == expected, tenant
        metadata = http.get(f"/v2/models/{SHARED}", headers=bearer(key)).json()
        assert metadata["name"] == SHARED and metadata["versions"] == ["1"]

    def listed(key: str) -> set[str]:
        response = http.post("/v2/repository/index", headers=bearer(key))
        assert response.status_code == 200, response.text
        return {e["name"] for e in response.json()}

    assert listed(deployment.server.key) == {SHARED, PRIVATE}
    assert listed(deployment.rival_key) == {SHARED}


def _probe(
    http: httpx.Client, method: str, template: str, op: dict[str, Any] | None, model: str, key: str
) -> httpx.Response:
    # Deleting probes a version that does not exist: the owner's model keeps its versions.
    version = "999999" if method == "DELETE" else "1"
    path = fill(template, model=model, version=version, alias="probe", action="pause")
    if (method, template) in INFER_ROUTES or template.endswith("/infer"):
        body: Any = infer_body()
    elif (method, template) in PROBE_BODIES:
        body = PROBE_BODIES[(method, template)]
    elif op is not None and "requestBody" in op:
        body = {}
    else:
        body = None
    return http.request(method, path, json=body, headers=bearer(key))


def test_another_tenants_model_answers_exactly_like_a_model_that_exists_nowhere(
    deployment: Deployment, http: httpx.Client
) -> None:
    schema = routes(deployment.server)
    model_routes = {r for r in schema if "{model}" in r[1]} | INFER_ROUTES
    missing = MODEL_ROUTES - model_routes
    assert not missing, f"the schema walk misses known routes: {sorted(missing)}"
    # Unloading is probed last: the owner's probe really unloads the model.
    ordered = sorted(model_routes, key=lambda r: ("unload" in r[1], r))

    for method, template in ordered:
        theirs = _probe(
            http, method, template, schema.get((method, template)), PRIVATE, deployment.rival_key
        )
        nowhere = _probe(
            http, method, template, schema.get((method, template)), GHOST, deployment.rival_key
        )
        assert theirs.status_code != 500, theirs.text
        assert shape(theirs, PRIVATE) == shape(nowhere, GHOST), (
            f"{method} {template}: rival sees acme's model:\n"
            f"  acme's model: {theirs.status_code} {theirs.text}\n"
            f"  no model:     {nowhere.status_code} {nowhere.text}"
        )

    # The probes can tell a model that exists from one that does not (for its owner), so the
    # equality above means the route is scoped by tenant, not that the probe is blind.
    try:
        for method, template in ordered:
            if (method, template) == ("DELETE", "/v1/models/{model}"):
                continue  # the owner's probe would really delete it; the rival's must not
            op = schema.get((method, template))
            own = _probe(http, method, template, op, PRIVATE, deployment.server.key)
            ghost = _probe(http, method, template, op, GHOST, deployment.server.key)
            assert shape(own, PRIVATE) != shape(ghost, GHOST), (
                f"{method} {template}: the probe cannot tell an existing model from a missing "
                f"one even for its owner ({own.status_code} {own.text}); teach _probe this route"
            )
    finally:
        load = http.post(
            f"/v2/repository/models/{PRIVATE}/load", headers=bearer(deployment.server.key)
        )
        assert load.status_code == 200, load.text
    response = http.post(
        f"/v2/models/{PRIVATE}/infer", json=infer_body(), headers=bearer(deployment.server.key)
    )
    assert response.json()["outputs"][0]["data"] == [PRIVATE_FACTOR] * 4


def test_another_tenants_keys_answer_exactly_like_a_tenant_that_does_not_exist(
    deployment: Deployment, http: httpx.Client
) -> None:
    victim = deployment.create_key(TENANT, ["read"], name="victim")
    schema = routes(deployment.server)
    tenant_routes = {r for r in schema if "{tenant}" in r[1]}
    missing = TENANT_ROUTES - tenant_routes
    assert not missing, f"the schema walk misses known routes: {sorted(missing)}"
    rival = bearer(deployment.rival_key)  # every scope of its own tenant, admin included

    for method, template in sorted(tenant_routes):
        body = GENERIC_BODY if "requestBody" in schema[(method, template)] else None
        theirs, nowhere = (
            http.request(
                method, fill(template, tenant=t, prefix=victim["prefix"]), json=body, headers=rival
            )
            for t in (TENANT, MISSING_TENANT)
        )
        assert theirs.status_code in (403, 404), f"{method} {template}: {theirs.text}"
        assert shape(theirs, TENANT) == shape(nowhere, MISSING_TENANT), (
            f"{method} {template}: rival reaches acme's keys:\n"
            f"  acme:    {theirs.status_code} {theirs.text}\n"
            f"  missing: {nowhere.status_code} {nowhere.text}"
        )
    keys = http.get(f"/v1/tenants/{TENANT}/keys", headers=rival)
    assert keys.status_code == 404
    assert keys.json() == {"error": f"tenant '{TENANT}' does not exist"}
    # Nothing happened to acme's key, and rival still manages its own keys.
    assert index_status(http, victim["key"]) == 200
    assert http.get(f"/v1/tenants/{RIVAL}/keys", headers=rival).status_code == 200


def test_another_tenants_products_answer_exactly_like_products_that_exist_nowhere(
    deployment: Deployment, http: httpx.Client
) -> None:
    owner, rival = bearer(deployment.server.key), bearer(deployment.rival_key)
    product = {"title": "acme's secret prototype", "category": ["Lab"]}
    private, ghost = "acme-private-sku", "ghost-sku-zz"
    assert http.put(f"/v1/catalog/products/{private}", json=product, headers=owner).status_code in (
        200,
        201,
    )
    schema = routes(deployment.server)
    product_routes = {r for r in schema if "{product_id}" in r[1]}
    missing = {r for r in CATALOG_ROUTES if "{product_id}" in r[1]} - product_routes
    assert not missing, f"the schema walk misses known routes: {sorted(missing)}"

    def probe(method: str, template: str, sku: str, key: dict[str, str]) -> httpx.Response:
        # A conditional write: it changes nothing unless the product exists for the caller.
        headers = {**key, "If-Match": '"1"'} if method == "PUT" else key
        body = product if method == "PUT" else None
        return http.request(method, fill(template, product_id=sku), json=body, headers=headers)

    for method, template in sorted(product_routes):
        theirs = probe(method, template, private, rival)
        nowhere = probe(method, template, ghost, rival)
        assert theirs.status_code in (404, 412), f"{method} {template}: {theirs.text}"
        assert shape(theirs, private) == shape(nowhere, ghost), (
            f"{method} {template}: rival sees acme's product:\n"
            f"  acme's product: {theirs.status_code} {theirs.text}\n"
            f"  no product:     {nowhere.status_code} {nowhere.text}"
        )
        if method != "DELETE":  # the owner's probe would really delete it
            own = probe(method, template, private, owner)
            none = probe(method, template, ghost, owner)
            assert shape(own, private) != shape(none, ghost), f"{method} {template}: blind probe"

    listed = http.get("/v1/catalog/products?include_deleted=true&limit=1000", headers=rival)
    assert listed.status_code == 200 and private not in listed.text
    imported = http.post(
        "/v1/catalog/import",
        content=json.dumps({"id": private, "title": "rival's own"}).encode(),
        headers=rival,
    )
    assert imported.json()["created"] == 1  # a product of rival's own catalog
    mine = http.get(f"/v1/catalog/products/{private}", headers=owner).json()
    assert mine["title"] == product["title"] and mine["version"] == 1
    theirs = http.get(f"/v1/catalog/products/{private}", headers=rival).json()
    assert theirs["title"] == "rival's own"


def test_another_tenants_products_never_appear_in_search_results_or_facets(
    deployment: Deployment, http: httpx.Client
) -> None:
    owner, rival = bearer(deployment.server.key), bearer(deployment.rival_key)
    secret = {"title": "zyxwquartz prototype lamp", "brand": "AcmeLabs", "category": ["Lab"]}
    assert http.put(
        "/v1/catalog/products/acme-search-sku", json=secret, headers=owner
    ).status_code in (200, 201)
    query = {"query": "zyxwquartz lamp", "facets": ["brand", "category"], "mode": "lexical"}

    def search(key: dict[str, str], **extra: Any) -> dict[str, Any]:
        answer = http.post("/v1/search", json={**query, **extra}, headers=key)
        assert answer.status_code == 200, answer.text
        found: dict[str, Any] = answer.json()
        return found

    deadline = time.monotonic() + 10
    while not search(owner)["hits"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [h["id"] for h in search(owner)["hits"]] == ["acme-search-sku"]
    for mode in ("lexical", "hybrid"):
        theirs = search(rival, mode=mode)
        assert theirs["hits"] == [] and theirs["facets"] == {"brand": {}, "category": {}}, theirs
    # The same words in rival's own catalog: rival finds its product, never acme's.
    own = {"title": "zyxwquartz desk lamp", "brand": "RivalCo", "category": ["Office"]}
    assert http.put(
        "/v1/catalog/products/rival-search-sku", json=own, headers=rival
    ).status_code in (200, 201)
    deadline = time.monotonic() + 10
    while not search(rival)["hits"] and time.monotonic() < deadline:
        time.sleep(0.1)
    theirs = search(rival)
    assert [h["id"] for h in theirs["hits"]] == ["rival-search-sku"]
    assert theirs["facets"] == {"brand": {"RivalCo": 1}, "category": {"Office": 1}}
    assert [h["id"] for h in search(owner)["hits"]] == ["acme-search-sku"]


def test_another_tenants_experiments_answer_exactly_like_experiments_that_exist_nowhere(
    deployment: Deployment, http: httpx.Client
) -> None:
    owner, rival = bearer(deployment.server.key), bearer(deployment.rival_key)
    private, ghost = "acme-private-exp", "ghost-exp-zz"
    definition = {
        "id": private,
        "surface": "recommendations:for-you",
        "unit": "user",
        "variants": [
            {"name": n, "weight": 50, "target": {"kind": "recommendations", "strategy": n}}
            for n in ("popular", "two-stage")
        ],
    }
    created = http.post("/v1/experiments", json=definition, headers=owner)
    assert created.status_code in (201, 409), created.text
    schema = routes(deployment.server)
    experiment_routes = {r for r in schema if "{experiment_id}" in r[1]}
    missing = {r for r in EXPERIMENT_ROUTES if "{experiment_id}" in r[1]} - experiment_routes
    assert not missing, f"the schema walk misses known routes: {sorted(missing)}"
    bodies = {
        "PATCH": {"name": "renamed by a rival"},
        "POST": {
            "variants": [
                {**v, "weight": w} for v, w in zip(definition["variants"], (10, 90), strict=True)
            ]
        },
    }

    def probe(method: str, template: str, experiment: str, key: dict[str, str]) -> httpx.Response:
        body = bodies.get(method) if template.endswith(("}", "/runs")) else None
        path = fill(template, experiment_id=experiment)
        return http.request(method, path, json=body, headers=key)

    # Deleting and stopping are probed last; a rival's probe must change nothing.
    for method, template in sorted(experiment_routes, key=lambda r: (r[0] == "DELETE", r)):
        theirs = probe(method, template, private, rival)
        nowhere = probe(method, template, ghost, rival)
        assert theirs.status_code == 404, f"{method} {template}: {theirs.text}"
        assert shape(theirs, private) == shape(nowhere, ghost), (
            f"{method} {template}: rival sees acme's experiment:\n"
            f"  acme's experiment: {theirs.status_code} {theirs.text}\n"
            f"  no experiment:     {nowhere.status_code} {nowhere.text}"
        )
        if method == "GET":
            own = probe(method, template, private, owner)
            none = probe(method, template, ghost, owner)
            assert shape(own, private) != shape(none, ghost), f"{method} {template}: blind probe"

    listed = http.get("/v1/experiments", headers=rival)
    assert listed.status_code == 200 and private not in listed.text
    mine = http.get(f"/v1/experiments/{private}", headers=owner).json()
    assert mine["status"] == "draft" and mine["run"] == 1 and mine["name"] == private
    assert [e["action"] for e in mine["history"]] == ["created"]


# --------------------------------------------------------------------------- 10. the CLI


def test_the_cli_creates_lists_and_revokes_keys(deployment: Deployment, http: httpx.Client) -> None:
    workdir, db = deployment.workdir, deployment.database_url
    created = run_cli(workdir, db, "tenants", "create", "cli-tenant")
    assert "created tenant cli-tenant" in created.stdout

    issued = run_cli(workdir, db, "keys", "create", "--tenant", "cli-tenant", "--scopes", "infer")
    key = issued.stdout.strip()
    assert issued.stdout == key + "\n", f"stdout is not only the key: {issued.stdout!r}"
    match = KEY_PATTERN.fullmatch(key)
    assert match is not None, issued.stdout
    prefix = match.group(1)
    deployment.issued.append(key)
    assert prefix in issued.stderr and key not in issued.stderr

    def infer_status() -> int:
        return http.post(
            f"/v2/models/{SHARED}/infer", json=infer_body(), headers=bearer(key)
        ).status_code

    # The key authenticates (404: the tenant has no such model) and has only the infer scope.
    assert infer_status() == 404
    assert http.get(f"/v2/models/{SHARED}", headers=bearer(key)).status_code == 403

    # Listing and revoking at once (each CLI start takes seconds): the list shows the prefix
    # whether or not the key is revoked yet.
    with ThreadPoolExecutor(2) as pool:
        listing = pool.submit(run_cli, workdir, db, "keys", "list", "--tenant", "cli-tenant")
        revoked = run_cli(workdir, db, "keys", "revoke", "--tenant", "cli-tenant", prefix)
        listed = listing.result()
    assert f"revoked key {prefix}" in revoked.stdout
    assert prefix in listed.stdout
    assert key not in listed.stdout + listed.stderr
    assert secret_part(key) not in listed.stdout + listed.stderr

    start = time.monotonic()
    while (status := infer_status()) != 401:
        assert status == 404, status
        assert time.monotonic() - start < PROPAGATION_S, "the revoked key still works"
        time.sleep(0.02)

    outputs = created.stdout + issued.stderr + listed.stdout + revoked.stdout + revoked.stderr
    if deployment.database_password:
        assert deployment.database_password not in outputs


# --------------------------------------------------------------------------- 9. logs


def test_secrets_never_reach_the_server_log(deployment: Deployment, http: httpx.Client) -> None:
    """Runs last: the log then holds what every test above did. It also sends every secret
    once more in the ways most likely to be logged: in failing requests."""
    for key in (deployment.server.key, deployment.server.admin_key):
        http.post("/v2/models/nope/infer", content=b"{broken", headers=bearer(key))
        http.get("/v2/models/nope", headers=bearer(key))
        http.get("/v2/no/such/route", headers=bearer(key))
        http.post(f"/v2/models/{SHARED}/infer", headers={"Authorization": f"Basic {key}"})
        http.post("/v1/tenants/acme/keys", json={"scopes": key}, headers=bearer(key))

    assert deployment.log_paths
    logs = {path: path.read_text(errors="replace") for path in deployment.log_paths}
    main_log = logs[deployment.server.log_path]
    assert '"event": "request"' in main_log, "the access log is off: nothing was checked"
    assert '"event": "infer_failed"' in main_log
    secrets_ = {s for s in deployment.issued if s} | {
        secret_part(s) for s in deployment.issued if s
    }
    if deployment.database_password:
        secrets_.add(deployment.database_password)
    assert len(secrets_) > 10
    for path, text in logs.items():
        leaked = sorted(s[:12] + "…" for s in secrets_ if s in text)
        assert not leaked, f"{path.name} holds secrets starting with {leaked}"
