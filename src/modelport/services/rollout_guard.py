"""The rollout guard: advances, promotes or rolls back canary rollouts by their SLOs.

Every replica publishes its per-version request windows to SQL every tick. The guard itself
runs in exactly one replica at a time: the one holding the ``rollout-guard`` lease in the
database (renewed every tick, taken over by another replica when it lapses). Its decisions read
the windows summed over all replicas since the current step started.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid

import structlog

from modelport.errors import Conflict
from modelport.observability.metrics import Metrics
from modelport.routing.guard import Action, RolloutPlan, evaluate, next_reference
from modelport.routing.request_stats import RequestStats
from modelport.services.releases import REFERENCE, ReleaseService
from modelport.serving.pool import ModelPool
from modelport.stores.releases import ReleaseStore
from modelport.stores.rollouts import RolloutRecord
from modelport.stores.version_stats import VersionCounts

log = structlog.get_logger("modelport.guard")

LEASE = "rollout-guard"
ACTOR = "rollout-guard"


class RolloutGuard:
    def __init__(
        self,
        store: ReleaseStore,
        releases: ReleaseService,
        pool: ModelPool,
        *,
        interval_s: float,
        lease_ttl_s: float,
        replica: str | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._store = store
        self._releases = releases
        self._pool = pool
        self._interval_s = interval_s
        self._lease_ttl_s = lease_ttl_s
        self._metrics = metrics
        self.replica = replica or uuid.uuid4().hex[:16]
        self._published: dict[tuple[str, str, str], int] = {}
        self._task: asyncio.Task[None] | None = None
        self.leader = False
        self._ticks = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="rollout-guard")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self.publish()
            if self.leader:
                await self._store.leases.release(LEASE, self.replica)

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the next tick retries
                log.warning("rollout_guard_tick_failed", error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(self._interval_s)

    async def tick(self) -> None:
        await self.publish()
        self._ticks += 1
        if self._ticks % 600 == 0:
            await self._store.stats.prune(dt.timedelta(days=2))
        leader = await self._store.leases.acquire(LEASE, self.replica, self._lease_ttl_s)
        if leader != self.leader:
            log.info("rollout_guard_lease", replica=self.replica, leader=leader)
            self.leader = leader
            if self._metrics is not None:
                self._metrics.rollout_guard_leader.set(int(leader))
        if not leader:
            return
        for rollout in await self._store.rollouts.active():
            if rollout.state == "running":
                try:
                    await self.check(rollout)
                except Conflict as exc:
                    log.info("rollout_changed_meanwhile", rollout=rollout.id, error=exc.message)

    async def publish(self) -> None:
        """Write this replica's windows that changed since the last tick."""
        changed = []
        for tenant, model, version, window in self._pool.windows():
            key = (tenant, model, version)
            if self._published.get(key) != window.requests:
                counts = VersionCounts(window.requests, window.errors, list(window.latency))
                changed.append((tenant, model, version, counts))
        if changed:
            await self._store.stats.publish(self.replica, changed)
            for tenant, model, version, counts in changed:
                self._published[(tenant, model, version)] = counts.requests

    async def check(self, rollout: RolloutRecord) -> Action:
        plan = RolloutPlan.model_validate(rollout.plan)
        summed = await self._store.stats.summed(
            rollout.tenant, rollout.model, [rollout.baseline, rollout.candidate]
        )
        now = {v: RequestStats.from_dict(c.to_dict()) for v, c in summed.items()}
        then = {
            v: RequestStats.from_dict(rollout.snapshot.get(v))
            for v in (rollout.baseline, rollout.candidate)
        }
        raw_reference = rollout.snapshot.get(REFERENCE)
        reference = None if raw_reference is None else RequestStats.from_dict(raw_reference)
        baseline = now[rollout.baseline].minus(then[rollout.baseline])
        candidate = now[rollout.candidate].minus(then[rollout.candidate])
        elapsed = (dt.datetime.now(dt.UTC) - rollout.step_started_at).total_seconds()
        verdict = evaluate(plan, rollout.step, elapsed, baseline, candidate, reference)
        if verdict.action is Action.ADVANCE:
            # The next step judges against this one's baseline if its own is too thin.
            reference = next_reference(baseline, reference)
            await self._releases.advance(rollout, ACTOR, verdict, reference)
        elif verdict.action is Action.PROMOTE:
            await self._releases.finish(rollout, ACTOR, verdict)
        elif verdict.action is Action.ROLLBACK:
            await self._releases.roll_back(rollout, ACTOR, verdict)
        else:
            await self._releases.note_verdict(rollout, verdict)
        return verdict.action
