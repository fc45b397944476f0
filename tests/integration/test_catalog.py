"""The catalog through a real ``modelport serve``, on SQLite and PostgreSQL.

Products are written, read with ETags (304 while current), written conditionally (412 when
stale), deleted into tombstones that listings with ``include_deleted`` and the outbox show,
listed a page at a time while others write, and imported as NDJSON with an answer per line.
Imports honour ``Idempotency-Key``: a retry replays the first answer, another body with the key
is 422, and concurrent requests with one key have one effect.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from modelport.stores.sql import create_engine
from modelport.stores.sql.schema import outbox, stream_messages

from .conftest import BACKENDS, PYTHON, Server, modelport_env, registry_url, run_cli, running_server

pytestmark = pytest.mark.integration

PRODUCTS = "/v1/catalog/products"
IMPORT = "/v1/catalog/import"


def product(title: str = "Chef's knife", **extra: Any) -> dict[str, Any]:
    return {
        "title": title,
        "description": "Forged steel, 20 cm.",
        "brand": "Hoffmann",
        "category": ["Home", "Kitchen", "Knives"],
        "attributes": {"blade_cm": 20, "dishwasher_safe": False, "colors": ["black"]},
        "price": {"amount": 4999, "currency": "EUR"},
        "availability": "in_stock",
        "images": ["https://img.example/knife.jpg"],
        **extra,
    }


def ndjson(lines: list[Any]) -> bytes:
    return b"".join(
        (line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n" for line in lines
    )


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    backend = str(request.param)
    workdir = tmp_path_factory.mktemp(f"catalog-{backend}")
    with ExitStack() as stack:
        db = registry_url(backend, workdir, stack, request)
        yield stack.enter_context(running_server(workdir, db))


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def catalog_messages(server: Server, prefix: str) -> list[tuple[str, dict[str, Any]]]:
    """Catalog messages whose key starts with ``prefix``, by key: still in the outbox, or
    already published to the embedded stream by the relay."""

    async def main() -> dict[str, dict[str, Any]]:
        engine = create_engine(server.database_url)
        found: dict[str, dict[str, Any]] = {}
        try:
            async with engine.connect() as conn:
                for table in (outbox, stream_messages):
                    rows = await conn.execute(
                        select(table.c.key, table.c.payload).where(
                            table.c.topic == "catalog",
                            table.c.key.startswith(prefix, autoescape=True),
                        )
                    )
                    found.update((r.key, r.payload) for r in rows)
        finally:
            await engine.dispose()
        return found

    return sorted(asyncio.run(main()).items())


# --------------------------------------------------------------------------- ETags


def test_a_product_is_created_then_replaced_and_its_etag_follows_its_version(
    http: httpx.Client,
) -> None:
    created = http.put(f"{PRODUCTS}/knife-1", json=product())
    assert created.status_code == 201, created.text
    assert created.headers["etag"] == '"1"'
    assert created.headers["location"] == f"{PRODUCTS}/knife-1"
    body = created.json()
    assert body["category"] == ["Home", "Kitchen", "Knives"]
    assert body["price"] == {"amount": 4999, "currency": "EUR"} and body["version"] == 1

    read = http.get(f"{PRODUCTS}/knife-1")
    assert read.status_code == 200 and read.headers["etag"] == '"1"'
    assert read.json() == body
    unchanged = http.get(f"{PRODUCTS}/knife-1", headers={"If-None-Match": '"1"'})
    assert unchanged.status_code == 304 and unchanged.content == b""
    assert unchanged.headers["etag"] == '"1"'

    same = http.put(f"{PRODUCTS}/knife-1", json=product())
    assert (same.status_code, same.headers["etag"]) == (200, '"1"')  # nothing changed
    replaced = http.put(
        f"{PRODUCTS}/knife-1", json=product(price={"amount": 3999, "currency": "EUR"})
    )
    assert (replaced.status_code, replaced.headers["etag"]) == (200, '"2"')
    stale = http.get(f"{PRODUCTS}/knife-1", headers={"If-None-Match": '"1"'})
    assert stale.status_code == 200 and stale.json()["price"]["amount"] == 3999
    assert http.get(f"{PRODUCTS}/knife-1", headers={"If-None-Match": 'W/"2"'}).status_code == 304


def test_a_write_with_a_stale_if_match_is_412_and_changes_nothing(http: httpx.Client) -> None:
    assert http.put(f"{PRODUCTS}/knife-2", json=product()).status_code == 201
    assert (
        http.put(f"{PRODUCTS}/knife-2", json=product("v2"), headers={"If-Match": '"1"'}).status_code
        == 200
    )

    body: dict[str, Any] | None
    for method, body in (("PUT", product("v3")), ("DELETE", None)):
        for tag in ('"1"', 'W/"2"', '"nonsense"'):
            refused = http.request(
                method, f"{PRODUCTS}/knife-2", headers={"If-Match": tag}, json=body
            )
            assert refused.status_code == 412, (method, tag, refused.text)
            assert "version 2" in refused.json()["error"] and "ETag" in refused.json()["error"]
    missing = http.put(f"{PRODUCTS}/knife-zz", json=product(), headers={"If-Match": "*"})
    assert missing.status_code == 412 and "does not exist" in missing.json()["error"]
    assert http.get(f"{PRODUCTS}/knife-zz").status_code == 404

    # If-None-Match: * creates only; a create-only retry cannot overwrite what was written since.
    create = {"If-None-Match": "*"}
    assert http.put(f"{PRODUCTS}/knife-new", json=product(), headers=create).status_code == 201
    twice = http.put(f"{PRODUCTS}/knife-new", json=product("other"), headers=create)
    assert twice.status_code == 412 and "exists at version 1" in twice.json()["error"]
    other_tag = {"If-None-Match": '"5"'}
    assert (
        http.put(f"{PRODUCTS}/knife-new", json=product("v2"), headers=other_tag).status_code == 200
    )

    current = http.get(f"{PRODUCTS}/knife-2")
    assert (current.json()["title"], current.headers["etag"]) == ("v2", '"2"')
    assert (
        http.put(
            f"{PRODUCTS}/knife-2", json=product("v3"), headers={"If-Match": '"7", "2"'}
        ).status_code
        == 200
    )


# --------------------------------------------------------------------------- tombstones


def test_a_deleted_product_reads_as_missing_and_leaves_a_tombstone_for_sync_and_the_outbox(
    server: Server, http: httpx.Client
) -> None:
    assert http.put(f"{PRODUCTS}/gone-1", json=product()).status_code == 201
    deleted = http.delete(f"{PRODUCTS}/gone-1", headers={"If-Match": '"1"'})
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["deleted"] is True and deleted.headers["etag"] == '"2"'

    gone, never = http.get(f"{PRODUCTS}/gone-1"), http.get(f"{PRODUCTS}/never-1")
    assert gone.status_code == never.status_code == 404
    assert gone.json()["error"].replace("gone-1", "x") == never.json()["error"].replace(
        "never-1", "x"
    )
    assert http.delete(f"{PRODUCTS}/gone-1").status_code == 404

    listed = http.get(PRODUCTS, params={"include_deleted": "true", "limit": 1000}).json()["items"]
    assert {"id": "gone-1", "deleted": True, "version": 2} in [
        {k: p[k] for k in ("id", "deleted", "version")} for p in listed
    ]
    assert "gone-1" not in [
        p["id"] for p in http.get(PRODUCTS, params={"limit": 1000}).json()["items"]
    ]

    messages = catalog_messages(server, "acme:gone-1:")
    assert [k for k, _ in messages] == ["acme:gone-1:1", "acme:gone-1:2"]
    assert messages[0][1]["title"] == "Chef's knife"
    assert messages[1][1]["deleted"] is True and messages[1][1]["id"] == "gone-1"

    again = http.put(f"{PRODUCTS}/gone-1", json=product())
    assert (again.status_code, again.headers["etag"]) == (201, '"3"')


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        (
            "ok-1",
            product(price={"amount": 10, "currency": "euro"}),
            "price.currency: a currency is an ISO 4217",
        ),
        ("ok-1", product(images=["http://x.example/a.jpg"]), "an image is an https:// URL"),
        ("ok-1", product(availability="sold"), "availability"),
        ("ok-1", product(colour="red"), "colour: unknown field"),
        ("ok-1", {"description": "no title"}, "title: Field required"),
        ("ok-1", product(attributes={"k": {"nested": 1}}), "attributes.k"),
        ("bad%20id", product(), "product_id: a product id is 1-128 letters"),
    ],
)
def test_an_invalid_product_is_400_naming_the_field_and_what_is_accepted(
    http: httpx.Client, path: str, body: Any, expected: str
) -> None:
    response = http.put(f"{PRODUCTS}/{path}", json=body)
    assert response.status_code == 400, response.text
    assert expected in response.json()["error"]


# --------------------------------------------------------------------------- import


def test_an_import_answers_per_line_and_a_bad_line_stops_nothing(http: httpx.Client) -> None:
    body = ndjson(
        [
            {"id": "imp-1", **product("one")},
            b"{not json",
            {"id": "imp-2", **product("two", price={"amount": 5, "currency": "eur"})},
            b"",
            {"id": "imp-3", **product("three")},
            {"id": "imp-1", **product("one, again")},
            {"title": "no id"},
        ]
    )
    response = http.post(IMPORT, content=body, headers={"Content-Type": "application/x-ndjson"})
    assert response.status_code == 200, response.text
    report = response.json()
    assert {k: report[k] for k in ("created", "updated", "unchanged", "failed")} == {
        "created": 2, "updated": 1, "unchanged": 0, "failed": 3,
    }  # fmt: skip
    by_line = {r["line"]: r for r in report["results"]}
    assert sorted(by_line) == [1, 2, 3, 5, 6, 7]
    assert by_line[1] == {"line": 1, "id": "imp-1", "status": "created", "version": 1}
    assert by_line[2]["status"] == "failed" and "not a JSON object" in by_line[2]["reason"]
    assert by_line[3]["id"] == "imp-2" and "price.currency" in by_line[3]["reason"]
    assert by_line[6] == {"line": 6, "id": "imp-1", "status": "updated", "version": 2}
    assert "id: Field required" in by_line[7]["reason"]

    empty = http.post(IMPORT, content=b"\n \n")
    assert empty.status_code == 400 and "no product" in empty.json()["error"]
    assert http.get(f"{PRODUCTS}/imp-1").json()["title"] == "one, again"
    assert http.get(f"{PRODUCTS}/imp-2").status_code == 404
    assert http.get(f"{PRODUCTS}/imp-3").json()["title"] == "three"


def test_an_import_retried_with_its_idempotency_key_is_answered_from_the_first_run(
    http: httpx.Client,
) -> None:
    body = ndjson([{"id": f"idem-{i}", **product(f"p{i}")} for i in range(5)])
    key = {"Idempotency-Key": "import-batch-0001"}
    first = http.post(IMPORT, content=body, headers=key)
    assert first.status_code == 200 and "idempotent-replayed" not in first.headers
    assert first.json()["created"] == 5
    http.put(f"{PRODUCTS}/idem-0", json=product("changed since"))

    replay = http.post(IMPORT, content=body, headers=key)
    assert replay.status_code == 200 and replay.headers["idempotent-replayed"] == "true"
    assert replay.content == first.content  # not run again: "created", not "updated"
    assert http.get(f"{PRODUCTS}/idem-0").json()["title"] == "changed since"

    other = http.post(IMPORT, content=body + ndjson([{"id": "idem-9", **product()}]), headers=key)
    assert other.status_code == 422 and "another request" in other.json()["error"]
    assert http.get(f"{PRODUCTS}/idem-9").status_code == 404

    bad_key = http.post(IMPORT, content=body, headers={"Idempotency-Key": "x" * 256})
    assert bad_key.status_code == 400 and "Idempotency-Key" in bad_key.text


def test_concurrent_imports_with_one_idempotency_key_have_one_effect(
    server: Server, http: httpx.Client
) -> None:
    lines = [{"id": f"conc-{i:04d}", **product(f"title {i}")} for i in range(3000)]
    body = ndjson(lines)
    key = {"Idempotency-Key": "concurrent-0001"}
    start = threading.Barrier(6)

    def send(_: int) -> httpx.Response:
        with server.client() as client:
            start.wait()
            return client.post(IMPORT, content=body, headers=key)

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(send, range(6)))
    ran = [a for a in answers if a.status_code == 200 and "idempotent-replayed" not in a.headers]
    assert len(ran) == 1, [(a.status_code, a.text[:100]) for a in answers]
    for answer in answers:
        if answer is ran[0]:
            continue
        if answer.status_code == 409:
            assert "still in progress" in answer.json()["error"]
        else:
            assert answer.status_code == 200 and answer.content == ran[0].content
    assert ran[0].json()["created"] == 3000
    # One effect: each product was written once (one version, one outbox message).
    deadline = time.monotonic() + 30
    while True:
        replay = http.post(IMPORT, content=body, headers=key)
        if replay.status_code == 200:
            break
        assert replay.status_code == 409 and time.monotonic() < deadline
        time.sleep(0.1)
    assert replay.content == ran[0].content
    assert len(catalog_messages(server, "acme:conc-0001:")) == 1


# --------------------------------------------------------------------------- listing


def test_listing_pages_through_every_product_once_while_others_write(
    server: Server, http: httpx.Client
) -> None:
    ids = [f"page-{i:04d}" for i in range(400)]
    assert (
        http.post(IMPORT, content=ndjson([{"id": i, **product(i)} for i in ids])).json()["created"]
        == 400
    )
    listing_done = threading.Event()
    touched: set[str] = set()

    def writer() -> None:
        # One writer: commits in updated_at order, as the listing's guarantee assumes.
        with server.client() as client:
            n = 0
            while not listing_done.is_set() and n < 2000:
                target = ids[(n * 37) % len(ids)]
                assert (
                    client.put(f"{PRODUCTS}/{target}", json=product(f"{target} #{n}")).status_code
                    == 200
                )
                touched.add(target)
                client.put(f"{PRODUCTS}/page-new-{n:04d}", json=product())
                n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    seen: list[str] = []
    cursor = None
    try:
        while True:
            params: dict[str, Any] = {"limit": 25, "category": "Home > Kitchen"}
            if cursor:
                params["cursor"] = cursor
            page = http.get(PRODUCTS, params=params)
            assert page.status_code == 200, page.text
            seen += [p["id"] for p in page.json()["items"] if p["id"].startswith("page-")]
            cursor = page.json()["next_cursor"]
            if cursor is None:
                break
    finally:
        listing_done.set()
        thread.join()
    originals = [i for i in seen if not i.startswith("page-new-")]
    assert set(originals) == set(ids), "a product was skipped"
    untouched = [i for i in originals if i not in touched]
    assert len(untouched) == len(set(untouched)), "an unchanged product was listed twice"
    assert touched, "the writer wrote nothing while the listing ran"


def test_listing_filters_by_category_brand_price_availability_and_time(http: httpx.Client) -> None:
    def priced(amount: int | None) -> dict[str, Any] | None:
        return None if amount is None else {"amount": amount, "currency": "EUR"}

    rows = [
        ("flt-a", ["Garden", "Tools"], "Gardena", 1000, "in_stock"),
        ("flt-b", ["Garden", "Tools", "Shears"], "Fiskars", 2500, "in_stock"),
        ("flt-c", ["Gardening books"], "Gardena", 3000, "preorder"),
        ("flt-d", ["Garden"], "Gardena", None, "out_of_stock"),
    ]
    lines = [
        {"id": i, **product(category=c, brand=b, price=priced(p), availability=a)}
        for i, c, b, p, a in rows
    ]
    assert http.post(IMPORT, content=ndjson(lines)).json()["created"] == 4

    def ids(**params: Any) -> list[str]:
        answer = http.get(PRODUCTS, params={"limit": 1000, **params})
        assert answer.status_code == 200, answer.text
        return sorted(p["id"] for p in answer.json()["items"] if p["id"].startswith("flt-"))

    assert ids(category="Garden") == ["flt-a", "flt-b", "flt-d"]
    assert ids(category="Garden>Tools") == ["flt-a", "flt-b"]
    assert ids(category="Garden > Tools > Shears") == ["flt-b"]
    assert ids(brand="Gardena") == ["flt-a", "flt-c", "flt-d"]
    assert ids(min_price=1500, max_price=3000) == ["flt-b", "flt-c"]
    assert ids(availability=["preorder", "out_of_stock"]) == ["flt-c", "flt-d"]
    latest = http.get(f"{PRODUCTS}/flt-d").json()["updated_at"]
    assert "flt-d" in ids(updated_since=latest)
    assert ids(updated_since="2999-01-01T00:00:00Z") == []

    for params, expected in (
        ({"cursor": "bogus"}, "next_cursor from the previous page"),
        ({"min_price": 5, "max_price": 1}, "min_price (5) is above max_price (1)"),
        ({"limit": 5000}, "limit"),
        ({"availability": "sold"}, "availability"),
        ({"category": "Garden > > Tools"}, "empty level"),
        ({"categroy": "Garden"}, "unknown query parameter 'categroy'"),
        ({"updated_since": "yesterday"}, "updated_since: an ISO-8601 time"),
    ):
        answer = http.get(PRODUCTS, params=params)
        assert answer.status_code == 400 and expected in answer.json()["error"], answer.text


# --------------------------------------------------------------------------- the CLI


def test_the_cli_imports_a_file_directly_or_through_the_server_and_reports_bad_lines(
    server: Server, http: httpx.Client, tmp_path: Path
) -> None:
    source = tmp_path / "products.ndjson"
    source.write_bytes(
        ndjson(
            [
                {"id": "cli-1", **product("one")},
                {"id": "cli-2", **product("two", images=["ftp://x/y.jpg"])},
                {"id": "cli-3", **product("three")},
            ]
        )
    )
    direct = run_cli(
        server.workdir, server.database_url, "catalog", "import", str(source),
        "--chunk-lines", "2", "--report", str(tmp_path / "report.ndjson"), check=False,
    )  # fmt: skip
    assert direct.returncode == 1, direct.stdout + direct.stderr
    assert "2 created, 0 updated, 0 unchanged, 1 failed" in direct.stdout
    assert "line 2: images.0: an image is an https:// URL" in direct.stdout
    report = [json.loads(line) for line in (tmp_path / "report.ndjson").read_text().splitlines()]
    assert [(r["line"], r["status"]) for r in report] == [
        (1, "created"), (2, "failed"), (3, "created"),
    ]  # fmt: skip
    assert http.get(f"{PRODUCTS}/cli-3").json()["title"] == "three"

    key_file = tmp_path / "key"
    key_file.write_text(server.key)
    config = tmp_path / "cli.json"
    config.write_text(
        json.dumps({"tenant": "acme", "server": server.base_url, "key_file": str(key_file)})
    )
    source.write_bytes(ndjson([{"id": "cli-1", **product("one, renamed")}]))
    env = {
        **modelport_env(server.workdir, server.database_url),
        "MODELPORT_CLI_CONFIG": str(config),
    }
    for _ in range(2):  # the second run is answered from the first (its Idempotency-Key)
        through = subprocess.run(
            [PYTHON, "-m", "modelport", "catalog", "import", str(source), "--server"],
            cwd=server.workdir, env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert through.returncode == 0, through.stdout + through.stderr
        assert "0 created, 1 updated, 0 unchanged, 0 failed" in through.stdout
    assert http.get(f"{PRODUCTS}/cli-1").json()["version"] == 2


def test_the_demo_loads_its_catalog_once(tmp_path: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}"
    first = run_cli(tmp_path, db, "demo", "--no-serve")
    assert "registered demo catalog (3000 products)" in first.stdout, first.stdout
    again = run_cli(tmp_path, db, "demo", "--no-serve")
    assert "catalog" not in again.stdout.split("modelport serving")[0], again.stdout


def test_a_price_filter_beyond_any_price_is_400_not_500(http: httpx.Client) -> None:
    response = http.get("/v1/catalog/products", params={"max_price": 10**19})
    assert response.status_code == 400, response.text
    assert "max_price" in response.json()["error"]
