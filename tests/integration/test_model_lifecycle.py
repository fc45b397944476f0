"""A model's life on a running fleet: a push never unreadies a replica, ``push --load`` makes
it served, the CLI reaches the server for what only the server holds, and a model can be
deleted (refused while a rollout depends on it), everywhere at once."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from .conftest import (
    BACKENDS,
    PYTHON,
    TENANT,
    Push,
    Server,
    free_port,
    push_models,
    registry_url,
    run_cli,
    running_server,
)
from .onnx_models import identity_model, scale_model

pytestmark = pytest.mark.integration

X = {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1.0, 2.0, 3.0, 4.0]}


def infer(client: httpx.Client, model: str) -> httpx.Response:
    return client.post(f"/v2/models/{model}/infer", json={"inputs": [X]})


def eventually(check: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def cli(server: Server, *args: str, check: bool = True) -> str:
    result = run_cli(server.workdir, server.database_url, *args, check=check)
    return result.stdout + result.stderr


def point_cli_at(server: Server) -> None:
    """What ``modelport demo`` writes: the CLI's tenant and server, and its key."""
    var = server.workdir / "var"
    var.mkdir(exist_ok=True)
    (var / "tenant.key").write_text(server.key + "\n")
    (var / "cli.json").write_text(
        json.dumps({"tenant": TENANT, "server": server.base_url, "key_file": "var/tenant.key"})
    )


@pytest.fixture(scope="module", params=BACKENDS)
def fleet(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A server serving one required model, ``base``."""
    workdir = tmp_path_factory.mktemp(f"lifecycle-{request.param}")
    with ExitStack() as stack:
        db = registry_url(request.param, workdir, stack, request)
        push_models(workdir, db, [Push("base", scale_model(workdir / "base.onnx", 1.0))])
        server = stack.enter_context(running_server(workdir, db))
        point_cli_at(server)
        yield server


def test_pushing_a_new_model_leaves_the_server_ready(fleet: Server, tmp_path: Path) -> None:
    with fleet.client() as client:
        assert client.get("/v2/health/ready").status_code == 200
        out = cli(fleet, "models", "push", "newcomer", str(scale_model(tmp_path / "n.onnx", 3.0)))
        assert "registered newcomer version 1" in out
        # Longer than a release-sync interval: nothing this replica serves changed.
        for _ in range(15):
            assert client.get("/v2/health/ready").status_code == 200
            time.sleep(0.1)
        assert client.get("/v2/models/newcomer/ready").status_code == 503
        assert infer(client, "newcomer").status_code == 503


def test_push_with_load_serves_the_new_model(fleet: Server, tmp_path: Path) -> None:
    path = scale_model(tmp_path / "served.onnx", 2.0)
    out = cli(fleet, "models", "push", "served", str(path), "--load")
    assert "registered served version 1" in out
    # The CLI returns once the server in var/cli.json serves it: the next infer is a 200.
    assert f"serving served version 1 on {fleet.base_url}" in out
    with fleet.client() as client:
        response = infer(client, "served")
        assert response.status_code == 200, response.text
        assert response.json()["outputs"][0]["data"] == [2.0, 4.0, 6.0, 8.0]
        assert client.get("/v1/models/served").json()["aliases"] == {"production": "1"}
        assert client.get("/v2/health/ready").status_code == 200
        # Now served here, the model counts for readiness like the others.
        history = client.get("/v1/models/served/history").json()
        assert [e["action"] for e in history][:2] == ["alias_moved", "version_pushed"]


def test_cli_defaults_to_the_tenant_in_its_config(fleet: Server, tmp_path: Path) -> None:
    """With var/cli.json naming the tenant, no --tenant and no MODELPORT_TENANT is needed."""
    workdir = fleet.workdir
    env = {k: v for k, v in fleet.env.items() if k != "MODELPORT_TENANT"}
    listed = subprocess.run(
        [sys.executable, "-m", "modelport", "models", "list"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "base" in listed.stdout
    elsewhere = subprocess.run(
        [sys.executable, "-m", "modelport", "models", "list", "--tenant", "nobody"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "base" not in elsewhere.stdout


def test_deleting_a_model(fleet: Server, tmp_path: Path) -> None:
    push_models(
        fleet.workdir,
        fleet.database_url,
        [
            Push("doomed", scale_model(tmp_path / "v1" / "doomed.onnx", 1.0)),
            Push("doomed", scale_model(tmp_path / "v2" / "doomed.onnx", 2.0)),
        ],
    )
    artifacts = fleet.workdir / "artifacts" / TENANT / "doomed"
    assert len(list(artifacts.rglob("*.onnx"))) == 2
    with fleet.client() as client:
        moved = client.put("/v1/models/doomed/aliases/production", json={"version": "1"})
        assert moved.status_code == 200, moved.text
        started = client.post(
            "/v1/models/doomed/rollouts", json={"candidate": "2", "plan": {"hold_s": 3600}}
        )
        assert started.status_code == 201, started.text
        assert client.post("/v1/models/doomed/rollouts/current/pause").status_code == 200
        assert infer(client, "doomed").status_code == 200

        refused = client.delete("/v1/models/doomed")
        assert refused.status_code == 409
        assert f"rollout {started.json()['id']} (paused" in refused.json()["error"]
        assert infer(client, "doomed").status_code == 200

        assert client.post("/v1/models/doomed/rollouts/current/abort").status_code == 200
        deleted = client.delete("/v1/models/doomed", params={"reason": "retired"})
        assert deleted.status_code == 204, deleted.text

        assert client.get("/v1/models/doomed").status_code == 404
        assert infer(client, "doomed").status_code == 404
        assert client.get("/v2/models/doomed/ready").status_code == 404
        assert "doomed" not in {m["name"] for m in client.get("/v1/models").json()}
        assert client.get("/v2/health/ready").status_code == 200
        assert client.delete("/v1/models/doomed").status_code == 404
        assert not artifacts.exists()

        # The name can be used again; its numbers go on, and the history keeps the deletion.
        push_models(
            fleet.workdir,
            fleet.database_url,
            [Push("doomed", scale_model(tmp_path / "v3" / "doomed.onnx", 3.0))],
        )
        assert client.get("/v1/models/doomed").json()["versions"][0]["version"] == "3"
        history = client.get("/v1/models/doomed/history").json()
        deletion = next(e for e in history if e["action"] == "model_deleted")
        assert deletion["reason"] == "retired"
        assert deletion["actor"].startswith("key:")
        assert deletion["from_ref"] == "1,2"
        client.delete("/v1/models/doomed")


def loaded_versions(client: httpx.Client) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("modelport_loaded_model_versions "):
            return float(line.split()[1])
    raise AssertionError("no modelport_loaded_model_versions in /metrics")


def test_a_model_deleted_from_the_cli_leaves_the_running_server(
    fleet: Server, tmp_path: Path
) -> None:
    """The CLI writes the registry only; the server unloads through the release state."""
    out = cli(
        fleet,
        "models",
        "push",
        "gone",
        str(identity_model(tmp_path / "g.onnx", "FP32", ("b", 4))),
        "--load",
    )
    assert "serving gone version 1" in out
    with fleet.client() as client:
        assert infer(client, "gone").status_code == 200
        before = loaded_versions(client)
        out = cli(fleet, "models", "delete", "gone", "--yes", "--reason", "cleanup")
        assert "deleted gone (versions 1)" in out
        eventually(lambda: loaded_versions(client) == before - 1)
        assert infer(client, "gone").status_code == 404
        assert client.get("/v2/health/ready").status_code == 200
    refused = run_cli(
        fleet.workdir, fleet.database_url, "models", "delete", "gone", "--yes", check=False
    )
    assert refused.returncode == 1
    assert "gone" in refused.stdout


def test_features_pushed_from_the_cli_reach_the_running_server(
    fleet: Server, tmp_path: Path
) -> None:
    """The embedded online store (no Redis) lives in the server's memory: the CLI pushes
    through the server named in var/cli.json, and the server reads the values at once."""
    views = tmp_path / "views.yaml"
    views.write_text(
        "views:\n  - name: stats\n    entity: user\n    ttl_s: 86400\n"
        "    features:\n      - {name: clicks, dtype: int}\n"
    )
    cli(fleet, "features", "apply", str(views))
    rows = tmp_path / "rows.json"
    rows.write_text(
        json.dumps([{"entity": "u1", "values": {"clicks": 7}, "event_timestamp": time.time()}])
    )
    out = cli(fleet, "features", "push", "stats", str(rows))
    assert "stats: 1 written, 0 stale" in out
    with fleet.client() as client:
        got = client.post(
            "/v1/features/get", json={"features": ["stats:clicks"], "entities": {"user": ["u1"]}}
        )
        assert got.status_code == 200, got.text
        assert "7" in got.text and "present" in got.text


README = Path(__file__).resolve().parents[2] / "README.md"


def readme_block(section: str) -> str:
    """The first ``sh`` block under the README heading ``section``."""
    text = README.read_text()
    start = text.index(f"## {section}\n")
    block = re.search(r"```sh\n(.*?)```", text[start:], re.S)
    assert block is not None, f"no sh block under {section}"
    return block.group(1)


def test_readme_registering_section_ends_in_a_200(tmp_path: Path) -> None:
    """The README's steps, word for word, on what ``make run`` starts (``modelport demo`` in a
    fresh folder; only its port and the way the CLI is called differ)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELPORT_")}
    env.update({"MODELPORT_PORT": str(port), "PYTHONUNBUFFERED": "1", "COLUMNS": "200"})
    log = (tmp_path / "demo.log").open("wb")
    demo = subprocess.Popen(
        [PYTHON, "-m", "modelport", "demo"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=5.0) as http:

            def ready() -> bool:
                assert demo.poll() is None, (tmp_path / "demo.log").read_text()
                try:
                    return http.get("/v2/health/ready").status_code == 200
                except httpx.TransportError:
                    return False

            eventually(ready, timeout_s=90.0)
            steps = (
                readme_block("Registering models")
                .replace("127.0.0.1:8080", f"127.0.0.1:{port}")
                .replace(".venv/bin/modelport", f"{PYTHON} -m modelport")
            )
            done = subprocess.run(
                ["/bin/bash", "-euo", "pipefail", "-c", steps],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=180,
                check=False,
            )
            assert done.returncode == 0, done.stdout + done.stderr
            assert f"serving scorer version 1 on {base}" in done.stdout
            answer = re.search(r'\{"model_name":"scorer".*?\]\}\]\}', done.stdout)
            assert answer is not None, done.stdout
            assert json.loads(answer.group(0))["outputs"][0]["shape"] == [1, 1]
            assert "deleted scorer (versions 1)" in done.stdout
            assert http.get("/v2/health/ready").status_code == 200
    finally:
        os.killpg(demo.pid, signal.SIGTERM)
        demo.wait(timeout=30)
        log.close()
