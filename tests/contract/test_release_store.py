"""The release store contract, run against SQLite and a real PostgreSQL: aliases, routing
policies, rollouts, the audit log, leases, per-replica statistics and the release clock."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from modelport.errors import Conflict, ModelNotFound, VersionNotFound
from modelport.routing.policy import RoutingPolicy, ShadowSpec, Split
from modelport.routing.request_stats import RequestStats
from modelport.services.releases import alias_removable, policy_targets, version_unused
from modelport.stores.audit import Change
from modelport.stores.registry import RegistryStore
from modelport.stores.releases import ReleaseStore
from modelport.stores.rollouts import RolloutRecord
from modelport.stores.sql import create_engine
from modelport.stores.tenancy import TenancyStore
from modelport.stores.version_stats import VersionCounts

MODEL = "ranker"
PLAN = {"steps": [10, 50, 100], "hold_s": 60, "min_requests": 100}


def change(action: str = "alias_moved", reason: str = "because") -> Change:
    return Change(action, "alice", reason)


async def set_policy(
    store: ReleaseStore, tenant: str, policy: RoutingPolicy | None, change: Change
) -> None:
    """Store ``policy`` with the check the release service runs in the same transaction."""
    stored = None if policy is None else policy.to_dict()
    await store.set_policy(tenant, MODEL, stored, change, policy_targets(MODEL, policy))


async def delete_alias(store: ReleaseStore, tenant: str, alias: str, change: Change) -> str:
    return await store.delete_alias(tenant, MODEL, alias, change, alias_removable(MODEL, alias))


async def delete_version(store: ReleaseStore, tenant: str, version: str, change: Change) -> None:
    await store.delete_version(tenant, MODEL, version, change, version_unused(MODEL, version))


# --------------------------------------------------------------------------- backends


@dataclass
class World:
    """One tenant (fresh per test) with model ``ranker`` at versions 1, 2 and 3."""

    engine: AsyncEngine
    store: ReleaseStore
    registry: RegistryStore
    tenancy: TenancyStore
    tenant: str

    async def add_model(self, tenant: str, name: str, versions: int) -> None:
        if await self.tenancy.get_tenant(tenant) is None:
            await self.tenancy.create_tenant(tenant)
        await self.registry.ensure_model(tenant, name)
        for n in range(versions):
            await self.registry.add_version(
                tenant,
                name,
                artifact_uri=f"mem://{tenant}/{name}/{n + 1}",
                sha256="0" * 64,
                signature={"inputs": [], "outputs": []},
                config={},
                created_by="tests",
            )

    async def aliases(self, model: str = MODEL) -> dict[str, str]:
        return (await self.store.model_releases(self.tenant, model)).aliases

    async def start(self, baseline: str = "1", candidate: str = "2") -> RolloutRecord:
        return await self.store.rollouts.start(
            self.tenant, MODEL, baseline, candidate, PLAN, {}, change("rollout_started")
        )

    @asynccontextmanager
    async def bumps(self, times: int) -> AsyncIterator[None]:
        """The release clock moves by exactly ``times`` over the block."""
        before = await self.store.generation()
        yield
        assert await self.store.generation() - before == times

    @asynccontextmanager
    async def unchanged(self) -> AsyncIterator[None]:
        """Neither the clock, the model's releases nor its audit log move over the block."""
        before = (
            await self.store.generation(),
            await self.store.model_releases(self.tenant, MODEL),
            await self.store.audit.history(self.tenant, MODEL),
        )
        yield
        after = (
            await self.store.generation(),
            await self.store.model_releases(self.tenant, MODEL),
            await self.store.audit.history(self.tenant, MODEL),
        )
        assert after == before


@pytest.fixture
async def world(database_url: str) -> AsyncIterator[World]:
    engine = create_engine(database_url)
    w = World(
        engine,
        ReleaseStore(engine),
        RegistryStore(engine),
        TenancyStore(engine),
        f"t{secrets.token_hex(4)}",
    )
    try:
        await w.add_model(w.tenant, MODEL, 3)
        yield w
    finally:
        await engine.dispose()


# --------------------------------------------------------------------------- aliases


async def test_set_alias_returns_the_previous_version_and_audits_the_move(world: World) -> None:
    store, tenant = world.store, world.tenant
    async with world.bumps(2):
        assert (
            await store.set_alias(tenant, MODEL, "production", "1", change(reason="first")) is None
        )
        previous = await store.set_alias(tenant, MODEL, "production", "2", change(reason="v2 ok"))
    assert previous == "1"
    assert await world.aliases() == {"production": "2"}
    latest, first = await store.audit.history(tenant, MODEL)
    assert (latest.action, latest.actor, latest.reason) == ("alias_moved", "alice", "v2 ok")
    assert (latest.from_ref, latest.to_ref) == ("1", "2")
    assert (first.from_ref, first.to_ref) == (None, "1")
    assert latest.tenant == tenant and latest.model == MODEL
    assert latest.at >= first.at and latest.at.tzinfo is not None


@pytest.mark.parametrize("version", ["9", "0", "latest", "-1", ""])
async def test_set_alias_to_a_missing_version_changes_nothing(world: World, version: str) -> None:
    await world.store.set_alias(world.tenant, MODEL, "production", "1", change())
    async with world.unchanged():
        with pytest.raises(VersionNotFound):
            await world.store.set_alias(world.tenant, MODEL, "production", version, change())
    assert await world.aliases() == {"production": "1"}


async def test_an_unknown_model_is_not_found(world: World) -> None:
    with pytest.raises(ModelNotFound):
        await world.store.set_alias(world.tenant, "nope", "production", "1", change())
    with pytest.raises(ModelNotFound):
        await world.store.model_releases(world.tenant, "nope")


async def test_delete_alias_is_refused_while_the_routing_policy_uses_it(world: World) -> None:
    store, tenant = world.store, world.tenant
    await store.set_alias(tenant, MODEL, "production", "1", change())
    await store.set_alias(tenant, MODEL, "canary", "2", change())
    policy = RoutingPolicy(splits=(Split("production", 90), Split("canary", 10)))
    await set_policy(store, tenant, policy, change("routing_changed"))
    async with world.unchanged():
        with pytest.raises(Conflict) as info:
            await delete_alias(store, tenant, "canary", change("alias_deleted"))
    assert "'canary'" in info.value.message and "routing policy" in info.value.message

    await set_policy(store, tenant, None, change("routing_changed"))
    async with world.bumps(1):
        assert await delete_alias(store, tenant, "canary", change("alias_deleted")) == "2"
    assert await world.aliases() == {"production": "1"}
    entry = (await store.audit.history(tenant, MODEL, limit=1))[0]
    assert (entry.action, entry.from_ref, entry.to_ref) == ("alias_deleted", "2", None)


async def test_deleting_an_alias_that_does_not_exist_is_a_conflict(world: World) -> None:
    async with world.unchanged():
        with pytest.raises(Conflict):
            await delete_alias(world.store, world.tenant, "canary", change())


# --------------------------------------------------------------------------- routing policies


async def test_a_policy_is_stored_and_read_back(world: World) -> None:
    store, tenant = world.store, world.tenant
    await store.set_alias(tenant, MODEL, "production", "1", change())
    policy = RoutingPolicy(
        splits=(Split("production", 90), Split("2", 10)),
        sticky_key="user",
        shadow=ShadowSpec("3", 25, 0.01),
        fallback="production",
    )
    async with world.bumps(1):
        await set_policy(store, tenant, policy, change("routing_changed", "canary 10 %"))
    assert (await store.model_releases(tenant, MODEL)).policy == policy.to_dict()
    entry = (await store.audit.history(tenant, MODEL, limit=1))[0]
    assert entry.action == "routing_changed" and entry.reason == "canary 10 %"
    assert entry.details == {"policy": policy.to_dict()}


@pytest.mark.parametrize(
    ("policy", "error"),
    [
        (RoutingPolicy(splits=(Split("canary", 1),)), Conflict),
        (RoutingPolicy(splits=(Split("9", 1),)), VersionNotFound),
        (RoutingPolicy(splits=(Split("1", 1),), shadow=ShadowSpec("canary", 5)), Conflict),
        (RoutingPolicy(splits=(Split("1", 1),), fallback="7"), VersionNotFound),
    ],
    ids=["unknown-alias", "missing-version", "unknown-shadow", "missing-fallback"],
)
async def test_a_policy_naming_an_unknown_target_is_refused(
    world: World, policy: RoutingPolicy, error: type[Exception]
) -> None:
    await world.store.set_alias(world.tenant, MODEL, "production", "1", change())
    async with world.unchanged():
        with pytest.raises(error):
            await set_policy(world.store, world.tenant, policy, change("routing_changed"))


# --------------------------------------------------------------------------- rollouts


async def test_a_second_active_rollout_is_refused(world: World) -> None:
    first = await world.start()
    assert (first.step, first.state, first.started_by) == (0, "running", "alice")
    assert (first.baseline, first.candidate, first.plan) == ("1", "2", PLAN)
    async with world.unchanged():
        with pytest.raises(Conflict) as info:
            await world.start("1", "3")
    assert str(first.id) in info.value.message

    # A paused rollout is still in progress.
    paused = await world.store.rollouts.transition(first, change("rollout_paused"), state="paused")
    with pytest.raises(Conflict):
        await world.start("1", "3")
    await world.store.rollouts.transition(paused, change("rollout_aborted"), state="aborted")
    second = await world.start("1", "3")
    assert second.id != first.id and second.active
    assert [r.id for r in await world.store.rollouts.of_model(world.tenant, MODEL)] == [
        second.id,
        first.id,
    ]


async def test_a_rollout_of_a_missing_version_is_refused(world: World) -> None:
    async with world.unchanged():
        with pytest.raises(VersionNotFound):
            await world.start("1", "4")


async def test_transitions_are_optimistic(world: World) -> None:
    rollout = await world.start()
    async with world.bumps(1):
        moved = await world.store.rollouts.transition(
            rollout, change("rollout_advanced"), step=1, snapshot={"at": 1}
        )
    assert (moved.step, moved.state, moved.snapshot) == (1, "running", {"at": 1})
    assert moved.step_started_at >= rollout.step_started_at

    # A second guard acting on the same old record lost the race: it must not move it again.
    async with world.unchanged():
        with pytest.raises(Conflict):
            await world.store.rollouts.transition(rollout, change("rollout_advanced"), step=1)
        with pytest.raises(Conflict):
            await world.store.rollouts.transition(
                rollout, change("rollout_aborted"), state="aborted"
            )
    stored = await world.store.rollouts.get(rollout.id)
    assert stored is not None and (stored.step, stored.state) == (1, "running")


async def test_concurrent_transitions_from_one_record_let_exactly_one_win(world: World) -> None:
    rollout = await world.start()
    results = await asyncio.gather(
        *(
            world.store.rollouts.transition(rollout, change("rollout_advanced"), step=1)
            for _ in range(4)
        ),
        return_exceptions=True,
    )
    assert sum(isinstance(r, RolloutRecord) for r in results) == 1
    assert sum(isinstance(r, Conflict) for r in results) == 3
    advanced = [
        e
        for e in await world.store.audit.history(world.tenant, MODEL)
        if e.action == "rollout_advanced"
    ]
    assert len(advanced) == 1


async def test_promotion_moves_production_with_the_rollout(world: World) -> None:
    store, tenant = world.store, world.tenant
    await store.set_alias(tenant, MODEL, "production", "1", change())
    rollout = await world.start("1", "2")
    async with world.bumps(1):
        done = await store.rollouts.transition(
            rollout, change("rollout_promoted"), state="promoted", move_alias="production"
        )
    assert done.state == "promoted" and not done.active
    releases = await store.model_releases(tenant, MODEL)
    assert releases.aliases == {"production": "2"}
    assert releases.rollout is None
    assert rollout.id not in {r.id for r in await store.rollouts.active()}


async def test_a_stale_promotion_leaves_production_where_it_was(world: World) -> None:
    store, tenant = world.store, world.tenant
    await store.set_alias(tenant, MODEL, "production", "1", change())
    rollout = await world.start("1", "2")
    await store.rollouts.transition(rollout, change("rollout_rolled_back"), state="rolled_back")
    async with world.unchanged():
        with pytest.raises(Conflict):
            await store.rollouts.transition(
                rollout, change("rollout_promoted"), state="promoted", move_alias="production"
            )
    assert await world.aliases() == {"production": "1"}


# --------------------------------------------------------------------------- deleting versions


async def test_a_version_an_alias_points_at_cannot_be_deleted(world: World) -> None:
    await world.store.set_alias(world.tenant, MODEL, "production", "1", change())
    await world.store.set_alias(world.tenant, MODEL, "stable", "1", change())
    async with world.unchanged():
        with pytest.raises(Conflict) as info:
            await delete_version(world.store, world.tenant, "1", change("version_deleted"))
    assert "alias 'production'" in info.value.message
    assert "alias 'stable'" in info.value.message
    assert [v.version for v in await world.registry.list_versions(world.tenant, MODEL)] == [
        "1",
        "2",
        "3",
    ]


async def test_a_version_in_a_rollout_cannot_be_deleted(world: World) -> None:
    rollout = await world.start("1", "2")
    for version in ("1", "2"):
        with pytest.raises(Conflict) as info:
            await delete_version(world.store, world.tenant, version, change())
        assert f"rollout {rollout.id}" in info.value.message
    # Once the rollout is over, nothing holds the versions.
    await world.store.rollouts.transition(rollout, change("rollout_aborted"), state="aborted")
    await delete_version(world.store, world.tenant, "2", change("version_deleted"))


async def test_a_version_the_routing_policy_names_cannot_be_deleted(world: World) -> None:
    policy = RoutingPolicy(splits=(Split("1", 90), Split("2", 10)))
    await set_policy(world.store, world.tenant, policy, change("routing_changed"))
    with pytest.raises(Conflict) as info:
        await delete_version(world.store, world.tenant, "2", change())
    assert "the routing policy" in info.value.message


async def test_an_unused_version_is_deleted_and_audited(world: World) -> None:
    store, tenant = world.store, world.tenant
    await store.set_alias(tenant, MODEL, "production", "1", change())
    async with world.bumps(1):
        await delete_version(store, tenant, "2", change("version_deleted", "bad build"))
    assert [v.version for v in await world.registry.list_versions(tenant, MODEL)] == ["1", "3"]
    entry = (await store.audit.history(tenant, MODEL, limit=1))[0]
    assert (entry.action, entry.from_ref, entry.to_ref, entry.reason) == (
        "version_deleted",
        "2",
        None,
        "bad build",
    )
    # A deleted version cannot be pointed at any more.
    with pytest.raises(VersionNotFound):
        await store.set_alias(tenant, MODEL, "canary", "2", change())
    with pytest.raises(VersionNotFound):
        await delete_version(store, tenant, "2", change())


async def test_the_newest_version_serving_unpinned_traffic_cannot_be_deleted(
    world: World,
) -> None:
    # Without a production alias or a split, the newest version answers unpinned requests.
    with pytest.raises(Conflict) as info:
        await delete_version(world.store, world.tenant, "3", change())
    assert "unpinned traffic" in info.value.message
    await world.store.set_alias(world.tenant, MODEL, "production", "2", change())
    await delete_version(world.store, world.tenant, "3", change("version_deleted"))
    assert [v.version for v in await world.registry.list_versions(world.tenant, MODEL)] == [
        "1",
        "2",
    ]


async def test_a_deleted_version_number_is_never_reused(world: World) -> None:
    await world.store.set_alias(world.tenant, MODEL, "production", "1", change())
    await delete_version(world.store, world.tenant, "3", change("version_deleted"))
    pushed = await world.registry.add_version(
        world.tenant,
        MODEL,
        artifact_uri="mem://new",
        sha256="1" * 64,
        signature={"inputs": [], "outputs": []},
        config={},
        created_by="tests",
    )
    assert pushed.version == "4"


# --------------------------------------------------------------------------- leases


async def test_only_one_holder_acquires_a_lease(world: World) -> None:
    store, name = world.store, f"guard-{world.tenant}"
    assert await store.leases.acquire(name, "replica-a", 30)
    assert not await store.leases.acquire(name, "replica-b", 30)
    holder = await store.leases.holder(name)
    assert holder is not None and holder[0] == "replica-a"


async def test_concurrent_acquirers_of_a_free_lease_get_one_winner(world: World) -> None:
    store, name = world.store, f"guard-{world.tenant}"
    won = await asyncio.gather(*(store.leases.acquire(name, f"replica-{i}", 30) for i in range(5)))
    assert sum(won) == 1
    holder = await store.leases.holder(name)
    assert holder is not None and holder[0] == f"replica-{won.index(True)}"


async def test_the_holder_renews_its_lease(world: World) -> None:
    store, name = world.store, f"guard-{world.tenant}"
    assert await store.leases.acquire(name, "replica-a", 1)
    first = await store.leases.holder(name)
    assert await store.leases.acquire(name, "replica-a", 60)
    renewed = await store.leases.holder(name)
    assert first is not None and renewed is not None
    assert renewed[0] == "replica-a" and renewed[1] > first[1]
    assert not await store.leases.acquire(name, "replica-b", 60)


async def test_an_expired_lease_is_taken_over(world: World) -> None:
    store, name = world.store, f"guard-{world.tenant}"
    assert await store.leases.acquire(name, "replica-a", 0.05)
    await asyncio.sleep(0.1)
    assert await store.leases.acquire(name, "replica-b", 30)
    assert not await store.leases.acquire(name, "replica-a", 30)
    holder = await store.leases.holder(name)
    assert holder is not None and holder[0] == "replica-b"


async def test_only_the_holder_releases_a_lease(world: World) -> None:
    store, name = world.store, f"guard-{world.tenant}"
    assert await store.leases.acquire(name, "replica-a", 30)
    await store.leases.release(name, "replica-b")
    assert not await store.leases.acquire(name, "replica-b", 30)
    await store.leases.release(name, "replica-a")
    assert await store.leases.holder(name) is None
    assert await store.leases.acquire(name, "replica-b", 30)


# --------------------------------------------------------------------------- statistics


def window(requests: int, errors: int = 0, latency_ms: float = 10.0) -> VersionCounts:
    w = RequestStats()
    for i in range(requests):
        w.record(i >= errors, latency_ms / 1000)
    return VersionCounts(w.requests, w.errors, list(w.latency))


async def test_stats_from_replicas_are_summed_and_republishing_replaces(world: World) -> None:
    store, tenant = world.store, world.tenant
    await store.stats.publish(
        "replica-a",
        [(tenant, MODEL, "1", window(100, 2, 5)), (tenant, MODEL, "2", window(10, 1, 50))],
    )
    await store.stats.publish("replica-b", [(tenant, MODEL, "1", window(50, 3, 5))])
    summed = await store.stats.summed(tenant, MODEL, ["1", "2", "3"])
    assert (summed["1"].requests, summed["1"].errors) == (150, 5)
    assert summed["1"] == window(100, 2, 5).add(window(50, 3, 5))
    assert summed["2"] == window(10, 1, 50)
    assert summed["3"] == VersionCounts()

    # Windows are cumulative per replica: a later publish replaces the earlier one.
    await store.stats.publish("replica-a", [(tenant, MODEL, "1", window(120, 2, 5))])
    summed = await store.stats.summed(tenant, MODEL, ["1"])
    assert (summed["1"].requests, summed["1"].errors) == (170, 5)


async def test_stats_of_other_models_and_tenants_are_not_summed(world: World) -> None:
    other = f"o{secrets.token_hex(4)}"
    await world.store.stats.publish(
        "replica-a",
        [
            (world.tenant, MODEL, "1", window(10)),
            (world.tenant, "minilm", "1", window(1000)),
            (other, MODEL, "1", window(1000)),
        ],
    )
    await world.store.stats.publish("replica-b", [])
    summed = await world.store.stats.summed(world.tenant, MODEL, ["1"])
    assert summed["1"].requests == 10


# --------------------------------------------------------------------------- reading it back


async def test_the_snapshot_reflects_every_release_change(world: World) -> None:
    store, tenant = world.store, world.tenant
    key = (tenant, MODEL)
    await world.add_model(tenant, "idle", 1)
    await store.set_alias(tenant, MODEL, "production", "1", change())
    await store.set_alias(tenant, MODEL, "canary", "2", change())
    policy = RoutingPolicy(splits=(Split("production", 95), Split("canary", 5)))
    await set_policy(store, tenant, policy, change("routing_changed"))
    rollout = await world.start("1", "3")

    snap = await store.snapshot()
    assert snap.generation == await store.generation()
    releases = snap.models[key]
    assert releases.aliases == {"production": "1", "canary": "2"}
    assert releases.policy == policy.to_dict()
    assert releases.rollout is not None and releases.rollout.id == rollout.id
    assert (tenant, "idle") not in snap.models

    await store.rollouts.transition(
        rollout, change("rollout_promoted"), state="promoted", move_alias="production"
    )
    later = await store.snapshot()
    assert later.generation == snap.generation + 1
    assert later.models[key].aliases == {"production": "3", "canary": "2"}
    assert later.models[key].rollout is None


async def test_history_is_newest_first_and_pages_with_before(world: World) -> None:
    store, tenant = world.store, world.tenant
    for version in ("1", "2", "3", "1", "2"):
        await store.set_alias(tenant, MODEL, "production", version, change(reason=f"to {version}"))
    full = await store.audit.history(tenant, MODEL)
    assert [e.to_ref for e in full] == ["2", "1", "3", "2", "1"]
    assert [e.id for e in full] == sorted((e.id for e in full), reverse=True)

    pages, before = [], None
    while page := await store.audit.history(tenant, MODEL, limit=2, before=before):
        assert len(page) <= 2
        pages.extend(page)
        before = page[-1].id
    assert pages == full


async def test_record_writes_an_audit_entry_and_bumps_only_when_asked(world: World) -> None:
    store, tenant = world.store, world.tenant
    async with world.bumps(0):
        await store.audit.record(tenant, MODEL, Change("version_pushed", "ci", "", None, "3"))
    async with world.bumps(1):
        await store.audit.record(
            tenant, MODEL, Change("interface_changed", "ci", "breaking"), bump=True
        )
    assert [e.action for e in await store.audit.history(tenant, MODEL)] == [
        "interface_changed",
        "version_pushed",
    ]


async def test_tenants_are_isolated(world: World) -> None:
    store, mine = world.store, world.tenant
    theirs = f"o{secrets.token_hex(4)}"
    await world.add_model(theirs, MODEL, 2)
    await store.set_alias(mine, MODEL, "production", "1", change())
    await world.start("1", "2")

    # The other tenant's model of the same name has none of it...
    assert (await store.model_releases(theirs, MODEL)).aliases == {}
    assert (await store.model_releases(theirs, MODEL)).rollout is None
    assert await store.audit.history(theirs, MODEL) == []
    assert (theirs, MODEL) not in (await store.snapshot()).models
    # ...is free to run its own rollout and delete the versions this tenant's use...
    their_rollout = await store.rollouts.start(theirs, MODEL, "1", "2", PLAN, {}, change())
    await store.rollouts.transition(their_rollout, change("rollout_aborted"), state="aborted")
    await store.set_alias(theirs, MODEL, "production", "2", change())
    await delete_version(store, theirs, "1", change("version_deleted"))
    # ...and cannot see this tenant's version 3.
    with pytest.raises(VersionNotFound):
        await store.set_alias(theirs, MODEL, "canary", "3", change())

    assert await world.aliases() == {"production": "1"}
    assert [v.version for v in await world.registry.list_versions(mine, MODEL)] == ["1", "2", "3"]
    assert all(e.tenant == mine for e in await store.audit.history(mine, MODEL))


async def test_a_rollout_keeps_why_it_started_beside_the_guards_latest_verdict(
    world: World,
) -> None:
    store = world.store
    rollout = await world.start()
    assert (rollout.reason, rollout.verdict) == ("because", None)

    holding = {"action": "hold", "reason": "not sure of the p99 yet", "figures": {"step": 0}}
    async with world.bumps(0):
        await store.rollouts.set_verdict(rollout, holding)
    noted = await store.rollouts.get(rollout.id)
    assert noted is not None and noted.verdict == holding and noted.reason == "because"
    assert [e.action for e in await store.audit.history(world.tenant, MODEL)] == ["rollout_started"]

    advanced = {"action": "advance", "reason": "step 1 stayed within bounds", "figures": {}}
    moved = await store.rollouts.transition(
        rollout, change("rollout_step", "step 1 stayed within bounds"), step=1, verdict=advanced
    )
    assert (moved.step, moved.reason, moved.verdict) == (1, "because", advanced)
    # A verdict on the step it judged is refused once the rollout moved on.
    with pytest.raises(Conflict):
        await store.rollouts.set_verdict(rollout, holding)
    latest = await store.rollouts.of_model(world.tenant, MODEL)
    assert latest[0].verdict == advanced
