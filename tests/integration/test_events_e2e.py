"""Events end to end on a real ``modelport serve`` (the embedded default, which runs the feature
consumer in its own process): events sent over HTTP read back as features over HTTP, and
``modelport events export`` writes what was sent."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator

import pytest

from .conftest import TENANT, Server, run_cli, running_server
from .test_events import ev

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("events-e2e")
    with running_server(workdir, f"sqlite+aiosqlite:///{workdir / 'registry.db'}") as running:
        yield running


def test_events_sent_over_http_are_read_back_as_features_within_seconds(server: Server) -> None:
    # The embedded server runs the feature consumer itself (no Redis, no separate worker).
    now = time.time()
    batch = [
        ev("w1", "view", at=now - 20, user_id="walker", session_id="w", item_ids=["shoe"]),
        ev("w2", "view", at=now - 10, user_id="walker", session_id="w", item_ids=["sock"]),
        ev("w3", "purchase", at=now - 5, user_id="walker", session_id="w", item_ids=["sock"]),
    ]
    query = {
        "features": ["user_recent:view", "user_recent:purchase", "item_popularity:views_total"],
        "entities": {"user": ["walker"], "item": ["shoe"]},
    }
    with server.client() as http:
        assert len(http.post("/v1/events", json={"events": batch}).json()["accepted"]) == 3
        deadline = time.monotonic() + 10
        while True:
            got = http.post("/v1/features/get", json=query)
            if (
                got.status_code == 200
                and got.json()["results"][0]["features"]["user_recent:purchase"]["value"]
                == '["sock"]'
            ):
                break
            assert time.monotonic() < deadline, got.text
            time.sleep(0.05)
        user, item = got.json()["results"]
        assert json.loads(user["features"]["user_recent:view"]["value"]) == ["sock", "shoe"]
        assert item["features"]["item_popularity:views_total"]["value"] == 1


def test_cli_exports_a_tenants_events_as_ndjson(server: Server) -> None:
    now = time.time()
    with server.client() as http:
        start = now - 3 * 86_400
        batch = [ev(f"x{i}", user_id="u", item_ids=["p"], at=start + i) for i in range(3)]
        batch.append(ev("old", user_id="u", item_ids=["p"], at=now - 5 * 86_400))
        assert http.post("/v1/events", json={"events": batch}).json()["accepted"] == [
            "x0", "x1", "x2", "old"
        ]  # fmt: skip
    out = server.workdir / "export.ndjson"
    since = dt.datetime.fromtimestamp(start - 60, dt.UTC).isoformat()
    until = dt.datetime.fromtimestamp(start + 60, dt.UTC).isoformat()
    run_cli(
        server.workdir, server.database_url, "events", "export",
        "--tenant", TENANT, "--since", since, "--until", until, "--out", str(out),
    )  # fmt: skip
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["event_id"] for e in lines] == ["x0", "x1", "x2"]
    assert lines[0]["type"] == "view" and lines[0]["item_ids"] == ["p"]
    assert lines[0]["timestamp"].endswith("Z")
    shown = run_cli(server.workdir, server.database_url, "events", "export", "--tenant", "nobody")
    assert shown.stdout == ""
