"""Experiments as their owners notice them: units stay in their variant, the analysis finds a
real difference within its interval, a broken split and a failing variant are caught, and
another tenant cannot see any of it.

The statistics run in-process on each registry backend (SQLite, PostgreSQL): exposures are
recorded through the service call a serving path makes, clicks and purchases arrive through
event intake with the request ids of the answers. The HTTP API is exercised on a real
``modelport serve``.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelport.errors import Conflict, ExperimentNotFound
from modelport.routing.assignment import choose
from modelport.services.experiments import Assignment
from modelport.wiring import Services, build_services

from .conftest import (
    BACKENDS,
    TENANT,
    Server,
    issue_key,
    registry_url,
    running_server,
    settings_for,
)

pytestmark = pytest.mark.integration

RIVAL = "rival"
ME = "key:test"


@pytest.fixture(scope="module", params=BACKENDS)
def database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, str]]:
    workdir = tmp_path_factory.mktemp(f"experiments-{request.param}")
    with ExitStack() as stack:
        yield workdir, registry_url(request.param, workdir, stack, request)


@asynccontextmanager
async def platform(database: tuple[Path, str]) -> AsyncIterator[Services]:
    settings = settings_for(*database).model_copy(update={"experiment_guardrail_interval_s": 0.0})
    services = await build_services(settings)
    # One search experiment runs at a time: what an earlier test left running stops.
    for running in await services.experiments.list(TENANT, "running"):
        await services.experiments.stop(TENANT, running.id, ME)
    try:
        yield services
    finally:
        await services.close()


def search_experiment(
    experiment_id: str, weights: tuple[float, ...] = (50, 50), **extra: Any
) -> dict[str, Any]:
    names = ["control", "hybrid", "semantic"][: len(weights)]
    return {
        "id": experiment_id,
        "surface": "search",
        "unit": "user",
        "variants": [
            {
                "name": name,
                "weight": weight,
                "target": {"kind": "search", "mode": "lexical" if name == "control" else name},
            }
            for name, weight in zip(names, weights, strict=True)
        ],
        **extra,
    }


async def serve(
    services: Services, users: range, surface: str = "search"
) -> list[tuple[str, Assignment]]:
    """What a serving path does per request: assign the user, answer, record the exposure."""
    served = []
    for i in users:
        assignment = await services.experiments.assign(TENANT, surface, {"user": f"user-{i}"})
        assert assignment is not None
        request_id = f"req-{assignment.experiment_id}-{assignment.run}-{i}"
        services.experiments.expose(TENANT, assignment, request_id)
        served.append((request_id, assignment))
    await services.experiments.recorder.flush()
    return served


async def send_events(services: Services, events: list[dict[str, Any]]) -> None:
    for start in range(0, len(events), 1000):
        result = await services.events.ingest(TENANT, {"events": events[start : start + 1000]})
        assert not result.rejected, result.rejected[:3]


def variant_row(results: dict[str, Any], name: str) -> dict[str, Any]:
    return next(v for v in results["variants"] if v["name"] == name)


async def test_20k_simulated_users_the_true_difference_lies_within_the_interval(
    database: tuple[Path, str],
) -> None:
    click = {"control": 0.10, "hybrid": 0.13}
    purchase = {"control": 0.03, "hybrid": 0.03}
    rng = random.Random(20_000)
    async with platform(database) as services:
        # A fixed salt and seed: the same simulated users on every run and backend (how often
        # such intervals cover the truth is the unit tests' business).
        await services.experiments.create(TENANT, search_experiment("sim-20k", salt="sim"), ME)
        await services.experiments.start(TENANT, "sim-20k", ME)
        served = await serve(services, range(20_000))
        now = time.time()
        events = []
        for request_id, assignment in served:
            if rng.random() < click[assignment.variant]:
                events.append(
                    {
                        "event_id": f"c-{request_id}",
                        "type": "click",
                        "user_id": assignment.unit,
                        "item_ids": ["sku-1"],
                        "timestamp": now,
                        "request_id": request_id,
                    }
                )
            if rng.random() < purchase[assignment.variant]:
                events.append(
                    {
                        "event_id": f"p-{request_id}",
                        "type": "purchase",
                        "user_id": assignment.unit,
                        "item_ids": ["sku-1"],
                        "timestamp": now,
                        "request_id": request_id,
                    }
                )
        # A click that came from no experiment's answer is attributed to nobody.
        events.append(
            {
                "event_id": "stray",
                "type": "click",
                "user_id": "user-1",
                "item_ids": ["sku-1"],
                "timestamp": now,
                "request_id": "elsewhere",
            }
        )
        await send_events(services, events)
        results = await services.experiments.results(TENANT, "sim-20k")

    assert results["units"] == 20_000
    assert not results["sample_ratio"]["mismatch"], results["sample_ratio"]
    hybrid = variant_row(results, "hybrid")
    control = variant_row(results, "control")
    assert control["control"] and control["units"] + hybrid["units"] == 20_000
    low, high = hybrid["click_through"]["difference"]["interval"]
    assert low <= click["hybrid"] - click["control"] <= high
    assert low > 0, "a 3-point lift on 10k units per arm is detected"
    for row in (control, hybrid):
        rate_low, rate_high = row["click_through"]["interval"]
        assert rate_low <= click[row["name"]] <= rate_high
    c_low, c_high = hybrid["conversion"]["difference"]["interval"]
    assert c_low <= 0.0 <= c_high
    assert hybrid["clicked_requests"] == hybrid["click_through"]["units"]


async def test_a_45_55_split_on_a_50_50_experiment_trips_the_sample_ratio_check(
    database: tuple[Path, str],
) -> None:
    async with platform(database) as services:
        experiments = services.experiments
        await experiments.create(TENANT, search_experiment("srm-check"), ME)
        await experiments.start(TENANT, "srm-check", ME)
        # A serving path that loses 18 % of the control's exposures (a logging bug): 45/55.
        lost = 0
        for i in range(20_000):
            assignment = await experiments.assign(TENANT, "search", {"user": f"user-{i}"})
            assert assignment is not None
            if assignment.variant == "control" and i % 100 < 18:
                lost += 1
                continue
            experiments.expose(TENANT, assignment, f"srm-{i}")
        await experiments.recorder.flush()
        results = await experiments.results(TENANT, "srm-check")

    observed = results["sample_ratio"]["observed"]
    assert 0.44 < observed["control"] / results["units"] < 0.46
    assert results["sample_ratio"]["mismatch"] is True
    assert results["sample_ratio"]["p_value"] < 0.001


async def test_the_guardrail_stops_an_experiment_whose_variant_fails_and_says_why(
    database: tuple[Path, str],
) -> None:
    async with platform(database) as services:
        experiments = services.experiments
        body = search_experiment(
            "guarded", guardrail={"metric": "error_rate", "max": 0.05, "min_exposures": 200}
        )
        await experiments.create(TENANT, body, ME)
        await experiments.start(TENANT, "guarded", ME)
        for i in range(1_000):
            assignment = await experiments.assign(TENANT, "search", {"user": f"user-{i}"})
            assert assignment is not None
            # The hybrid variant fails one answer in five; the control one in a hundred.
            failing = (i % 5 == 0) if assignment.variant == "hybrid" else (i % 100 == 0)
            experiments.expose(
                TENANT, assignment, f"g-{i}", outcome="error" if failing else "ok", latency_ms=3.0
            )
        await experiments.recorder.flush()
        stopped = await experiments.get(TENANT, "guarded")
        after = await experiments.assign(TENANT, "search", {"user": "user-1"})

    assert stopped.status == "stopped"
    last = stopped.history[-1]
    assert last["action"] == "stopped" and last["by"] == "guardrail"
    assert "variant hybrid" in last["reason"] and "0.05" in last["reason"]
    assert after is None, "a stopped experiment assigns nobody"


async def test_weights_change_only_with_a_new_run_and_never_re_bucket_a_running_one(
    database: tuple[Path, str],
) -> None:
    async with platform(database) as services:
        experiments = services.experiments
        await experiments.create(TENANT, search_experiment("rerun", salt="rerun-salt"), ME)
        first = await experiments.start(TENANT, "rerun", ME)
        before = [await experiments.assign(TENANT, "search", {"user": f"u{i}"}) for i in range(500)]
        await experiments.update(
            TENANT,
            "rerun",
            {"name": "Hybrid search", "guardrail": {"metric": "p99_ms", "max": 250}},
            ME,
        )
        with pytest.raises(Conflict, match=r"new run.*POST /v1/experiments/rerun/runs"):
            await experiments.update(
                TENANT, "rerun", {"variants": search_experiment("x", (40, 60))["variants"]}, ME
            )
        with pytest.raises(Conflict, match="salt"):
            await experiments.update(TENANT, "rerun", {"salt": "another"}, ME)
        same = [await experiments.assign(TENANT, "search", {"user": f"u{i}"}) for i in range(500)]
        await serve(services, range(100))
        second = await experiments.new_run(
            TENANT, "rerun", {"variants": search_experiment("x", (30, 70))["variants"]}, ME
        )
        rerun = [await experiments.assign(TENANT, "search", {"user": f"u{i}"}) for i in range(500)]
        fresh = await experiments.results(TENANT, "rerun")

    assert [a and a.variant for a in same] == [a and a.variant for a in before]
    assert {a.run for a in before if a} == {1} and {a.run for a in rerun if a} == {2}
    assert second.salt != first.salt and second.run == 2 and second.status == "running"
    assert [v.weight for v in second.variants] == [30, 70]
    assert [a and a.variant for a in rerun] == [
        ["control", "hybrid"][choose(second.salt, f"u{i}", [30, 70])] for i in range(500)
    ]
    assert fresh["run"] == 2 and fresh["units"] == 0, "a new run's results start from zero"
    assert [e["action"] for e in second.history] == ["created", "started", "edited", "new_run"]


async def test_another_tenant_sees_no_experiment_and_gets_no_assignment(
    database: tuple[Path, str],
) -> None:
    async with platform(database) as services:
        experiments = services.experiments
        await experiments.create(TENANT, search_experiment("private-exp"), ME)
        await experiments.start(TENANT, "private-exp", ME)
        with pytest.raises(ExperimentNotFound) as theirs:
            await experiments.get(RIVAL, "private-exp")
        with pytest.raises(ExperimentNotFound) as nowhere:
            await experiments.get(RIVAL, "no-such-exp")
        assert str(theirs.value).replace("private-exp", "<id>") == str(nowhere.value).replace(
            "no-such-exp", "<id>"
        )
        assert await experiments.assign(RIVAL, "search", {"user": "u1"}) is None
        assert "private-exp" not in [e.id for e in await experiments.list(RIVAL)]
        # The rival may use the same id for an experiment of its own.
        await experiments.create(RIVAL, search_experiment("private-exp", (10, 90)), ME)
        mine = await experiments.get(TENANT, "private-exp")
        assert [v.weight for v in mine.variants] == [50, 50]


# --------------------------------------------------------------------------- over HTTP


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("experiments-http")
    with running_server(workdir, f"sqlite+aiosqlite:///{workdir / 'registry.db'}") as server:
        yield server


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def model_experiment(experiment_id: str) -> dict[str, Any]:
    return {
        "id": experiment_id,
        "name": "ranker v2 against production",
        "surface": "inference:ranker",
        "unit": "custom",
        "unit_key": "household",
        "variants": [
            {
                "name": "production",
                "weight": 90,
                "target": {"kind": "model", "model": "ranker", "alias": "production"},
            },
            {
                "name": "v2",
                "weight": 10,
                "target": {"kind": "model", "model": "ranker", "version": "2"},
            },
        ],
        "layer": {"name": "ranking", "start": 0, "end": 5000},
        "guardrail": {"metric": "error_rate", "max": 0.02},
    }


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {
                "variants": [
                    {"name": "a", "weight": 50, "target": {"kind": "search"}},
                    {"name": "b", "weight": 40, "target": {"kind": "search"}},
                ]
            },
            "weights must sum to 100; they sum to 90",
        ),
        (
            {
                "variants": [
                    {"name": "a", "weight": 50, "target": {"kind": "search"}},
                    {"name": "a", "weight": 50, "target": {"kind": "search"}},
                ]
            },
            "variant names must be unique; repeated: a",
        ),
        ({"unit": "device"}, "unknown unit 'device'"),
        ({"unit": "custom"}, "unit_key names the key"),
        ({"surface": "checkout"}, "unknown surface 'checkout'"),
        (
            {
                "variants": [
                    {
                        "name": "a",
                        "weight": 50,
                        "target": {"kind": "model", "model": "m", "alias": "x"},
                    },
                    {"name": "b", "weight": 50, "target": {"kind": "search"}},
                ]
            },
            'targets are of kind "search"',
        ),
        ({"control": "nobody"}, "control 'nobody' is not a variant"),
        ({"colour": "red"}, "colour"),
        (
            {
                "variants": [
                    {"name": "a", "weight": 33.333, "target": {"kind": "search"}},
                    {"name": "b", "weight": 66.667, "target": {"kind": "search"}},
                ]
            },
            "at most two decimals",
        ),
        ({"layer": {"name": "l", "start": 5000, "end": 5000}}, "start (5000) must be below end"),
    ],
)
def test_a_bad_definition_is_a_400_that_says_what_is_wrong(
    http: httpx.Client, change: dict[str, Any], expected: str
) -> None:
    response = http.post("/v1/experiments", json={**search_experiment("bad-one"), **change})
    assert response.status_code == 400, response.text
    assert expected in response.json()["error"]
    assert http.get("/v1/experiments/bad-one").status_code == 404


def test_an_experiment_is_defined_started_re_run_stopped_and_deleted_over_http(
    http: httpx.Client,
) -> None:
    created = http.post("/v1/experiments", json=model_experiment("ranker-v2"))
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["status"] == "draft" and body["control"] == "production" and body["run"] == 1
    assert body["variants"][1]["target"] == {"kind": "model", "model": "ranker", "version": "2"}
    assert http.post("/v1/experiments", json=model_experiment("ranker-v2")).status_code == 409

    started = http.post("/v1/experiments/ranker-v2/start")
    assert started.status_code == 200 and started.json()["status"] == "running"
    # A second experiment on the same surface in the same layer must take other buckets.
    other = {
        **model_experiment("ranker-v3"),
        "layer": {"name": "ranking", "start": 4000, "end": 10000},
    }
    assert http.post("/v1/experiments", json=other).status_code == 201
    clash = http.post("/v1/experiments/ranker-v3/start")
    assert clash.status_code == 409 and "ranker-v2" in clash.json()["error"]

    refused = http.patch(
        "/v1/experiments/ranker-v2", json={"variants": model_experiment("x")["variants"][::-1]}
    )
    assert refused.status_code == 409
    assert "POST /v1/experiments/ranker-v2/runs" in refused.json()["error"]
    assert http.delete("/v1/experiments/ranker-v2").status_code == 409

    variants = model_experiment("x")["variants"]
    variants[0]["weight"], variants[1]["weight"] = 50, 50
    rerun = http.post("/v1/experiments/ranker-v2/runs", json={"variants": variants})
    assert rerun.status_code == 200, rerun.text
    assert rerun.json()["run"] == 2 and rerun.json()["salt"] != body["salt"]

    results = http.get("/v1/experiments/ranker-v2/results")
    assert results.status_code == 200 and results.json()["run"] == 2
    assert [v["name"] for v in results.json()["variants"]] == ["production", "v2"]
    assert results.json()["sample_ratio"]["mismatch"] is False

    assert [e["id"] for e in http.get("/v1/experiments?status=running").json()["experiments"]] == [
        "ranker-v2"
    ]
    stopped = http.post("/v1/experiments/ranker-v2/stop")
    assert stopped.json()["status"] == "stopped"
    shown = http.get("/v1/experiments/ranker-v2").json()
    assert [e["action"] for e in shown["history"]] == ["created", "started", "new_run", "stopped"]
    assert http.delete("/v1/experiments/ranker-v2").status_code == 204
    assert http.get("/v1/experiments/ranker-v2").status_code == 404


def test_another_tenants_experiment_answers_like_one_that_does_not_exist(
    server: Server, http: httpx.Client
) -> None:
    assert http.post("/v1/experiments", json=search_experiment("acme-secret")).status_code == 201
    key = issue_key(server.workdir, server.database_url, RIVAL, ["read", "write"])
    rival = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=server.base_url, timeout=30.0, headers=rival) as other:
        for method, path, body in [
            ("GET", "/v1/experiments/{}", None),
            ("GET", "/v1/experiments/{}/results", None),
            ("PATCH", "/v1/experiments/{}", {"name": "mine now"}),
            ("POST", "/v1/experiments/{}/start", None),
            ("POST", "/v1/experiments/{}/stop", None),
            (
                "POST",
                "/v1/experiments/{}/runs",
                {"variants": search_experiment("x", (10, 90))["variants"]},
            ),
            ("DELETE", "/v1/experiments/{}", None),
        ]:
            theirs = other.request(method, path.format("acme-secret"), json=body)
            nowhere = other.request(method, path.format("ghost-exp"), json=body)
            assert theirs.status_code == 404, (method, path, theirs.text)
            assert theirs.json()["error"].replace("acme-secret", "<id>") == nowhere.json()[
                "error"
            ].replace("ghost-exp", "<id>")
        assert other.get("/v1/experiments").json() == {"experiments": []}
    mine = http.get("/v1/experiments/acme-secret").json()
    assert mine["status"] == "draft" and mine["name"] == "acme-secret"
