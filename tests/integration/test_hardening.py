"""Header limits, security headers, CORS, and secrets kept out of logs, errors and schemas."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from .conftest import Push, Server, push_models, registry_url, running_server
from .onnx_models import scale_model

pytestmark = pytest.mark.integration

ORIGIN = "https://shop.example"
INFER_BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}


@pytest.fixture(scope="module")
def cors_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("hardening")
    db = f"sqlite+aiosqlite:///{workdir / 'registry.db'}"
    push_models(workdir, db, [Push("scale", scale_model(workdir / "scale.onnx", 1.0))])
    with running_server(workdir, db, cors_origins=json.dumps([ORIGIN])) as server:
        yield server


def test_oversized_headers_get_431(cors_server: Server) -> None:
    with cors_server.client() as client:
        response = client.get("/v2/models/scale", headers={"X-Padding": "p" * 20_000})
        assert response.status_code == 431
        assert "headers" in response.json()["error"]
        infer = client.post(
            "/v2/models/scale/infer", json=INFER_BODY, headers={"X-Padding": "p" * 20_000}
        )
        assert infer.status_code == 431


def test_responses_carry_security_headers(cors_server: Server) -> None:
    with cors_server.client() as client:
        for response in (
            client.get("/v2/models/scale"),
            client.get("/docs"),
            client.get("/v2/models/missing"),
        ):
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["x-frame-options"] == "DENY"
            assert response.headers["referrer-policy"] == "no-referrer"
        infer = client.post("/v2/models/scale/infer", json=INFER_BODY)
        assert infer.headers["x-content-type-options"] == "nosniff"
        # The server does not name its software or stack.
        for response in (infer, client.get("/v2/models/scale"), client.get("/v2")):
            assert "server" not in response.headers


def test_cors_allows_only_configured_origins(cors_server: Server) -> None:
    with cors_server.client() as client:
        preflight = client.options(
            "/v2/models/scale/infer",
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == ORIGIN
        allowed = client.post("/v2/models/scale/infer", json=INFER_BODY, headers={"Origin": ORIGIN})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == ORIGIN
        other = client.post(
            "/v2/models/scale/infer", json=INFER_BODY, headers={"Origin": "https://evil.example"}
        )
        assert "access-control-allow-origin" not in other.headers
        meta = client.get("/v2/models/scale", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in meta.headers


def test_cors_is_off_by_default(main_server: Server) -> None:
    with main_server.client() as client:
        response = client.post(
            "/v2/models/ranker/infer",
            json={
                "inputs": [
                    {"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0] * 64}
                ]
            },
            headers={"Origin": ORIGIN},
        )
        assert response.status_code == 200
        assert "access-control-allow-origin" not in response.headers


@pytest.mark.postgres
def test_secrets_never_reach_logs_errors_or_the_schema(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A full run against PostgreSQL with a password in its URL: the password, the admin key
    and every issued key stay out of the server's logs, error bodies and OpenAPI schema."""
    password = "pw-" + secrets.token_hex(12)
    admin_key = "mpadmin_" + secrets.token_urlsafe(32)
    with ExitStack() as stack:
        base = registry_url("postgres", tmp_path, stack, request)
        # The test server trusts local connections, so any password is accepted.
        db = make_url(base).set(password=password).render_as_string(hide_password=False)
        push_models(tmp_path, db, [Push("scale", scale_model(tmp_path / "scale.onnx", 1.0))])
        server = stack.enter_context(
            running_server(tmp_path, db, admin_key=admin_key, access_log="true")
        )
        issued: list[str] = [server.key]
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            admin = {"Authorization": f"Bearer {admin_key}"}
            made = client.post("/v1/tenants/acme/keys", json={"scopes": ["infer"]}, headers=admin)
            assert made.status_code == 201
            issued.append(made.json()["key"])
            bodies = [
                client.post("/v2/models/scale/infer", json=INFER_BODY, headers=admin).text,
                client.get(
                    "/v2/models/scale", headers={"Authorization": "Bearer " + password}
                ).text,
                client.get("/openapi.json").text,
                client.get("/metrics", headers=admin).text,
            ]
            for key in issued:
                auth = {"Authorization": f"Bearer {key}"}
                bodies.append(
                    client.post("/v2/models/scale/infer", json=INFER_BODY, headers=auth).text
                )
                bodies.append(client.post("/v2/models/nope/infer", content=b"{", headers=auth).text)
                bodies.append(client.get("/v1/tenants", headers=auth).text)
        log = server.log_path.read_text(errors="replace")
    assert "model_ready" in log  # the log was captured
    for secret in (password, admin_key, *issued):
        assert secret not in log
        for body in bodies:
            assert secret not in body
