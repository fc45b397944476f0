"""Two ``modelport serve`` replicas on one PostgreSQL and one Redis: each follows the catalog
stream into its own search index and they answer alike; a replica restarted while the catalog
changes restores the newest snapshot, replays the stream from its position and answers like
the replica that stayed up."""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from modelport.demo.catalog import products
from modelport.demo.models import build_minilm, minilm_config

from .conftest import Push, Server, _stop, postgres_database, push_models, running_server

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

REDIS_URL = os.environ.get("MODELPORT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
CATALOG = list(products(300))
QUERIES = [
    {"query": "comfy grey sofa", "mode": mode, "k": 10, "include_products": False}
    for mode in ("hybrid", "semantic", "lexical")
] + [
    {
        "query": "stainless steel pan",
        "filters": {"category": ["Home", "Kitchen"]},
        "facets": ["brand"],
        "k": 10,
        "include_products": False,
    }
]


def answers(server: Server) -> list[Any]:
    """What each query answers: hits (ids, ranks, rounded scores) and facets."""
    out = []
    with server.client() as http:
        for query in QUERIES:
            answer = http.post("/v1/search", json=query)
            assert answer.status_code == 200, answer.text
            body = answer.json()
            out.append(
                (
                    [
                        (h["id"], round(h["score"], 4), h["semantic"] and h["semantic"]["rank"])
                        for h in body["hits"]
                    ],
                    body["facets"],
                )
            )
    return out


def finds(server: Server, sku: str, title: str) -> bool:
    with server.client() as http:
        answer = http.post("/v1/search", json={"query": title, "mode": "lexical", "k": 5})
    return answer.status_code == 200 and sku in [h["id"] for h in answer.json()["hits"]]


def stop(server: Server) -> None:
    _stop(server)


def wait(check: Any, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, postgres_admin_url: str
) -> Iterator[tuple[Path, str, dict[str, str]]]:
    workdir = tmp_path_factory.mktemp("search-replicas")
    with ExitStack() as stack:
        db = stack.enter_context(postgres_database(postgres_admin_url))
        push_models(
            workdir,
            db,
            [Push("minilm", build_minilm(workdir / "build" / "minilm"), minilm_config(), True)],
        )
        settings = {
            "redis_url": REDIS_URL,
            "stream_key_prefix": f"mp-test-{secrets.token_hex(4)}:s",
            "search_snapshot_interval_s": "1",
            "workers_in_process": "false",
        }
        yield workdir, db, settings


def test_a_restarted_replica_serves_the_same_results_as_the_others(
    deployment: tuple[Path, str, dict[str, str]],
) -> None:
    workdir, db, settings = deployment
    with ExitStack() as stack:
        first = stack.enter_context(running_server(workdir, db, **settings))
        second = stack.enter_context(running_server(workdir, db, **settings))
        with first.client() as http:
            body = "\n".join(json.dumps(p) for p in CATALOG).encode()
            assert http.post("/v1/catalog/import", content=body).json()["failed"] == 0
        last = CATALOG[-1]
        for server in (first, second):
            wait(lambda s=server: finds(s, last["id"], last["title"]))
        assert answers(first) == answers(second)
        wait(lambda: "search_snapshot_written" in first.log_path.read_text())

        # Stop the second replica (its context only stops it again, which does nothing);
        # change the catalog while it is down.
        stop(second)
        changed = {**CATALOG[0], "title": "Zanzibar velvet chaise longue"}
        changed.pop("id")
        with first.client() as http:
            put = http.put(f"/v1/catalog/products/{CATALOG[0]['id']}", json=changed)
            assert put.status_code == 200, put.text
            assert http.delete(f"/v1/catalog/products/{CATALOG[1]['id']}").status_code in (200, 204)
        wait(lambda: finds(first, CATALOG[0]["id"], "zanzibar chaise"))

        restarted = stack.enter_context(running_server(workdir, db, **settings))
        wait(lambda: finds(restarted, CATALOG[0]["id"], "zanzibar chaise"))
        assert not finds(restarted, CATALOG[1]["id"], CATALOG[1]["title"])
        assert "search_snapshot_restored" in restarted.log_path.read_text()
        assert answers(restarted) == answers(first)
