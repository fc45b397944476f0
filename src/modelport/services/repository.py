"""What is loaded where: start-up loading, the OIP repository extension, readiness."""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from modelport.errors import ArtifactError, ModelNotFound
from modelport.services.registry import RegistryService
from modelport.services.release_follower import ReleaseFollower
from modelport.serving.pool import LoadedVersion, ModelPool, VersionState
from modelport.stores.registry import RegistryStore, VersionRecord

log = structlog.get_logger("modelport.repository")


@dataclass(frozen=True, slots=True)
class IndexEntry:
    name: str
    version: str | None
    state: str
    reason: str


@dataclass(frozen=True, slots=True)
class ServedMetadata:
    """What OIP model metadata describes: the version whose signature callers get (the one
    asked for, else the one unpinned requests reach here, else the newest) and the versions
    it lists."""

    record: VersionRecord
    versions: list[str]


class RepositoryService:
    def __init__(
        self,
        store: RegistryStore,
        registry: RegistryService,
        pool: ModelPool,
        sync: ReleaseFollower | None = None,
    ) -> None:
        self._store = store
        self._registry = registry
        self._pool = pool
        self._sync = sync
        self._required: set[tuple[str, str]] = set()
        # What this replica was asked to serve: the models registered when it started, those
        # loaded through the repository API, and those it came to serve through the release
        # state. A model another tenant registers later is not in it until one of those
        # happens, so a push alone never takes a serving replica out of its load balancer.
        self._asked: set[tuple[str, str]] = set()

    async def load_on_start(self) -> None:
        """Load the newest version of every registered model, one after another; a model with
        release state (aliases, routing) gets the versions that state names instead."""
        for model in await self._store.list_models(None):
            self._asked.add((model.tenant, model.name))
            if self._sync is not None and self._sync.manages(model.tenant, model.name):
                continue
            latest = await self._store.latest_version(model.tenant, model.name)
            if latest is not None:
                await self._pool.load(latest)
        await self._refresh_required()

    async def load(self, tenant: str, model: str, version: str | None = None) -> LoadedVersion:
        """Load a version (the newest when not given); raises if it does not become READY."""
        record = await self._registry.version(tenant, model, version)
        self._asked.add((tenant, model))
        entry = await self._pool.load(record)
        await self._refresh_required()
        if entry.state is not VersionState.READY:
            raise ArtifactError(f"{entry.label} failed to load: {entry.error}")
        if version is None:
            # The newest version now serves unpinned traffic; older ones finish what they
            # queued and unload, so no request is dropped by the swap.
            keep = set() if self._sync is None else self._sync.protected(tenant, model)
            for older in self._pool.versions_of(tenant, model):
                if int(older.version) < int(entry.version) and older.version not in keep:
                    await self._pool.unload(tenant, model, older.version)
        return entry

    async def delete_model(
        self, tenant: str, model: str, actor: str, reason: str = ""
    ) -> list[str]:
        """Delete the model from the registry and unload it here at once; every other
        replica unloads it as it follows the release state. Returns the deleted versions."""
        deleted = await self._registry.delete_model(tenant, model, actor, reason)
        for entry in self._pool.versions_of(tenant, model):
            await self._pool.unload(tenant, model, entry.version)
        self._asked.discard((tenant, model))
        if self._sync is not None:
            self._sync.poke()
        return [v.version for v in deleted]

    async def unload(self, tenant: str, model: str) -> list[str]:
        loaded = self._pool.versions_of(tenant, model)
        if await self._store.get_model(tenant, model) is None and not loaded:
            raise ModelNotFound(model)
        versions = [v.version for v in loaded]
        for version in versions:
            await self._pool.unload(tenant, model, version)
        return versions

    async def metadata(self, tenant: str, model: str, version: str | None = None) -> ServedMetadata:
        """OIP model metadata of ``version``, or of the model as this replica serves it."""
        if version is not None:
            record = await self._registry.version(tenant, model, version)
            return ServedMetadata(record, [record.version])
        description = await self._registry.describe(tenant, model)
        serving = self._pool.newest_ready(tenant, model)
        record = await self._registry.version(
            tenant, model, None if serving is None else serving.version
        )
        return ServedMetadata(record, [v.version for v in description.versions])

    async def ready(self, tenant: str, model: str, version: str | None = None) -> bool:
        """Whether this replica serves the model (or that version of it); ``ModelNotFound`` /
        ``VersionNotFound`` for one the tenant does not have."""
        await self._registry.version(tenant, model, version)
        return self.model_ready(tenant, model, version)

    async def index(self, tenant: str, ready_only: bool = False) -> list[IndexEntry]:
        entries: list[IndexEntry] = []
        for model, versions in await self._store.models_with_versions(tenant):
            loaded = self._pool.versions_of(tenant, model.name)
            if not loaded:
                latest = versions[-1].version if versions else None
                entries.append(IndexEntry(model.name, latest, "UNAVAILABLE", "not loaded"))
            entries.extend(
                IndexEntry(v.model, v.version, v.state.value, v.error or "") for v in loaded
            )
        if ready_only:
            entries = [e for e in entries if e.state == VersionState.READY.value]
        return entries

    async def server_ready(self) -> bool:
        """Ready when this replica was asked to serve at least one required model and serves
        each of them. A required model registered after start joins once it serves here
        (loaded explicitly or through its release state); until then it is only not ready
        itself (``/v2/models/{m}/ready``)."""
        try:
            await self._refresh_required()
        except Exception as exc:  # noqa: BLE001 - a registry outage keeps the last known set
            log.warning("readiness_registry_unavailable", error=type(exc).__name__)
        for key in self._required - self._asked:
            if self._serving(*key):
                self._asked.add(key)
        asked = self._required & self._asked
        if not asked:
            return False
        return all(self._serving(*key) for key in asked)

    def model_ready(self, tenant: str, model: str, version: str | None) -> bool:
        if version is None:
            return self._serving(tenant, model)
        entry = self._pool.get(tenant, model, version)
        return entry is not None and entry.state is VersionState.READY

    def _serving(self, tenant: str, model: str) -> bool:
        if self._sync is not None and self._sync.manages(tenant, model):
            return self._sync.serving(tenant, model)
        return self._pool.newest_ready(tenant, model) is not None

    async def _refresh_required(self) -> None:
        registered = await self._store.list_models(None)
        self._required = {(m.tenant, m.name) for m in registered if m.required}
        # A deleted model leaves what this replica was asked to serve.
        self._asked &= {(m.tenant, m.name) for m in registered}
