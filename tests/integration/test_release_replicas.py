"""Three ``modelport serve`` replicas on one PostgreSQL database: release changes reach every
replica, a missed notice heals, and exactly one replica runs the rollout guard, judging rollouts
from every replica's traffic and handing the role over when it dies.

Replica A polls the release clock every 0.5 s; B and C poll only every 30 s, so within a test
they learn of a change through LISTEN/NOTIFY alone.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass

import pytest
from sqlalchemy import select, update

from modelport.services.rollout_guard import LEASE
from modelport.stores.releases import ReleaseStore
from modelport.stores.sql.engine import create_engine
from modelport.stores.sql.schema import aliases, models, release_clock

from .conftest import TENANT, Push, Server, postgres_database, push_models, running_server
from .oip import metric
from .onnx_models import flaky_scale_model, scale_model
from .test_rollouts import (
    FLAKY_THRESHOLD,
    LENIENT,
    UNBATCHED,
    Traffic,
    act,
    infer_body,
    rollout_by_id,
    rollout_history,
    serving,
    set_alias,
    start_rollout,
    timestamp,
    wait_for_rollout,
)

pytestmark = pytest.mark.postgres

#: A change made through one replica must be served by the others within this.
PROPAGATION_S = 2.0
GUARD_INTERVAL_S = 0.3
LEASE_S = 2.0


@dataclass
class Deployment:
    database_url: str
    replicas: dict[str, Server]

    def __getitem__(self, name: str) -> Server:
        return self.replicas[name]


@pytest.fixture(scope="module")
def deployment(
    postgres_admin_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    workdir = tmp_path_factory.mktemp("replicas")
    build = workdir / "build"
    pushes = [
        *[Push("synced", scale_model(build / f"synced-{v}.onnx", float(v))) for v in (1, 2, 3)],
        *[Push("healed", scale_model(build / f"healed-{v}.onnx", float(v))) for v in (1, 2)],
        Push("judged", scale_model(build / "judged-1.onnx", 1.0), UNBATCHED),
        Push("judged", flaky_scale_model(build / "judged-2.onnx", 1.0, FLAKY_THRESHOLD), UNBATCHED),
        Push("judged", scale_model(build / "judged-3.onnx", 1.0), UNBATCHED),
        *[Push("failover", scale_model(build / f"failover-{v}.onnx", 1.0)) for v in (1, 2)],
    ]
    with ExitStack() as stack:
        db = stack.enter_context(postgres_database(postgres_admin_url))
        push_models(workdir, db, pushes)
        replicas = {
            name: stack.enter_context(
                running_server(
                    workdir,
                    db,
                    cache_dir=str(workdir / f"cache-{name}"),
                    release_sync_interval_s=poll_s,
                    rollout_guard_interval_s=str(GUARD_INTERVAL_S),
                    rollout_guard_lease_s=str(LEASE_S),
                )
            )
            for name, poll_s in [("A", "0.5"), ("B", "30"), ("C", "30")]
        }
        yield Deployment(db, replicas)


# --------------------------------------------------------------------------- helpers


def served_version(server: Server, model: str) -> str | None:
    with server.client() as http:
        response = http.post(f"/v2/models/{model}/infer", json=infer_body(0.1))
    assert response.status_code == 200, response.text
    return response.headers["x-model-version"]


def until_served(
    replicas: Sequence[Server], model: str, version: str, start: float, deadline_s: float = 5.0
) -> list[float]:
    """Seconds after ``start`` at which each replica first served ``model`` from ``version``
    (unpinned), polling all of them; fails after ``deadline_s``."""
    found: dict[int, float] = {}
    while len(found) < len(replicas):
        for i, server in enumerate(replicas):
            if i not in found and served_version(server, model) == version:
                found[i] = time.monotonic() - start
        assert time.monotonic() - start < deadline_s, f"version {version} not served: {found}"
        time.sleep(0.01)
    return [found[i] for i in range(len(replicas))]


def until_installed(
    replicas: Sequence[Server], model: str, versions: list[str], weights: list[float], start: float
) -> list[float]:
    """Like :func:`until_served`, for a split: each replica's installed routing."""
    found: dict[int, float] = {}
    while len(found) < len(replicas):
        for i, server in enumerate(replicas):
            if i in found:
                continue
            with server.client() as http:
                installed = serving(http, model)
            if (installed.get("versions"), installed.get("weights")) == (versions, weights):
                found[i] = time.monotonic() - start
        assert time.monotonic() - start < 5.0, f"split not installed: {found}"
        time.sleep(0.01)
    return [found[i] for i in range(len(replicas))]


def lease_holder(database_url: str) -> str | None:
    """Who holds the rollout guard's lease, read through the release store."""

    async def main() -> str | None:
        engine = create_engine(database_url)
        try:
            held = await ReleaseStore(engine).leases.holder(LEASE)
        finally:
            await engine.dispose()
        return None if held is None else held[0]

    return asyncio.run(main())


def guard_replicas(server: Server) -> list[str]:
    """The guard ids this server logged on becoming the leader, in order."""
    ids = []
    for line in server.log_path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if entry.get("event") == "rollout_guard_lease" and entry.get("leader"):
            ids.append(entry["replica"])
    return ids


def leader_of(deployment: Deployment) -> tuple[str, str]:
    """The lease holder's guard id and the name of the replica it runs in."""
    deadline = time.monotonic() + 10
    while (holder := lease_holder(deployment.database_url)) is None:
        assert time.monotonic() < deadline, "nobody took the guard's lease"
        time.sleep(0.1)
    names = [n for n, s in deployment.replicas.items() if holder in guard_replicas(s)]
    assert len(names) == 1, (holder, {n: guard_replicas(s) for n, s in deployment.replicas.items()})
    return holder, names[0]


def move_alias_without_notice(database_url: str, model: str, alias: str, version: str) -> None:
    """Move an alias and advance the release clock as a change does, but send no NOTIFY: what
    every replica sees when the notice is lost."""

    async def main() -> None:
        engine = create_engine(database_url)
        try:
            async with engine.begin() as conn:
                model_id = (
                    await conn.execute(
                        select(models.c.id).where(models.c.tenant == TENANT, models.c.name == model)
                    )
                ).scalar_one()
                moved = await conn.execute(
                    update(aliases)
                    .where(aliases.c.model_id == model_id, aliases.c.name == alias)
                    .values(version=int(version))
                )
                assert moved.rowcount == 1
                await conn.execute(
                    update(release_clock)
                    .where(release_clock.c.id == 1)
                    .values(generation=release_clock.c.generation + 1)
                )
        finally:
            await engine.dispose()

    asyncio.run(main())


# --------------------------------------------------------------------------- propagation


def test_alias_routing_and_rollout_changes_through_one_replica_reach_the_others_within_2_s(
    deployment: Deployment,
) -> None:
    a, others = deployment["A"], [deployment["B"], deployment["C"]]
    with a.client() as http:
        set_alias(http, "synced", "production", "1")
        until_served(others, "synced", "1", time.monotonic())
        delays: dict[str, list[float]] = {}

        start = time.monotonic()
        set_alias(http, "synced", "production", "2")
        delays["alias moved to 2"] = until_served(others, "synced", "2", start)

        start = time.monotonic()
        routed = http.put(
            "/v1/models/synced/routing",
            json={"splits": [{"target": "3", "weight": 1}], "reason": "tests"},
        )
        assert routed.status_code == 200, routed.text
        delays["routing to 3"] = until_served(others, "synced", "3", start)

        start = time.monotonic()
        assert http.delete("/v1/models/synced/routing").status_code == 200
        delays["routing removed"] = until_served(others, "synced", "2", start)

        start = time.monotonic()
        # It cannot gather its candidate requests: the guard leaves the split alone.
        rollout = start_rollout(
            http, "synced", "3", {"steps": [50, 100], "min_requests": 1_000_000}
        )
        delays["rollout at 50 %"] = until_installed(others, "synced", ["2", "3"], [0.5, 0.5], start)

        start = time.monotonic()
        promoted = act(http, "synced", "promote")
        assert promoted.status_code == 200, promoted.text
        delays["rollout promoted"] = until_served(others, "synced", "3", start)
        assert rollout_by_id(http, "synced", rollout["id"])["state"] == "promoted"

    late = {change: seconds for change, seconds in delays.items() if max(seconds) >= PROPAGATION_S}
    assert not late, f"served later than {PROPAGATION_S} s: {late} (all: {delays})"


def test_a_missed_notice_is_healed_by_the_periodic_poll(deployment: Deployment) -> None:
    a, b = deployment["A"], deployment["B"]
    with a.client() as http:
        set_alias(http, "healed", "production", "1")
    until_served([a, b], "healed", "1", time.monotonic())

    start = time.monotonic()
    move_alias_without_notice(deployment.database_url, "healed", "production", "2")
    # A polls every 0.5 s: it finds the change by itself (and loads version 2 first).
    [healed] = until_served([a], "healed", "2", start)
    assert healed < PROPAGATION_S, healed
    # B polls every 30 s and got no notice: still the old routing, proving no NOTIFY went out.
    time.sleep(0.5)
    assert served_version(b, "healed") == "1"

    # The next notice, for any change, brings B the whole current state, the missed move too.
    start = time.monotonic()
    with a.client() as http:
        set_alias(http, "healed", "staging", "1")
    [caught_up] = until_served([b], "healed", "2", start)
    assert caught_up < PROPAGATION_S, caught_up
    with b.client() as http:
        assert serving(http, "healed")["aliases"] == {"production": "2", "staging": "1"}


# --------------------------------------------------------------------------- the guard


def test_the_guard_judges_traffic_served_by_a_replica_that_does_not_run_it(
    deployment: Deployment,
) -> None:
    _, leader_name = leader_of(deployment)
    leader = deployment[leader_name]
    other = next(s for n, s in deployment.replicas.items() if n != leader_name)
    plan = {"steps": [50, 100], "hold_s": 1.0, "min_requests": 40, **LENIENT}

    with other.client() as http:
        set_alias(http, "judged", "production", "1")
        # Only `other` serves the candidate: every request the guard counts was published by it.
        with Traffic([other], "judged"):
            failing = start_rollout(http, "judged", "2", plan)
            rolled_back = wait_for_rollout(http, "judged", failing["id"])
        with Traffic([other], "judged"):
            healthy = start_rollout(http, "judged", "3", plan)
            promoted = wait_for_rollout(http, "judged", healthy["id"])
        failing_history = rollout_history(http, "judged", failing["id"])
        healthy_history = rollout_history(http, "judged", healthy["id"])

    assert rolled_back["state"] == "rolled_back", rolled_back
    assert "error rate" in rolled_back["verdict"]["reason"], rolled_back
    verdict = failing_history[-1]
    assert verdict["actor"] == "rollout-guard"
    assert verdict["details"]["figures"]["candidate_requests"] >= 40, verdict

    assert promoted["state"] == "promoted", promoted
    assert [e["action"] for e in healthy_history] == [
        "rollout_started",
        "rollout_step",
        "rollout_promoted",
    ]
    for entry in healthy_history[1:]:
        assert entry["details"]["figures"]["candidate_requests"] >= 40, entry

    # The replica that judged served none of it.
    with leader.client() as http:
        text = http.get("/metrics").text
    assert metric(text, "modelport_inference_requests_total", model="judged") == 0
    assert leader_of(deployment)[1] == leader_name, "the lease should not have moved"


def test_the_guard_runs_in_exactly_one_replica_and_another_takes_over_when_it_dies(
    deployment: Deployment,
) -> None:
    holder, leader_name = leader_of(deployment)
    for _ in range(5):  # one holder, renewing: the lease does not wander
        assert lease_holder(deployment.database_url) == holder
        time.sleep(0.2)
    ever_led = [n for n, s in deployment.replicas.items() if guard_replicas(s)]
    assert ever_led == [leader_name], ever_led

    leader = deployment[leader_name]
    survivors = {n: s for n, s in deployment.replicas.items() if n != leader_name}
    entry = next(iter(survivors.values()))
    plan = {"steps": [50, 100], "hold_s": 1.5, "min_requests": 30, **LENIENT}
    with entry.client() as http:
        set_alias(http, "failover", "production", "1")
        with Traffic(list(survivors.values()), "failover"):
            rollout = start_rollout(http, "failover", "2", plan)
            killed_at = time.time()
            leader.process.kill()  # no clean shutdown: the lease is not released
            leader.process.wait(timeout=10)
            while (new_holder := lease_holder(deployment.database_url)) in (holder, None):
                assert time.time() - killed_at < 10, "nobody took over the guard's lease"
                time.sleep(0.05)
            took_over_s = time.time() - killed_at
            done = wait_for_rollout(http, "failover", rollout["id"])
        entries = rollout_history(http, "failover", rollout["id"])

    assert took_over_s < LEASE_S + GUARD_INTERVAL_S + 0.7, took_over_s
    successors = [n for n, s in survivors.items() if new_holder in guard_replicas(s)]
    assert len(successors) == 1, (new_holder, successors)

    # The rollout went on being judged, by the successor, to the end.
    assert done["state"] == "promoted", done
    assert [e["action"] for e in entries] == ["rollout_started", "rollout_step", "rollout_promoted"]
    for decided in entries[1:]:
        assert decided["actor"] == "rollout-guard"
        assert timestamp(decided) > killed_at, "decided before the leader died"
    for server in survivors.values():
        assert served_version(server, "failover") == "2"
