"""Keeps this replica's routes equal to the registry's release state.

The release state (aliases, routing policies, rollouts) lives in SQL. Each replica polls the
one-row release clock every ``interval_s`` (the reconciliation that heals a missed notice) and,
on PostgreSQL, also wakes on ``LISTEN``. When the state changed it loads every version the new
routing needs in the background and installs a model's new routing only once all of them are
READY here; until then the old routing keeps serving. A load that fails leaves the old routing
in place, with the error visible. Versions the old routing needed and the new one does not are
drained (in-flight requests finish) and unloaded.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog
from sqlalchemy.engine import make_url

from modelport.errors import ModelportError
from modelport.observability.metrics import Metrics
from modelport.routing.policy import Route, RoutingPolicy, compile_route
from modelport.routing.table import ModelRouting, RouteTable
from modelport.serving.pool import ModelPool, VersionState
from modelport.stores.registry import RegistryStore
from modelport.stores.releases import CHANNEL, ModelReleases, ReleaseSnapshot, ReleaseStore

log = structlog.get_logger("modelport.releases")

Key = tuple[str, str]


@dataclass(slots=True)
class _Plan:
    route: Route | None
    aliases: dict[str, str]
    needed: set[str]


@dataclass(slots=True)
class ModelSyncStatus:
    """What this replica serves for a model and what it is still waiting for."""

    installed: dict[str, Any] | None
    waiting_for: list[str] = field(default_factory=list)
    error: str | None = None


class ReleaseFollower:
    def __init__(
        self,
        store: ReleaseStore,
        registry: RegistryStore,
        pool: ModelPool,
        table: RouteTable,
        *,
        database_url: str,
        interval_s: float,
        metrics: Metrics | None = None,
    ) -> None:
        self._store = store
        self._registry = registry
        self._pool = pool
        self._table = table
        self._database_url = database_url
        self._interval_s = interval_s
        self._metrics = metrics
        self._generation = -1
        self._snapshot: ReleaseSnapshot | None = None
        self._needed: dict[Key, set[str]] = {}
        self._errors: dict[Key, str] = {}
        self._loading: dict[tuple[str, str, str], asyncio.Task[None]] = {}
        self._failed: dict[tuple[str, str, str], tuple[int, str]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._wake = asyncio.Event()
        self._dirty = False
        self._apply_lock = asyncio.Lock()
        self._loop_task: asyncio.Task[None] | None = None
        self._listener: asyncpg.Connection | None = None
        self._installed = asyncio.Condition()

    # ------------------------------------------------------------------ lifecycle

    async def start(self, *, wait_s: float = 120.0) -> None:
        """Apply the current state, wait (bounded) for its versions, then follow changes."""
        # Listen before the first read: a change committed after it is announced, one before it
        # is in the read. Left to the loop, notices would be missed for a whole interval.
        await self._ensure_listener()
        await self.refresh(force=True)
        if self._loading:
            await asyncio.wait(set(self._loading.values()), timeout=wait_s)
            await self.refresh(force=True)
        self._loop_task = asyncio.create_task(self._run(), name="release-sync")

    async def close(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        for task in [*self._loading.values(), *self._background]:
            task.cancel()
        for task in [*self._loading.values(), *self._background]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._close_listener()

    def poke(self) -> None:
        """Re-read the release state now (a change was just written)."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval_s)
            self._wake.clear()
            try:
                await self._ensure_listener()
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the next tick retries; serving goes on
                log.warning("release_sync_failed", error=f"{type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------ applying

    async def refresh(self, *, force: bool = False) -> None:
        generation = await self._store.generation()
        if force or generation != self._generation or self._snapshot is None:
            snapshot = await self._store.snapshot()
            async with self._apply_lock:
                self._snapshot = snapshot
                self._generation = snapshot.generation
                self._dirty = False
                await self._apply(snapshot)
                await self._unload_deleted()
                if self._metrics is not None:
                    self._metrics.release_generation.set(snapshot.generation)
        elif self._dirty:
            async with self._apply_lock:
                self._dirty = False
                await self._apply(self._snapshot)

    async def _apply(self, snapshot: ReleaseSnapshot) -> None:
        for key in set(self._table.installed) | self._table.pending:
            if key not in snapshot.models:
                # No release state any more: unpinned traffic goes back to the newest version.
                self._table.installed.pop(key, None)
                self._table.pending.discard(key)
                self._table.switching.discard(key)
                self._needed.pop(key, None)
                self._errors.pop(key, None)
        for key, releases in snapshot.models.items():
            self._apply_model(key, releases, snapshot.generation)
        async with self._installed:
            self._installed.notify_all()

    def _apply_model(self, key: Key, releases: ModelReleases, generation: int) -> None:
        try:
            plan = _plan(releases)
        except ModelportError as exc:
            self._errors[key] = exc.message
            return
        missing: list[str] = []
        failed: list[str] = []
        for version in sorted(plan.needed, key=int):
            entry = self._pool.get(key[0], key[1], version)
            if entry is not None and entry.state is VersionState.READY:
                continue
            vkey = (key[0], key[1], version)
            failure = self._failed.get(vkey)
            if failure is not None and failure[0] == generation:
                failed.append(f"version {version}: {failure[1]}")
                continue
            missing.append(version)
            if vkey not in self._loading:
                self._loading[vkey] = asyncio.create_task(self._load(vkey, generation))
        if failed:
            self._errors[key] = "; ".join(failed)
            log.warning("routing_not_installed", tenant=key[0], model=key[1], error=failed)
            self._hold(key)
            return
        if missing:
            self._hold(key)
            return
        previous = self._needed.get(key, set())
        current = self._table.installed.get(key)
        new = ModelRouting(plan.route, plan.aliases)
        if current != new:
            self._table.installed[key] = new
            log.info(
                "routing_installed",
                tenant=key[0],
                model=key[1],
                versions=None if plan.route is None else list(plan.route.versions),
                aliases=plan.aliases,
            )
        self._table.pending.discard(key)
        self._table.switching.discard(key)
        self._errors.pop(key, None)
        self._needed[key] = plan.needed
        for version in previous - plan.needed:
            self._spawn(self._pool.unload(key[0], key[1], version))

    async def _unload_deleted(self) -> None:
        """A model deleted from the registry (a release change too) leaves this replica."""
        loaded = {(e.tenant, e.model) for e in self._pool.all()}
        if not loaded:
            return
        registered = {(m.tenant, m.name) for m in await self._registry.list_models(None)}
        for tenant, model in sorted(loaded - registered):
            log.info("deleted_model_unloaded", tenant=tenant, model=model)
            for entry in self._pool.versions_of(tenant, model):
                self._spawn(self._pool.unload(tenant, model, entry.version))

    def _hold(self, key: Key) -> None:
        """Until the model's routing is installed, the old way of serving it goes on; a model
        with nothing to serve yet (at start-up) waits rather than reach a random version."""
        if key in self._table.installed or key in self._table.pending:
            return
        if key in self._table.switching or self._pool.newest_ready(*key) is not None:
            self._table.switching.add(key)
        else:
            self._table.pending.add(key)

    async def _load(self, vkey: tuple[str, str, str], generation: int) -> None:
        tenant, model, version = vkey
        try:
            record = await self._registry.get_version(tenant, model, version)
            if record is None:
                self._failed[vkey] = (generation, "the version no longer exists")
                return
            entry = await self._pool.load(record)
            if entry.state is not VersionState.READY:
                self._failed[vkey] = (generation, entry.error or "failed to load")
            else:
                self._failed.pop(vkey, None)
        except Exception as exc:  # noqa: BLE001 - recorded and retried on the next change
            self._failed[vkey] = (generation, f"{type(exc).__name__}: {exc}")
        finally:
            self._loading.pop(vkey, None)
            self._dirty = True
            self._wake.set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------------ queries

    def manages(self, tenant: str, model: str) -> bool:
        """Whether the model has release state (its routing comes from here)."""
        return self._snapshot is not None and (tenant, model) in self._snapshot.models

    def serving(self, tenant: str, model: str) -> bool:
        """Whether the model's routing is installed and every version it routes to is READY."""
        installed = self._table.installed.get((tenant, model))
        if installed is None:
            return (tenant, model) in self._table.switching and (
                self._pool.newest_ready(tenant, model) is not None
            )
        if installed.route is None:
            return self._pool.newest_ready(tenant, model) is not None
        for version in installed.route.versions:
            entry = self._pool.get(tenant, model, version)
            if entry is None or entry.state is not VersionState.READY:
                return False
        return True

    def protected(self, tenant: str, model: str) -> set[str]:
        """Versions the installed routing needs: nothing else may unload them."""
        return set(self._needed.get((tenant, model), set()))

    def status(self, tenant: str, model: str) -> ModelSyncStatus:
        key = (tenant, model)
        installed = self._table.installed.get(key)
        waiting = sorted(v for (t, m, v) in self._loading if (t, m) == key)
        return ModelSyncStatus(
            installed=None
            if installed is None
            else {
                "versions": [] if installed.route is None else list(installed.route.versions),
                "weights": [] if installed.route is None else _weights(installed.route),
                "aliases": dict(installed.aliases),
                "shadow_version": None
                if installed.route is None
                else installed.route.shadow_version,
                "fallback_version": None
                if installed.route is None
                else installed.route.fallback_version,
            },
            waiting_for=waiting,
            error=self._errors.get(key),
        )

    async def wait_installed(
        self, tenant: str, model: str, generation: int, timeout_s: float
    ) -> ModelSyncStatus:
        """Wait until this replica applied ``generation`` and installed the model's routing
        (or gave up with an error); returns the status either way."""
        key = (tenant, model)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        self.poke()
        async with self._installed:
            while loop.time() < deadline:
                settled = self._generation >= generation and (
                    key not in self._table.pending or key in self._errors
                )
                if settled and not any((t, m) == key for (t, m, _) in self._loading):
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._installed.wait(), deadline - loop.time())
        return self.status(tenant, model)

    # ------------------------------------------------------------------ LISTEN

    async def _ensure_listener(self) -> None:
        url = make_url(self._database_url)
        if not url.drivername.startswith("postgres"):
            return
        if self._listener is not None and not self._listener.is_closed():
            return
        await self._close_listener()
        dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        try:
            conn = await asyncpg.connect(dsn, timeout=5)
            await conn.add_listener(CHANNEL, lambda *_: self._wake.set())
        except Exception as exc:  # noqa: BLE001 - polling still converges
            log.warning("release_listen_failed", error=type(exc).__name__)
            return
        self._listener = conn

    async def _close_listener(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close(timeout=2)
            self._listener = None


def _plan(releases: ModelReleases) -> _Plan:
    override = None
    rollout = releases.rollout
    if rollout is not None:
        steps = rollout.plan.get("steps") or [100.0]
        percent = float(steps[min(rollout.step, len(steps) - 1)])
        override = [(rollout.baseline, 100.0 - percent), (rollout.candidate, percent)]
    policy = None if releases.policy is None else RoutingPolicy.from_dict(releases.policy)
    route = compile_route(releases.model, policy, releases.aliases, override=override)
    needed = set(releases.aliases.values())
    if route is not None:
        needed |= route.needed()
    return _Plan(route, dict(releases.aliases), needed)


def _weights(route: Route) -> list[float]:
    out: list[float] = []
    previous = 0.0
    for edge in route.cumulative:
        out.append(round(edge - previous, 6))
        previous = edge
    return out
