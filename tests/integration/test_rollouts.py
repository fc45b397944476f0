"""SLO-guarded canary rollouts against a real server, real tiny models and real traffic.

Each model's version 1 is a healthy ``y = x`` and serves production; the candidates are built to
misbehave on purpose: ``flaky`` version 2 fails at run time in onnxruntime for ~30 % of inputs,
``slow`` version 2 burns ~60 ms of CPU per call. A background load of unpinned infer requests
feeds the rollout guard, which judges every step from the windows the server publishes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from modelport.serving.config import BatchingConfig, VersionConfig

from .conftest import BACKENDS, Push, Server, push_models, registry_url, running_server
from .onnx_models import flaky_scale_model, scale_model, slow_scale_model

#: Rows whose first value exceeds this make ``flaky`` version 2 fail (30 % of the traffic).
FLAKY_THRESHOLD = 0.7
#: Loop iterations of ``slow`` version 2 (~0.3 ms each on one core).
SLOW_ITERATIONS = 200
#: How often the guard judges and the server publishes its windows, in the tests.
GUARD_INTERVAL_S = 0.2

#: Bounds loose enough that a healthy candidate is never rolled back for scheduling noise on a
#: busy two-core test machine; the tests that need a bound set it explicitly.
LENIENT: dict[str, Any] = {"max_p99_ratio": 5.0, "p99_slack_ms": 100.0}

#: One request per runtime call: a failing row then fails only its own request.
UNBATCHED = VersionConfig(batching=BatchingConfig(max_batch_size=0))


# --------------------------------------------------------------------------- traffic


@dataclass(frozen=True, slots=True)
class Sample:
    sent: float
    """Wall-clock time (``time.time()``) the request was sent: routing happens right after."""
    status: int
    version: str | None
    """``X-Model-Version`` of the response (absent on errors)."""


def infer_body(first: float) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [first, 0.5, 0.25, 1.0]}
        ]
    }


class Traffic:
    """Unpinned infer requests to ``model`` from ``concurrency`` workers, in a background
    thread with its own event loop, until the ``with`` block ends. Worker ``i`` sends to
    ``servers[i % len(servers)]``; each request's first value is uniform in [0, 1)."""

    def __init__(
        self, servers: Sequence[Server], model: str, *, concurrency: int = 6, seed: int = 0
    ) -> None:
        self.servers = list(servers)
        self.model = model
        self.concurrency = concurrency
        self.samples: list[Sample] = []
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name=f"traffic:{model}", daemon=True)
        self._failure: BaseException | None = None

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "the traffic thread did not stop"
        if self._failure is not None and exc[0] is None:
            raise AssertionError(f"the traffic thread failed: {self._failure!r}")

    def since(self, start: float, end: float = float("inf")) -> list[Sample]:
        """The requests sent between ``start`` and ``end``."""
        return [s for s in list(self.samples) if start <= s.sent < end]

    def wait_for(self, count: int, timeout_s: float = 30.0) -> None:
        """Block until ``count`` more responses arrived."""
        target = len(self.samples) + count
        deadline = time.monotonic() + timeout_s
        while len(self.samples) < target:
            assert time.monotonic() < deadline, f"{count} responses did not arrive in time"
            time.sleep(0.05)

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread on exit
            self._failure = exc

    async def _run(self) -> None:
        clients = [server.async_client() for server in self.servers]
        try:
            async with asyncio.TaskGroup() as group:
                for i in range(self.concurrency):
                    group.create_task(self._worker(clients[i % len(clients)]))
        finally:
            for client in clients:
                await client.aclose()

    async def _worker(self, client: httpx.AsyncClient) -> None:
        path = f"/v2/models/{self.model}/infer"
        while not self._stop.is_set():
            sent = time.time()
            response = await client.post(path, json=infer_body(self._rng.random()))
            self.samples.append(
                Sample(sent, response.status_code, response.headers.get("x-model-version"))
            )


def versions(samples: Sequence[Sample]) -> Counter[str | None]:
    return Counter(s.version for s in samples)


def share(samples: Sequence[Sample], version: str) -> float:
    return sum(s.version == version for s in samples) / len(samples)


# --------------------------------------------------------------------------- the admin API


def set_alias(http: httpx.Client, model: str, alias: str, version: str) -> None:
    response = http.put(
        f"/v1/models/{model}/aliases/{alias}", json={"version": version, "reason": "tests"}
    )
    assert response.status_code == 200, response.text


def start_rollout(
    http: httpx.Client, model: str, candidate: str, plan: dict[str, Any], reason: str = "tests"
) -> dict[str, Any]:
    response = http.post(
        f"/v1/models/{model}/rollouts",
        json={"candidate": candidate, "plan": plan, "reason": reason},
    )
    assert response.status_code == 201, response.text
    rollout: dict[str, Any] = response.json()
    assert rollout["state"] == "running" and rollout["step"] == 0, rollout
    return rollout


def act(http: httpx.Client, model: str, action: str, reason: str = "tests") -> httpx.Response:
    return http.post(f"/v1/models/{model}/rollouts/current/{action}", json={"reason": reason})


def rollout_by_id(http: httpx.Client, model: str, rollout_id: int) -> dict[str, Any]:
    response = http.get(f"/v1/models/{model}/rollouts")
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = [r for r in response.json() if r["id"] == rollout_id]
    assert len(found) == 1, response.json()
    return found[0]


def wait_for_rollout(
    http: httpx.Client,
    model: str,
    rollout_id: int,
    *,
    states: Sequence[str] = ("promoted", "rolled_back", "aborted"),
    step: int | None = None,
    timeout_s: float = 40.0,
) -> dict[str, Any]:
    """Poll until the rollout is in one of ``states`` (or, with ``step``, reached that step)."""
    deadline = time.monotonic() + timeout_s
    while True:
        rollout = rollout_by_id(http, model, rollout_id)
        if rollout["state"] in states or (step is not None and rollout["step"] >= step):
            return rollout
        assert time.monotonic() < deadline, f"rollout still {rollout['state']}: {rollout}"
        time.sleep(0.05)


def history(http: httpx.Client, model: str) -> list[dict[str, Any]]:
    """The model's audit entries, oldest first."""
    response = http.get(f"/v1/models/{model}/history")
    assert response.status_code == 200, response.text
    return list(reversed(response.json()))


def rollout_history(http: httpx.Client, model: str, rollout_id: int) -> list[dict[str, Any]]:
    return [e for e in history(http, model) if (e["details"] or {}).get("rollout") == rollout_id]


def serving(http: httpx.Client, model: str) -> dict[str, Any]:
    """What this server has installed for the model (versions and weights)."""
    response = http.get(f"/v1/models/{model}/routing")
    assert response.status_code == 200, response.text
    installed: dict[str, Any] = response.json()["serving"]["installed"] or {}
    return installed


def wait_serving(
    http: httpx.Client, model: str, versions: list[str], timeout_s: float = 10.0
) -> float:
    """Poll until the server routes ``model`` to exactly ``versions``; the seconds it took."""
    start = time.monotonic()
    while serving(http, model).get("versions") != versions:
        assert time.monotonic() - start < timeout_s, serving(http, model)
        time.sleep(0.02)
    return time.monotonic() - start


def moment(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp()


def timestamp(entry: dict[str, Any]) -> float:
    return moment(entry["at"])


# --------------------------------------------------------------------------- the server


def _ort_seconds(path: Path, first: float) -> float:
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = np.array([[first, 0.5, 0.25, 1.0]], dtype=np.float32)
    session.run(None, {"x": x})
    started = time.perf_counter()
    session.run(None, {"x": x})
    return time.perf_counter() - started


def check_misbehaving_models(flaky: Path, slow: Path) -> None:
    """The candidates misbehave as intended when onnxruntime runs them directly."""
    options = ort.SessionOptions()
    options.log_severity_level = 4  # the expected failure below is not worth an error line
    session = ort.InferenceSession(str(flaky), options, providers=["CPUExecutionProvider"])
    x = np.array([[0.5, 0.5, 0.25, 1.0]], dtype=np.float32)
    np.testing.assert_array_equal(session.run(None, {"x": x})[0], x)
    with pytest.raises(Exception, match="out of data bounds"):
        session.run(None, {"x": np.array([[0.9, 0.5, 0.25, 1.0]], dtype=np.float32)})
    seconds = _ort_seconds(slow, 0.5)
    assert seconds >= 0.03, f"the slow model ran in {seconds * 1000:.1f} ms; raise its iterations"


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    backend = str(request.param)
    workdir = tmp_path_factory.mktemp(f"rollouts-{backend}")
    build = workdir / "build"
    flaky = flaky_scale_model(build / "flaky-2.onnx", 1.0, FLAKY_THRESHOLD)
    slow = slow_scale_model(build / "slow-2.onnx", 1.0, SLOW_ITERATIONS)
    check_misbehaving_models(flaky, slow)
    pushes = []
    for model, candidates in {
        "flaky": [flaky],
        "slow": [slow],
        "healthy": [scale_model(build / "healthy-2.onnx", 1.0)],
        "manual": [scale_model(build / f"manual-{v}.onnx", 1.0) for v in (2, 3)],
        "unreleased": [scale_model(build / "unreleased-2.onnx", 1.0)],
    }.items():
        baseline = scale_model(build / f"{model}-1.onnx", 1.0)
        pushes += [Push(model, path, UNBATCHED) for path in [baseline, *candidates]]
    with ExitStack() as stack:
        db = registry_url(backend, workdir, stack, request)
        push_models(workdir, db, pushes)
        yield stack.enter_context(
            running_server(
                workdir,
                db,
                rollout_guard_interval_s=str(GUARD_INTERVAL_S),
                release_sync_interval_s="0.5",
            )
        )


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


# --------------------------------------------------------------------------- the guard acts


def test_a_candidate_that_fails_requests_is_rolled_back_and_traffic_returns_to_baseline(
    server: Server, http: httpx.Client
) -> None:
    set_alias(http, "flaky", "production", "1")
    plan = {"steps": [10, 50, 100], "hold_s": 1.0, "min_requests": 30, **LENIENT}
    with Traffic([server], "flaky") as load:
        rollout = start_rollout(http, "flaky", "2", plan)
        done = wait_for_rollout(http, "flaky", rollout["id"])
        wait_serving(http, "flaky", ["1"])
        after = time.time()
        load.wait_for(100)

    assert done["state"] == "rolled_back", done
    assert done["step"] == 0, "it should not have left the first step"
    assert done["reason"] == "tests", "the reason it was started with is kept"
    assert done["verdict"]["action"] == "rollback", done["verdict"]
    assert "error rate" in done["verdict"]["reason"], done["verdict"]
    assert http.get("/v1/models/flaky/routing").json()["aliases"] == {"production": "1"}
    served = load.since(after)
    assert versions(served) == {"1": len(served)}, versions(served)
    assert all(s.status == 200 for s in served)
    failed = load.since(0, after)
    assert any(s.status == 500 for s in failed), "the candidate should have failed some requests"

    entries = rollout_history(http, "flaky", rollout["id"])
    assert [e["action"] for e in entries] == ["rollout_started", "rollout_rolled_back"]
    started, rolled_back = entries
    assert (started["from_ref"], started["to_ref"]) == ("1", "2")
    assert started["details"]["plan"]["steps"] == [10, 50, 100]
    assert rolled_back["actor"] == "rollout-guard"
    assert (rolled_back["from_ref"], rolled_back["to_ref"]) == ("2", "1")
    assert "error rate" in rolled_back["reason"]
    figures = rolled_back["details"]["figures"]
    assert figures["candidate_requests"] >= 30, figures
    assert 0.1 < figures["candidate_error_rate"] < 0.6, figures
    assert figures["baseline_error_rate"] == 0, figures
    assert figures["percent"] == 10


def test_a_candidate_that_is_slow_is_rolled_back_for_its_p99(
    server: Server, http: httpx.Client
) -> None:
    set_alias(http, "slow", "production", "1")
    plan = {"steps": [20, 100], "hold_s": 1.0, "min_requests": 20, "p99_slack_ms": 10.0}
    with Traffic([server], "slow") as load:
        rollout = start_rollout(http, "slow", "2", plan)
        done = wait_for_rollout(http, "slow", rollout["id"])
        wait_serving(http, "slow", ["1"])
        after = time.time()
        load.wait_for(50)

    assert done["state"] == "rolled_back", done
    assert "p99" in done["verdict"]["reason"], done["verdict"]
    assert done["verdict"]["figures"]["latency_p_value"] < 0.001, done["verdict"]
    assert http.get("/v1/models/slow/routing").json()["aliases"] == {"production": "1"}
    served = load.since(after)
    assert versions(served) == {"1": len(served)}, versions(served)
    assert all(s.status == 200 for s in load.samples), "a slow candidate fails nothing"

    rolled_back = rollout_history(http, "slow", rollout["id"])[-1]
    assert rolled_back["action"] == "rollout_rolled_back"
    figures = rolled_back["details"]["figures"]
    assert figures["candidate_error_rate"] == 0, figures
    assert figures["candidate_p99_ms"] >= 30, figures
    assert figures["candidate_p99_ms"] > 1.5 * figures["baseline_p99_ms"] + 10, figures


def test_a_healthy_candidate_is_promoted_step_by_step_and_traffic_follows_each_step(
    server: Server, http: httpx.Client
) -> None:
    set_alias(http, "healthy", "production", "1")
    plan = {"steps": [10, 50, 100], "hold_s": 1.5, "min_requests": 30, **LENIENT}
    with Traffic([server], "healthy") as load:
        rollout = start_rollout(http, "healthy", "2", plan)
        done = wait_for_rollout(http, "healthy", rollout["id"])
        wait_serving(http, "healthy", ["2"])
        after = time.time()
        load.wait_for(50)

    assert done["state"] == "promoted", done
    assert http.get("/v1/models/healthy/routing").json()["aliases"] == {"production": "2"}
    entries = rollout_history(http, "healthy", rollout["id"])
    assert [e["action"] for e in entries] == [
        "rollout_started",
        "rollout_step",
        "rollout_step",
        "rollout_promoted",
    ]
    _, to_half, to_all, promoted = entries
    assert (to_half["from_ref"], to_half["to_ref"]) == ("2@10%", "2@50%")
    assert (to_all["from_ref"], to_all["to_ref"]) == ("2@50%", "2@100%")
    assert (promoted["from_ref"], promoted["to_ref"]) == ("1", "2")
    for entry in entries[1:]:
        assert entry["actor"] == "rollout-guard"
        figures = entry["details"]["figures"]
        assert figures["candidate_requests"] >= 30, figures
        assert figures["elapsed_s"] >= 1.5, figures

    # Each step's share of candidate responses, away from the moments the split changed.
    edges = [timestamp(e) for e in entries]
    for (begin, end), percent in zip(itertools.pairwise(edges), [10, 50, 100], strict=True):
        samples = load.since(begin + 0.2, end - 0.05)
        assert len(samples) >= 40, (percent, len(samples))
        observed = share(samples, "2")
        low, high = {10: (0.02, 0.22), 50: (0.35, 0.65), 100: (1.0, 1.0)}[percent]
        assert low <= observed <= high, (percent, observed, versions(samples))
    assert versions(load.since(after)) == {"2": len(load.since(after))}


# --------------------------------------------------------------------------- by hand


def test_a_rollout_can_be_paused_resumed_aborted_and_promoted_by_hand(
    server: Server, http: httpx.Client
) -> None:
    set_alias(http, "manual", "production", "1")
    plan = {"steps": [20, 60, 100], "hold_s": 1.0, "min_requests": 40, **LENIENT}
    rollout = start_rollout(http, "manual", "2", plan)
    # Without traffic the guard cannot have moved it yet.
    paused = act(http, "manual", "pause", "looking into a dashboard")
    assert paused.status_code == 200, paused.text
    assert (paused.json()["state"], paused.json()["step"]) == ("paused", 0)
    assert act(http, "manual", "pause").status_code == 409

    second = http.post("/v1/models/manual/rollouts", json={"candidate": "3", "plan": plan})
    assert second.status_code == 409, second.text
    assert "already has rollout" in second.json()["error"]

    # Paused: the 80/20 split holds, and however long and busy, the step does not advance.
    assert serving(http, "manual")["weights"] == [0.8, 0.2]
    with Traffic([server], "manual") as load:
        time.sleep(2.5)
    held = rollout_by_id(http, "manual", rollout["id"])
    assert (held["state"], held["step"]) == ("paused", 0), held
    assert len(load.samples) >= 200, len(load.samples)
    assert 0.1 <= share(load.samples, "2") <= 0.3, versions(load.samples)

    resumed = act(http, "manual", "resume", "dashboard is fine")
    assert resumed.status_code == 200, resumed.text
    assert (resumed.json()["state"], resumed.json()["step"]) == ("running", 0)
    assert moment(resumed.json()["step_started_at"]) > moment(paused.json()["step_started_at"])
    with Traffic([server], "manual") as load:
        advanced = wait_for_rollout(http, "manual", rollout["id"], step=1, timeout_s=20)
    # Traffic stopped: the second step cannot gather its 40 candidate requests.
    assert (advanced["state"], advanced["step"]) == ("running", 1), advanced

    aborted = act(http, "manual", "abort", "changed my mind")
    assert aborted.status_code == 200, aborted.text
    assert aborted.json()["state"] == "aborted"
    wait_serving(http, "manual", ["1"])
    with Traffic([server], "manual") as load:
        load.wait_for(100)
    assert versions(load.samples) == {"1": len(load.samples)}
    assert http.get("/v1/models/manual/routing").json()["aliases"] == {"production": "1"}
    assert act(http, "manual", "resume").status_code == 404

    actions = [
        (e["action"], e["actor"] != "rollout-guard", e["reason"])
        for e in rollout_history(http, "manual", rollout["id"])
    ]
    assert actions == [
        ("rollout_started", True, "tests"),
        ("rollout_paused", True, "looking into a dashboard"),
        ("rollout_resumed", True, "dashboard is fine"),
        ("rollout_step", False, actions[3][2]),
        ("rollout_aborted", True, "changed my mind"),
    ]

    # A second rollout, promoted by hand before the guard would have judged it.
    second_rollout = start_rollout(http, "manual", "3", {"steps": [10, 100], "hold_s": 600})
    promoted = act(http, "manual", "promote", "ship it")
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["state"] == "promoted"
    assert http.get("/v1/models/manual/routing").json()["aliases"] == {"production": "3"}
    wait_serving(http, "manual", ["3"])
    with Traffic([server], "manual") as load:
        load.wait_for(50)
    assert versions(load.samples) == {"3": len(load.samples)}
    last = rollout_history(http, "manual", second_rollout["id"])[-1]
    assert (last["action"], last["from_ref"], last["to_ref"]) == ("rollout_promoted", "1", "3")
    assert last["reason"] == "ship it"


def test_a_rollout_needs_a_production_alias_or_a_named_baseline(
    server: Server, http: httpx.Client
) -> None:
    refused = http.post("/v1/models/unreleased/rollouts", json={"candidate": "2"})
    assert refused.status_code == 409, refused.text
    message = refused.json()["error"]
    assert "no 'production' alias" in message and "name the baseline" in message, message
    assert http.get("/v1/models/unreleased/rollouts").json() == []

    named = http.post(
        "/v1/models/unreleased/rollouts",
        json={"candidate": "2", "baseline": "1", "plan": {"hold_s": 600}},
    )
    assert named.status_code == 201, named.text
    assert (named.json()["baseline"], named.json()["candidate"]) == ("1", "2")
    aborted = act(http, "unreleased", "abort")
    assert aborted.status_code == 200, aborted.text
