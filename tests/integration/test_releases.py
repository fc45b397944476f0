"""Safe releases against real servers: aliases, hot swaps under load, failed loads, weighted and
sticky splits, shadow traffic, fallback, version deletion, a second replica following the first,
and the push-time contract checks.

Every version multiplies its input by a known factor (``FACTORS``), so each answer tells which
version computed it; a few are also slow, or fail at inference time on some inputs.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelport.errors import Conflict
from modelport.routing.assignment import choose
from modelport.wiring import build_services

from .conftest import (
    BACKENDS,
    TENANT,
    Push,
    Server,
    push_models,
    registry_url,
    running_server,
    settings_for,
)
from .onnx_models import lookup_model, scale_model, slow_scale_model, unloadable_model

pytestmark = pytest.mark.integration

CONCURRENCY = 64
FLIPS = 10
X = [1.0, 2.0, 3.0, 4.0]

#: Models pushed before the server starts: each version's factor, by model.
FACTORS: dict[str, dict[str, float]] = {
    "aliased": {"1": 1.0, "2": 2.0},
    "swap": {"1": 1.0, "2": 2.0},  # slow: each batch takes about 10 ms
    "fragile": {"1": 1.0},
    "split": {"1": 1.0, "2": 2.0},
    "shadowed": {"1": 1.0, "2": 3.0},
    "twin": {"1": 2.0, "2": 2.0},
    "faulty": {"1": 1.0, "2": 2.0},  # version 2 is a lookup table that fails on x >= 16
    "deletable": {"1": 1.0, "2": 2.0},
    "unrouted": {"1": 1.0, "2": 2.0},
    "replicated": {"1": 1.0, "2": 2.0},
    "experimented": {"1": 1.0, "2": 2.0},
}


@pytest.fixture(scope="module", params=BACKENDS)
def release_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp(f"releases-{request.param}")
    build = workdir / "build"
    with ExitStack() as stack:
        db = registry_url(request.param, workdir, stack, request)
        pushes = []
        for model, factors in FACTORS.items():
            for version, factor in factors.items():
                path = build / model / version / "model.onnx"
                if model == "faulty" and version == "2":
                    pushes.append(Push(model, lookup_model(path, factor)))
                elif model == "swap":
                    # About 10 ms a batch: requests are still in flight when a version drains.
                    pushes.append(Push(model, slow_scale_model(path, factor, iterations=30)))
                else:
                    pushes.append(Push(model, scale_model(path, factor)))
        push_models(workdir, db, pushes)
        yield stack.enter_context(running_server(workdir, db))


@pytest.fixture
def http(release_server: Server) -> Iterator[httpx.Client]:
    with release_server.client() as client:
        yield client


# --------------------------------------------------------------------------- helpers


def infer_doc(data: list[float] = X, **parameters: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, len(data)], "data": data}]
    }
    if parameters:
        doc["parameters"] = parameters
    return doc


def problem(response: httpx.Response, factors: dict[str, float], data: list[float] = X) -> str:
    """Why ``response`` is not a correct answer of one of the model's versions ('' if it is)."""
    if response.status_code != 200:
        return f"HTTP {response.status_code}: {response.text}"
    body = response.json()
    version = body.get("model_version")
    if response.headers.get("x-model-version") != version:
        return f"body says version {version}, header {response.headers.get('x-model-version')}"
    if version not in factors:
        return f"unexpected version {version}"
    want = [v * factors[version] for v in data]
    if body["outputs"][0]["data"] != want:
        return f"version {version} answered {body['outputs'][0]['data']}, expected {want}"
    return ""


def served_by(response: httpx.Response, factors: dict[str, float], data: list[float] = X) -> str:
    """The version that answered, after checking the answer is that version's."""
    assert not (why := problem(response, factors, data)), why
    return str(response.json()["model_version"])


def set_alias(http: httpx.Client, model: str, alias: str, version: str, reason: str = "") -> None:
    response = http.put(
        f"/v1/models/{model}/aliases/{alias}", json={"version": version, "reason": reason}
    )
    assert response.status_code == 200, response.text


def set_routing(http: httpx.Client, model: str, **policy: Any) -> dict[str, Any]:
    response = http.put(f"/v1/models/{model}/routing", json={"reason": "test", **policy})
    assert response.status_code == 200, response.text
    return dict(response.json())


def history(http: httpx.Client, model: str) -> list[dict[str, Any]]:
    response = http.get(f"/v1/models/{model}/history")
    assert response.status_code == 200, response.text
    return list(response.json())


# --------------------------------------------------------------------------- aliases


def test_aliases_pin_traffic_and_are_audited(http: httpx.Client) -> None:
    factors = FACTORS["aliased"]
    # Without release state the newest version serves.
    assert served_by(http.post("/v2/models/aliased/infer", json=infer_doc()), factors) == "2"

    set_alias(http, "aliased", "production", "1", reason="first release")
    set_alias(http, "aliased", "canary", "2")
    for _ in range(5):
        # Unpinned traffic follows production although version 2 is newer and loaded.
        assert served_by(http.post("/v2/models/aliased/infer", json=infer_doc()), factors) == "1"
    at_alias = http.post("/v2/models/aliased@production/infer", json=infer_doc())
    assert served_by(at_alias, factors) == "1"
    at_alias = http.post("/v2/models/aliased@canary/infer", json=infer_doc())
    assert served_by(at_alias, factors) == "2"
    by_header = http.post(
        "/v2/models/aliased/infer", json=infer_doc(), headers={"X-Model-Alias": "canary"}
    )
    assert served_by(by_header, factors) == "2"
    pinned = http.post("/v2/models/aliased/versions/2/infer", json=infer_doc())
    assert served_by(pinned, factors) == "2"

    for unknown in (
        http.post("/v2/models/aliased@nope/infer", json=infer_doc()),
        http.post("/v2/models/aliased/infer", json=infer_doc(), headers={"X-Model-Alias": "nope"}),
    ):
        assert unknown.status_code == 404, unknown.text
        assert unknown.headers["content-type"].startswith("application/json")
        assert unknown.json() == {"error": "model 'aliased' has no alias 'nope'"}
    missing = http.post("/v2/models/nosuchmodel@production/infer", json=infer_doc())
    assert missing.status_code == 404 and "not registered" in missing.json()["error"]

    described = http.get("/v1/models/aliased").json()
    assert described["aliases"] == {"production": "1", "canary": "2"}
    assert {v["version"]: v["aliases"] for v in described["versions"]} == {
        "1": ["production"],
        "2": ["canary"],
    }

    set_alias(http, "aliased", "production", "2", reason="promote after canary")
    assert served_by(http.post("/v2/models/aliased/infer", json=infer_doc()), factors) == "2"
    moves = [e for e in history(http, "aliased") if e["action"] == "alias_moved"]
    # Newest first.
    assert [(e["from_ref"], e["to_ref"], e["details"]["alias"]) for e in moves] == [
        ("1", "2", "production"),
        (None, "2", "canary"),
        (None, "1", "production"),
    ]
    assert moves[0]["reason"] == "promote after canary"
    assert moves[2]["reason"] == "first release"
    assert all(e["actor"].startswith("key:") for e in moves)

    removed = http.delete("/v1/models/aliased/aliases/canary", params={"reason": "done"})
    assert removed.status_code == 200, removed.text
    assert removed.json()["previous"] == "2"
    gone = http.post("/v2/models/aliased@canary/infer", json=infer_doc())
    assert gone.status_code == 404, gone.text
    assert served_by(http.post("/v2/models/aliased/infer", json=infer_doc()), factors) == "2"
    entry = history(http, "aliased")[0]
    assert (entry["action"], entry["from_ref"], entry["to_ref"]) == ("alias_deleted", "2", None)


# --------------------------------------------------------------------------- hot swap


async def test_alias_flip_under_load_drops_no_request(release_server: Server) -> None:
    factors = FACTORS["swap"]
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    served: Counter[str] = Counter()
    problems: list[str] = []
    stop = asyncio.Event()

    async with (
        release_server.async_client(limits=limits) as traffic,
        release_server.async_client() as admin,
    ):
        first = await admin.put(
            "/v1/models/swap/aliases/production", json={"version": "1", "reason": "start"}
        )
        assert first.status_code == 200, first.text

        # Unpinned, pinned to the alias in the URL, pinned to it by header: all follow the flips.
        ways: list[tuple[str, dict[str, str]]] = [
            ("/v2/models/swap/infer", {}),
            ("/v2/models/swap@production/infer", {}),
            ("/v2/models/swap/infer", {"X-Model-Alias": "production"}),
        ]

        async def caller(index: int) -> None:
            url, headers = ways[index % len(ways)]
            while not stop.is_set():
                try:
                    response = await traffic.post(url, json=infer_doc(), headers=headers)
                except httpx.HTTPError as exc:
                    problems.append(f"{type(exc).__name__}: {exc}")
                    continue
                if why := problem(response, factors):
                    problems.append(why)
                else:
                    served[response.json()["model_version"]] += 1

        callers = [asyncio.create_task(caller(i)) for i in range(CONCURRENCY)]
        try:
            await asyncio.sleep(0.2)
            for flip in range(FLIPS):
                version = "2" if flip % 2 == 0 else "1"
                moved = await admin.put(
                    "/v1/models/swap/aliases/production",
                    json={"version": version, "reason": f"flip {flip}"},
                )
                assert moved.status_code == 200, moved.text
                # The move returns once this replica serves it.
                check = await admin.post("/v2/models/swap/infer", json=infer_doc())
                assert not problem(check, factors), problem(check, factors)
                assert check.json()["model_version"] == version
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await asyncio.gather(*callers)

        events = (await admin.get("/v1/models/swap/history")).json()
        # The version the alias left is drained and unloaded once nothing needs it.
        final = "1" if FLIPS % 2 == 0 else "2"
        deadline = time.monotonic() + 10
        while True:
            states = {
                v["version"]: v["state"]
                for v in (await admin.get("/v1/models/swap")).json()["versions"]
            }
            if states == {final: "READY", str(3 - int(final)): "UNAVAILABLE"}:
                break
            assert time.monotonic() < deadline, states
            await asyncio.sleep(0.05)
    assert problems == [], f"{len(problems)} failed requests, e.g. {problems[:5]}"
    assert set(served) == {"1", "2"}, served
    # Every connection was busy across the flips (a 2-core runner manages ~150 requests/s).
    assert sum(served.values()) >= 4 * CONCURRENCY, served
    assert sum(e["action"] == "alias_moved" for e in events) == FLIPS + 1


# --------------------------------------------------------------------------- failed loads


def test_failed_load_leaves_the_old_version_serving(
    release_server: Server, http: httpx.Client, tmp_path: Path
) -> None:
    factors = FACTORS["fragile"]
    set_alias(http, "fragile", "production", "1")
    corrupted, unloadable = push_models(
        release_server.workdir,
        release_server.database_url,
        [
            Push("fragile", scale_model(tmp_path / "corrupted.onnx", 5.0)),
            Push("fragile", unloadable_model(tmp_path / "unloadable.onnx")),
        ],
    )
    Path(corrupted.artifact_uri.removeprefix("file://")).write_bytes(b"not the registered bytes")

    for bad, error in ((corrupted, "sha256"), (unloadable, "NoSuchOperator")):
        refused = http.put(
            "/v1/models/fragile/aliases/production",
            json={"version": bad.version, "reason": "ship it"},
        )
        assert refused.status_code == 409, refused.text
        message = refused.json()["error"]
        assert f"version {bad.version} of model 'fragile' failed to load" in message
        assert error in message
        assert "alias 'production' still points at version 1" in message

        assert http.get("/v1/models/fragile").json()["aliases"] == {"production": "1"}
        for _ in range(3):
            response = http.post("/v2/models/fragile/infer", json=infer_doc())
            assert served_by(response, factors) == "1"
        detail = http.get(f"/v1/models/fragile/versions/{bad.version}").json()
        assert detail["state"] != "READY"
        assert detail["aliases"] == []
        assert error in (detail["error"] or ""), detail

        entry = history(http, "fragile")[0]
        assert entry["action"] == "load_failed"
        assert (entry["from_ref"], entry["to_ref"]) == ("1", bad.version)
        assert error in entry["details"]["error"]
        assert entry["reason"] == "ship it"

    # A routing policy naming a version that cannot load is refused the same way.
    refused = http.put(
        "/v1/models/fragile/routing",
        json={
            "splits": [{"target": "1", "weight": 9}, {"target": unloadable.version, "weight": 1}]
        },
    )
    assert refused.status_code == 409 and "failed to load" in refused.json()["error"]
    assert http.get("/v1/models/fragile/routing").json()["policy"] is None
    assert served_by(http.post("/v2/models/fragile/infer", json=infer_doc()), factors) == "1"


# --------------------------------------------------------------------------- splits


async def test_weighted_split_and_sticky_keys(release_server: Server) -> None:
    factors = FACTORS["split"]
    requests = 1000
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    async with release_server.async_client(limits=limits) as client:
        policy: dict[str, Any] = {
            "splits": [{"target": "1", "weight": 80}, {"target": "2", "weight": 20}]
        }
        routed = await client.put("/v1/models/split/routing", json=policy)
        assert routed.status_code == 200, routed.text
        installed = routed.json()["serving"]["installed"]
        unknown = await client.put(
            "/v1/models/split/routing", json={"splits": [{"target": "nope", "weight": 1}]}
        )
        # Refused against the model's current aliases (state, hence a conflict).
        assert unknown.status_code == 409, unknown.text
        assert "neither a version number nor an alias" in unknown.json()["error"]
        assert (installed["versions"], installed["weights"]) == (["1", "2"], [0.8, 0.2])

        gate = asyncio.Semaphore(32)

        async def one(**kwargs: Any) -> str:
            async with gate:
                response = await client.post("/v2/models/split/infer", **kwargs)
            return served_by(response, factors)

        served = Counter(await asyncio.gather(*(one(json=infer_doc()) for _ in range(requests))))
        # 20 % of 1000: the standard deviation is about 13 requests; this allows 4 of them.
        assert 150 <= served["2"] <= 250, served
        assert served["1"] + served["2"] == requests

        policy["sticky_key"] = "user"
        routed = await client.put("/v1/models/split/routing", json=policy)
        assert routed.status_code == 200, routed.text
        users = [f"user-{i}" for i in range(40)]
        first = await asyncio.gather(*(one(json=infer_doc(user=u)) for u in users))
        for _ in range(3):
            again = await asyncio.gather(*(one(json=infer_doc(user=u)) for u in users))
            assert again == first
        # The X-Routing-Key header hashes like the parameter does.
        by_header = await asyncio.gather(
            *(one(json=infer_doc(), headers={"X-Routing-Key": u}) for u in users)
        )
        assert by_header == first
        assert set(first) == {"1", "2"}, Counter(first)


# --------------------------------------------------------------------------- shadow


def shadow_summary(http: httpx.Client, model: str, requests: int) -> dict[str, Any]:
    """The shadow comparison once every mirrored request was compared (mirrors run after the
    caller got its answer)."""
    deadline = time.monotonic() + 10
    while True:
        summary = http.get(f"/v1/models/{model}/shadow").json()["shadow"]
        if summary is not None and summary["compared"] >= requests:
            return dict(summary)
        assert time.monotonic() < deadline, summary
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("model", "max_abs_diff", "within"), [("shadowed", 8.0, 0.0), ("twin", 0.0, 1.0)]
)
def test_shadow_mirrors_without_touching_answers(
    http: httpx.Client, model: str, max_abs_diff: float, within: float
) -> None:
    factors = FACTORS[model]
    set_routing(
        http,
        model,
        splits=[{"target": "1", "weight": 1}],
        shadow={"target": "2", "percent": 100, "tolerance": 1e-4},
    )
    requests = 20
    for _ in range(requests):
        response = http.post(f"/v2/models/{model}/infer", json=infer_doc())
        assert served_by(response, factors) == "1"

    summary = shadow_summary(http, model, requests)
    assert (summary["primary_version"], summary["shadow_version"]) == ("1", "2")
    assert summary["mirrored"] == summary["compared"] == requests
    assert summary["errors"] == 0 and summary["dropped"] == 0
    # x = [1, 2, 3, 4]: version 2 of 'shadowed' answers 3x, version 1 x; the worst gap is 8.
    assert summary["max_abs_diff"] == max_abs_diff
    assert summary["fraction_within_tolerance"] == within


# --------------------------------------------------------------------------- fallback


def test_fallback_answers_when_the_routed_version_fails(http: httpx.Client) -> None:
    factors = FACTORS["faulty"]
    bad = [100.0, 1.0, 2.0, 3.0]  # version 2's lookup table has 16 entries
    set_alias(http, "faulty", "production", "1")

    # Version 2 really fails on this input (the fallback below is what saves it).
    failed = http.post("/v2/models/faulty/versions/2/infer", json=infer_doc(bad))
    assert failed.status_code == 500, failed.text
    assert "out of data bounds" in failed.json()["error"]

    set_routing(http, "faulty", splits=[{"target": "2", "weight": 1}], fallback="production")
    assert served_by(http.post("/v2/models/faulty/infer", json=infer_doc()), factors) == "2"
    for _ in range(5):
        response = http.post("/v2/models/faulty/infer", json=infer_doc(bad))
        assert served_by(response, factors, bad) == "1"

    set_routing(http, "faulty", splits=[{"target": "2", "weight": 1}])
    unsaved = http.post("/v2/models/faulty/infer", json=infer_doc(bad))
    assert unsaved.status_code == 500, unsaved.text


# --------------------------------------------------------------------------- deletion


def test_version_in_use_cannot_be_deleted(http: httpx.Client) -> None:
    factors = FACTORS["deletable"]
    set_alias(http, "deletable", "production", "1")
    refused = http.delete("/v1/models/deletable/versions/1")
    assert refused.status_code == 409, refused.text
    assert "in use by alias 'production'" in refused.json()["error"]
    assert served_by(http.post("/v2/models/deletable/infer", json=infer_doc()), factors) == "1"

    set_alias(http, "deletable", "production", "2")
    deleted = http.delete("/v1/models/deletable/versions/1")
    assert deleted.status_code == 204, deleted.text
    assert [v["version"] for v in http.get("/v1/models/deletable").json()["versions"]] == ["2"]
    assert http.get("/v1/models/deletable/versions/1").status_code == 404
    pinned = http.post("/v2/models/deletable/versions/1/infer", json=infer_doc())
    assert pinned.status_code == 404, pinned.text
    assert served_by(http.post("/v2/models/deletable/infer", json=infer_doc()), factors) == "2"
    assert history(http, "deletable")[0]["action"] == "version_deleted"

    set_routing(http, "deletable", splits=[{"target": "2", "weight": 1}])
    refused = http.delete("/v1/models/deletable/versions/2")
    assert refused.status_code == 409
    assert "alias 'production', the routing policy" in refused.json()["error"]


def test_the_version_serving_unpinned_traffic_cannot_be_deleted(http: httpx.Client) -> None:
    # No alias and no routing: the newest version serves everything.
    factors = FACTORS["unrouted"]
    refused = http.delete("/v1/models/unrouted/versions/2")
    assert refused.status_code == 409, refused.text
    assert "in use by unpinned traffic" in refused.json()["error"]
    assert served_by(http.post("/v2/models/unrouted/infer", json=infer_doc()), factors) == "2"

    assert http.delete("/v1/models/unrouted/versions/1").status_code == 204
    assert served_by(http.post("/v2/models/unrouted/infer", json=infer_doc()), factors) == "2"
    assert http.get("/v2/health/ready").status_code == 200


# --------------------------------------------------------------------------- replicas


def test_a_change_through_one_replica_reaches_the_other(
    release_server: Server, http: httpx.Client
) -> None:
    factors = FACTORS["replicated"]
    with (
        running_server(release_server.workdir, release_server.database_url) as second,
        second.client() as other,
    ):
        assert (
            served_by(other.post("/v2/models/replicated/infer", json=infer_doc()), factors) == "2"
        )
        set_alias(http, "replicated", "production", "1", reason="through the first replica")
        # The second replica loads version 1 before it switches; until then version 2 answers.
        deadline = time.monotonic() + 10
        answers: list[str] = []
        while not answers or answers[-1] != "1":
            assert time.monotonic() < deadline, answers[-5:]
            response = other.post("/v2/models/replicated/infer", json=infer_doc())
            answers.append(served_by(response, factors))
            # Nor does it report the model unready meanwhile.
            assert other.get("/v2/models/replicated/ready").status_code == 200
            time.sleep(0.02)
        # Once switched it stays switched.
        assert "2" not in answers[answers.index("1") :]
        installed = other.get("/v1/models/replicated/routing").json()["serving"]["installed"]
        assert (installed["versions"], installed["aliases"]) == (["1"], {"production": "1"})

        # And back the other way, with the move made on the second replica.
        moved = other.put(
            "/v1/models/replicated/aliases/production", json={"version": "2", "reason": "back"}
        )
        assert moved.status_code == 200, moved.text
        deadline = time.monotonic() + 10
        while served_by(http.post("/v2/models/replicated/infer", json=infer_doc()), factors) != "2":
            assert time.monotonic() < deadline
            time.sleep(0.02)


# --------------------------------------------------------------------------- contracts


async def test_push_checks_interface_and_golden_examples(
    release_server: Server, tmp_path: Path
) -> None:
    services = await build_services(
        settings_for(release_server.workdir, release_server.database_url)
    )
    push = services.registry.push
    try:
        assert (
            await push(TENANT, "contract", scale_model(tmp_path / "v1.onnx", 1.0))
        ).version == "1"
        wider = scale_model(tmp_path / "wide.onnx", 1.0, width=5)
        with pytest.raises(Conflict, match="breaks its interface") as refused:
            await push(TENANT, "contract", wider)
        assert "input 'x' changed shape [-1, 4] -> [-1, 5]" in refused.value.message
        assert "--breaking" in refused.value.message

        golden = {
            "request": infer_doc(),
            "expected": {"y": X},
            "tolerance": 1e-4,
        }
        async with release_server.async_client() as client:
            not_reproduced = await client.put(
                "/v1/models/contract/golden",
                json={"examples": [{**golden, "expected": {"y": [0.0] * 4}}]},
            )
            assert not_reproduced.status_code == 400, not_reproduced.text
            assert "does not reproduce" in not_reproduced.json()["error"]
            stored = await client.put("/v1/models/contract/golden", json={"examples": [golden]})
            assert stored.status_code == 200, stored.text
            assert stored.json() == {"examples": 1}

        with pytest.raises(Conflict, match="fails its golden examples: example 0: output 'y'"):
            await push(TENANT, "contract", scale_model(tmp_path / "double.onnx", 2.0))
        # Refused pushes wrote nothing: the next accepted one is version 2.
        same = await push(TENANT, "contract", scale_model(tmp_path / "same.onnx", 1.0))
        assert same.version == "2"

        # A breaking push replaces the interface and drops the old interface's examples.
        breaking = await push(TENANT, "contract", wider, breaking=True)
        assert breaking.version == "3"
        model = (await services.registry.describe(TENANT, "contract")).model
        assert model.interface is not None
        assert model.interface["inputs"][0]["shape"] == [-1, 5]
        assert not model.golden
    finally:
        await services.close()

    async with release_server.async_client() as client:
        events = (await client.get("/v1/models/contract/history")).json()
    pushes = [e for e in events if e["action"] == "version_pushed"]
    assert [(e["to_ref"], e["details"]["breaking"]) for e in pushes] == [
        ("3", True),
        ("2", False),
        ("1", False),
    ]
    assert pushes[1]["details"]["golden_passed"] == 1
    assert pushes[0]["details"]["golden_cleared"] is True


# --------------------------------------------------------------------------- experiments


def test_an_experiment_on_a_model_routes_each_unit_to_its_variant_and_records_exposures(
    http: httpx.Client,
) -> None:
    factors = FACTORS["experimented"]
    set_alias(http, "experimented", "production", "1")
    experiment = {
        "id": "exp-infer",
        "name": "version 2 against production",
        "surface": "inference:experimented",
        "unit": "user",
        "variants": [
            {
                "name": "control",
                "weight": 50,
                "target": {"kind": "model", "model": "experimented", "alias": "production"},
            },
            {
                "name": "v2",
                "weight": 50,
                "target": {"kind": "model", "model": "experimented", "version": "2"},
            },
        ],
    }
    assert http.post("/v1/experiments", json=experiment).status_code == 201
    started = http.post("/v1/experiments/exp-infer/start")
    assert started.status_code == 200, started.text
    salt = started.json()["salt"]
    seen: Counter[str] = Counter()
    for n in range(60):
        unit = f"user-{n}"
        answer = http.post(
            "/v2/models/experimented/infer", json=infer_doc(), headers={"X-Experiment-Unit": unit}
        )
        variant = ["control", "v2"][choose(salt, unit, [50, 50])]
        assert answer.headers["x-experiment"] == "exp-infer"
        assert answer.headers["x-experiment-variant"] == variant
        assert served_by(answer, factors) == {"control": "1", "v2": "2"}[variant]
        seen[variant] += 1
    assert seen["control"] and seen["v2"]
    # Without a unit, or naming a version, the call is not part of the experiment.
    plain = http.post("/v2/models/experimented/infer", json=infer_doc())
    assert "x-experiment" not in plain.headers
    pinned = http.post(
        "/v2/models/experimented/versions/1/infer",
        json=infer_doc(),
        headers={"X-Experiment-Unit": "user-1"},
    )
    assert served_by(pinned, factors) == "1" and "x-experiment" not in pinned.headers
    # Every exposure is recorded (written off the request path, so give it a moment).
    deadline = time.monotonic() + 10
    while True:
        results = http.get("/v1/experiments/exp-infer/results").json()
        exposures = {v["name"]: v["exposures"] for v in results["variants"]}
        if sum(exposures.values()) == 60 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert exposures == {"control": seen["control"], "v2": seen["v2"]}
    assert http.post("/v1/experiments/exp-infer/stop", json={}).status_code == 200
