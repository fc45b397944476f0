"""Search through a real ``modelport serve``: the catalog stream into the indexes, ``/v1/search``.

The server embeds with the demo ``minilm`` model (through its own serving core) and re-ranks
with the demo ``ranker``. A filter keeping 1 % of the catalog still fills the page in every
mode; an upsert becomes searchable and a tombstone disappears within 2 s; the answer carries
the request id, each retriever's ranks and scores, facet counts and timings; bad input is 400.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest

from modelport.demo.models import build_minilm, build_ranker, minilm_config, ranker_config
from modelport.wiring import build_services

from .conftest import TENANT, Push, Server, push_models, running_server, settings_for

pytestmark = pytest.mark.integration

SEARCH = "/v1/search"
MODES = ("hybrid", "semantic", "lexical")
CATALOG_SIZE = 1000
RARE_BRAND = "Lumina Rara"
RARE = CATALOG_SIZE // 100  # 1 %


def lamp(i: int) -> dict[str, Any]:
    rare = i % 100 == 0
    return {
        "id": f"lamp-{i:04d}",
        "title": f"{'Brass' if i % 2 else 'Oak'} table lamp model {i}",
        "description": "A warm reading lamp for the living room, dimmable, with a linen shade.",
        "brand": RARE_BRAND if rare else f"Brand {i % 7}",
        "category": ["Home", "Lighting", "Lamps" if i % 3 else "Desk Lamps"],
        "attributes": {"color": "brass" if i % 2 else "oak", "watts": 40 + i % 3 * 20},
        "price": {"amount": 2000 + i * 10, "currency": "EUR"},
        "availability": "in_stock" if i % 5 else "out_of_stock",
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("search")
    db = f"sqlite+aiosqlite:///{workdir / 'registry.db'}"
    build = workdir / "build"
    push_models(
        workdir,
        db,
        [
            Push("minilm", build_minilm(build / "minilm"), minilm_config(), required=True),
            Push("ranker", build_ranker(build / "ranker.onnx"), ranker_config(), required=True),
        ],
    )
    tenants = json.dumps({TENANT: {"rerank_model": "ranker"}})
    with ExitStack() as stack:
        running = stack.enter_context(running_server(workdir, db, search_tenants=tenants))
        with running.client() as http:
            body = "\n".join(json.dumps(lamp(i)) for i in range(CATALOG_SIZE)).encode()
            imported = http.post("/v1/catalog/import", content=body)
            assert imported.status_code == 200 and imported.json()["failed"] == 0
            # The last product's number is a word no other product has; both indexes are
            # written in one step per batch.
            last = f"{CATALOG_SIZE - 1}"
            wait_for(http, lambda a: bool(a["hits"]), 300.0, query=last, mode="lexical", k=1)
        yield running


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def search(http: httpx.Client, **body: Any) -> dict[str, Any]:
    answer = http.post(SEARCH, json=body)
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def wait_for(http: httpx.Client, done: Any, timeout_s: float = 60.0, **body: Any) -> float:
    """Seconds until the search ``body`` answers something ``done`` accepts."""
    started = time.monotonic()
    while True:
        answer = http.post(SEARCH, json=body)
        if answer.status_code == 200 and done(answer.json()):
            return time.monotonic() - started
        assert time.monotonic() - started < timeout_s, answer.text
        time.sleep(0.02)


def ids(answer: dict[str, Any]) -> list[str]:
    return [hit["id"] for hit in answer["hits"]]


@pytest.mark.parametrize("mode", MODES)
def test_a_filter_keeping_one_percent_still_fills_the_page(http: httpx.Client, mode: str) -> None:
    answer = search(
        http, query="brass table lamp", mode=mode, k=RARE, filters={"brands": [RARE_BRAND]}
    )

    assert len(answer["hits"]) == RARE
    assert {h["product"]["brand"] for h in answer["hits"]} == {RARE_BRAND}
    assert set(ids(answer)) == {f"lamp-{i:04d}" for i in range(0, CATALOG_SIZE, 100)}


@pytest.mark.parametrize("mode", MODES)
def test_every_filter_holds_inside_each_retriever(http: httpx.Client, mode: str) -> None:
    filters = {
        "category": ["Home", "Lighting", "Desk Lamps"],
        "min_price": 3000,
        "max_price": 6000,
        "availability": ["in_stock"],
        "attributes": {"color": "oak"},
    }
    answer = search(http, query="lamp", mode=mode, k=20, filters=filters)

    assert len(answer["hits"]) == 20
    for hit in answer["hits"]:
        product = hit["product"]
        assert product["category"] == filters["category"]
        assert 3000 <= product["price"]["amount"] <= 6000
        assert product["availability"] == "in_stock"
        assert product["attributes"]["color"] == "oak"


def test_the_answer_carries_request_id_scores_facets_and_timings(http: httpx.Client) -> None:
    response = http.post(
        SEARCH,
        json={"query": "oak desk lamp", "facets": ["brand", "availability", "attributes.color"]},
        headers={"X-Request-ID": "search-req-1"},
    )
    answer = response.json()

    assert response.status_code == 200 and response.headers["x-request-id"] == "search-req-1"
    assert answer["request_id"] == "search-req-1" and answer["mode"] == "hybrid"
    assert answer["rrf_k"] == 60 and len(answer["hits"]) == 10
    both = [h for h in answer["hits"] if h["semantic"] and h["lexical"]]
    assert both, "hybrid hits carry each retriever's rank and score"
    assert all(h["semantic"]["rank"] >= 1 and h["lexical"]["score"] > 0 for h in both)
    assert all(h["rerank"] is not None for h in answer["hits"])  # acme declares the ranker
    colors = answer["facets"]["attributes.color"]
    assert set(colors) <= {"brass", "oak"} and sum(colors.values()) == answer["candidates"]
    assert sum(answer["facets"]["availability"].values()) == answer["candidates"]
    assert {"embed", "semantic", "lexical", "fusion", "total"} <= set(answer["timings_ms"])


def test_pages_follow_each_other_and_rrf_k_is_settable(http: httpx.Client) -> None:
    body = {"query": "brass lamp", "rerank": False, "rrf_k": 10}
    first = search(http, **body, k=5)
    second = search(http, **body, k=5, offset=5)
    both = search(http, **body, k=10)

    assert first["rrf_k"] == 10
    assert ids(first) + ids(second) == ids(both)
    scores = [h["score"] for h in both["hits"]]
    assert scores == sorted(scores, reverse=True)


def test_an_upsert_becomes_searchable_and_a_tombstone_disappears(http: httpx.Client) -> None:
    product = {**lamp(5000), "title": "Quokkaglow aurora lantern", "brand": "Fresh"}
    del product["id"]
    # The brand filter: only this product passes, so it is found once it is indexed.
    query = {
        "query": "quokkaglow aurora lantern",
        "k": 3,
        "rerank": False,
        "filters": {"brands": ["Fresh"]},
    }
    put = http.put("/v1/catalog/products/fresh-1", json=product)
    assert put.status_code == 201, put.text
    for mode in ("lexical", "semantic"):
        seconds = wait_for(http, lambda a: "fresh-1" in ids(a), 10.0, **query, mode=mode)
        assert seconds < 2.0, f"{mode}: searchable after {seconds:.2f} s"

    assert http.delete("/v1/catalog/products/fresh-1").status_code in (200, 204)
    for mode in MODES:
        seconds = wait_for(http, lambda a: "fresh-1" not in ids(a), 10.0, **query, mode=mode)
        assert seconds < 2.0, f"{mode}: still found {seconds:.2f} s after the delete"


def test_a_changed_product_is_found_by_its_new_words_only(http: httpx.Client) -> None:
    product = {k: v for k, v in lamp(5001).items() if k != "id"}
    http.put("/v1/catalog/products/fresh-2", json={**product, "title": "Wombatlite pendant"})
    wait_for(http, lambda a: "fresh-2" in ids(a), query="wombatlite", mode="lexical")
    http.put("/v1/catalog/products/fresh-2", json={**product, "title": "Platypusglow pendant"})
    wait_for(http, lambda a: "fresh-2" in ids(a), query="platypusglow", mode="lexical")

    assert "fresh-2" not in ids(search(http, query="wombatlite", mode="lexical"))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "query"),
        ({"query": ""}, "query"),
        ({"query": "lamp", "mode": "fuzzy"}, "mode"),
        ({"query": "lamp", "k": 0}, "k"),
        ({"query": "lamp", "k": 101}, "k"),
        ({"query": "lamp", "offset": -1}, "offset"),
        ({"query": "lamp", "rrf_k": 0}, "rrf_k"),
        ({"query": "lamp", "facets": ["colour"]}, "colour"),
        ({"query": "lamp", "filters": {"min_price": 10, "max_price": 5}}, "min_price"),
        ({"query": "lamp", "filters": {"min_price": -1}}, "min_price"),
        ({"query": "lamp", "filters": {"min_price": False}}, "min_price"),
        ({"query": "lamp", "k": "10"}, "k"),
        ({"query": "lamp", "filters": {"availability": ["soon"]}}, "availability"),
        ({"query": "lamp", "filters": {"shape": "round"}}, "shape"),
        ({"query": "lamp", "extra": 1}, "extra"),
        ({"query": "   "}, "query"),
    ],
)
def test_bad_input_is_a_400_naming_the_problem(
    http: httpx.Client, body: dict[str, Any], field: str
) -> None:
    answer = http.post(SEARCH, json=body)

    assert answer.status_code == 400, answer.text
    assert field in answer.json()["error"]


def test_a_body_that_is_not_json_is_a_400(http: httpx.Client) -> None:
    answer = http.post(SEARCH, content=b"{nope", headers={"Content-Type": "application/json"})
    assert answer.status_code == 400


def test_a_catalog_written_before_the_server_started_is_searchable(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """No snapshot yet: the server builds its index from the catalog in SQL (as the demo's
    first start does), then writes a snapshot that its next start restores."""
    workdir = tmp_path_factory.mktemp("search-from-sql")
    db = f"sqlite+aiosqlite:///{workdir / 'registry.db'}"
    push_models(
        workdir, db, [Push("minilm", build_minilm(workdir / "minilm"), minilm_config(), True)]
    )

    async def load() -> None:
        services = await build_services(settings_for(workdir, db))
        try:
            body = "\n".join(json.dumps(lamp(i)) for i in range(50)).encode()
            assert (await services.catalog.import_ndjson(TENANT, body)).counts["failed"] == 0
        finally:
            await services.close()

    asyncio.run(load())
    for start in ("built", "restored"):
        with running_server(workdir, db) as server, server.client() as http:
            wait_for(http, lambda a: ids(a)[:1] == ["lamp-0049"], query="49", mode="lexical")
            answer = search(http, query="oak lamp", mode="semantic", k=50)
            assert len(answer["hits"]) == 50
            log = server.log_path.read_text()
            if start == "built":
                assert "search_index_built_from_catalog" in log
                assert "search_snapshot_written" in log
            else:
                assert "search_snapshot_restored" in log
