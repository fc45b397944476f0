"""The search indexer: every server replica's indexes follow the catalog stream themselves.

    start ─ restore the newest snapshot (position P)      ─┐
          └ or, without one: P = the stream's newest id,  ├─ then follow: read_after(P) → apply
            then every live product from SQL              ─┘   → P = last id → maybe snapshot

The index lives in the process that answers ``/v1/search``, so each replica follows the
``catalog`` topic on its own, with ``Stream.read_after`` from a position it keeps: no consumer
group, nothing to acknowledge, no group left behind by a replica that went away. Every write
carries the product's catalog version and the indexes ignore a write that is not newer, so
replaying messages (after a snapshot, or the SQL scan and the stream overlapping) changes
nothing and every replica that applied the same messages holds the same index.

Applying a batch: the newest message per product wins; upserts are embedded through the serving
core (``Embedder.documents``: the tenant's text-embedding model and its batcher), then written
to the vector index and the lexical index with the product's facets; tombstones are removed
from both. A tenant without its embedding model is indexed lexically only. A failure (a model
still loading, the database away) retries the whole batch with backoff: the position moves
only past what was applied.

Snapshots: every ``snapshot_interval_s``, if the position moved, all tenants' indexes and the
position go to the snapshot store (``stores.search_snapshots``), between two batches, so the
position matches what they hold. A snapshot made under another embedding model or other
embedded fields (``TenantSearch.fingerprint``) is not restored: the indexes are rebuilt from SQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from modelport.errors import NotFound
from modelport.services.search_documents import (
    SearchConfigs,
    embedded_text,
    facets,
    texts,
)
from modelport.services.search_embeddings import Embedder
from modelport.stores.catalog import CatalogStore
from modelport.stores.outbox import CATALOG
from modelport.stores.search_indexes import SearchIndexes
from modelport.stores.search_snapshots import SnapshotManifest, SnapshotStore
from modelport.stores.streams import Stream
from modelport.workers.retry import backoff_s

log = structlog.get_logger("modelport.search")

_SCAN_PAGE = 500


@dataclass(frozen=True, slots=True)
class Change:
    tenant: str
    id: str
    version: int
    product: dict[str, Any] | None
    """None for a tombstone."""


def changes_of(payloads: Sequence[tuple[str, dict[str, Any]]]) -> list[Change]:
    """The newest change per (tenant, product) among ``(tenant, product JSON)`` payloads."""
    newest: dict[tuple[str, str], Change] = {}
    for tenant, payload in payloads:
        change = Change(
            tenant,
            str(payload["id"]),
            int(payload["version"]),
            None if payload.get("deleted") else payload,
        )
        held = newest.get((tenant, change.id))
        if held is None or held.version < change.version:
            newest[(tenant, change.id)] = change
    return list(newest.values())


class SearchIndexer:
    def __init__(
        self,
        indexes: SearchIndexes,
        stream: Stream,
        catalog: CatalogStore,
        embedder: Embedder,
        configs: SearchConfigs,
        *,
        snapshots: SnapshotStore | None = None,
        batch_size: int = 256,
        max_chars: int = 4000,
        snapshot_interval_s: float = 300.0,
        snapshots_kept: int = 3,
        block_s: float = 1.0,
    ) -> None:
        self.indexes = indexes
        self._stream = stream
        self._catalog = catalog
        self._embedder = embedder
        self._configs = configs
        self._snapshots = snapshots
        self._batch_size = batch_size
        self._max_chars = max_chars
        self._snapshot_interval_s = snapshot_interval_s
        self._snapshots_kept = snapshots_kept
        self._block_s = block_s
        self.position: str | None = None
        """The id of the last catalog message applied."""
        self.ready = asyncio.Event()
        """Set once the indexes are restored or built and follow the stream."""
        self._snapshot_position: str | None = None
        self._snapshot_at = time.monotonic()
        self._lexical_only: set[str] = set()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._rebuilds: dict[str, asyncio.Task[None]] = {}

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="search-indexer")
            self._task.add_done_callback(_log_failure)

    async def close(self) -> None:
        self._stopping.set()
        tasks = [t for t in (self._task, *self._rebuilds.values()) if t is not None]
        self._task = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.indexes.close()

    async def _run(self) -> None:
        await self._retrying(self._start_indexes, "search_index_start_failed")
        self.ready.set()
        log.info("search_index_ready", position=self.position, tenants=self.indexes.tenants())
        while not self._stopping.is_set():
            await self._retrying(self._step, "search_index_apply_failed")

    async def _retrying(self, work: Any, event: str) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                await work()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                failures += 1
                log.exception(event, failures=failures, position=self.position)
                await asyncio.sleep(backoff_s(failures, 0.2, 5.0))

    async def _step(self) -> None:
        messages = await self._stream.read_after(
            CATALOG, self.position, self._batch_size, self._block_s
        )
        if messages:
            await self.apply(changes_of([(m.tenant, m.payload) for m in messages]))
            self.position = messages[-1].id
        if (
            self._snapshots is not None
            and self._snapshot_interval_s > 0
            and time.monotonic() - self._snapshot_at >= self._snapshot_interval_s
        ):
            await self.snapshot()

    # ------------------------------------------------------------------ applying changes

    async def apply(self, changes: Sequence[Change]) -> None:
        by_tenant: dict[str, list[Change]] = {}
        for change in changes:
            by_tenant.setdefault(change.tenant, []).append(change)
        for tenant, mine in by_tenant.items():
            await self._apply_tenant(tenant, mine)

    async def _apply_tenant(self, tenant: str, changes: list[Change]) -> None:
        config = self._configs.of(tenant)
        upserts = [c for c in changes if c.product is not None]
        fields = [texts(c.product) for c in upserts if c.product is not None]
        vectors = None
        if upserts and tenant not in self._lexical_only:
            documents = [embedded_text(f, config, self._max_chars) for f in fields]
            try:
                vectors = await self._embedder.documents(tenant, config.embedding_model, documents)
            except NotFound as exc:
                # No embedding model in this tenant: lexical search still works.
                self._lexical_only.add(tenant)
                log.warning("search_lexical_only", tenant=tenant, reason=exc.message)
        removals = [c for c in changes if c.product is None]

        def write() -> None:
            lexical = self.indexes.lexical(tenant)
            vector_index = (
                self.indexes.vectors(tenant, None if vectors is None else vectors.shape[1])
                if vectors is not None or self.indexes.has_vectors(tenant)
                else None
            )
            if vectors is not None and vector_index is not None:
                vector_index.upsert_many(
                    [c.id for c in upserts],
                    vectors,
                    [facets(c.product) for c in upserts if c.product is not None],
                    [c.version for c in upserts],
                )
            for change, text in zip(upserts, fields, strict=True):
                assert change.product is not None  # noqa: S101 - upserts carry products
                lexical.upsert(change.id, text, facets(change.product), change.version)
            for change in removals:
                lexical.remove(change.id, change.version)
                if vector_index is not None:
                    vector_index.remove(change.id, change.version)
            lexical.commit()

        await asyncio.to_thread(write)
        self._maybe_rebuild(tenant)

    def _maybe_rebuild(self, tenant: str) -> None:
        if tenant in self._rebuilds or not self.indexes.has_vectors(tenant):
            return
        index = self.indexes.vectors(tenant)
        if not index.rebuild_due():
            return
        task = asyncio.get_running_loop().create_task(
            asyncio.to_thread(index.rebuild), name=f"search-rebuild:{tenant}"
        )
        self._rebuilds[tenant] = task

        def done(finished: asyncio.Task[None]) -> None:
            self._rebuilds.pop(tenant, None)
            _log_failure(finished)

        task.add_done_callback(done)

    # ------------------------------------------------------------------ start: restore or build

    async def _start_indexes(self) -> None:
        if self._snapshots is not None and await self._restore():
            return
        # The position first: whatever commits during the scan is replayed after it.
        self.position = await self._stream.last_id(CATALOG)
        after: tuple[str, str] | None = None
        count = 0
        while page := await self._catalog.scan_live(after, _SCAN_PAGE):
            await self.apply(changes_of([(p.tenant, p.to_json()) for p in page]))
            after = (page[-1].tenant, page[-1].id)
            count += len(page)
        log.info("search_index_built_from_catalog", products=count, position=self.position)
        if count and self._snapshots is not None and self._snapshot_interval_s > 0:
            # A build embeds the whole catalog: the next start should restore it instead.
            await self.snapshot(force=True)

    async def _restore(self) -> bool:
        store = self._snapshots
        assert store is not None  # noqa: S101 - checked by the caller
        manifest = await asyncio.to_thread(store.newest)
        if manifest is None:
            return False
        stale = [
            t
            for t, entry in manifest.tenants.items()
            if entry.get("fingerprint") != self._configs.of(t).fingerprint()
        ]
        if stale:
            log.info("search_snapshot_not_restored", snapshot=manifest.name, reconfigured=stale)
            return False
        try:
            for tenant, entry in manifest.tenants.items():
                vectors = (
                    await asyncio.to_thread(store.read, manifest.name, entry["vectors"])
                    if entry.get("vectors")
                    else None
                )
                lexical = await asyncio.to_thread(store.read, manifest.name, entry["lexical"])
                await asyncio.to_thread(self.indexes.restore, tenant, vectors, lexical)
        except Exception:
            log.exception("search_snapshot_unreadable", snapshot=manifest.name)
            for tenant in manifest.tenants:
                self.indexes.drop(tenant)
            return False
        self.position = self._snapshot_position = manifest.position
        log.info("search_snapshot_restored", snapshot=manifest.name, position=self.position)
        return True

    # ------------------------------------------------------------------ snapshots

    async def snapshot(self, *, force: bool = False) -> str | None:
        """Write every tenant's indexes and the position; the snapshot's name (None when the
        indexes did not change since the last one, unless ``force``)."""
        store = self._snapshots
        self._snapshot_at = time.monotonic()
        if store is None or (self.position == self._snapshot_position and not force):
            return None
        name = store.new_name()
        position = self.position
        tenants: dict[str, dict[str, Any]] = {}

        def write() -> None:
            for tenant in self.indexes.tenants():
                stem = tenant.encode().hex()
                entry: dict[str, Any] = {
                    "fingerprint": self._configs.of(tenant).fingerprint(),
                    "vectors": None,
                    "lexical": f"{stem}.lexical",
                }
                lexical = self.indexes.lexical(tenant)
                lexical.position = position
                store.write(name, entry["lexical"], lexical.snapshot())
                if self.indexes.has_vectors(tenant):
                    vectors = self.indexes.vectors(tenant)
                    vectors.position = position
                    entry["vectors"] = f"{stem}.vectors"
                    store.write(name, entry["vectors"], vectors.snapshot())
                tenants[tenant] = entry
            store.commit(SnapshotManifest(name, position, tenants))
            store.prune(self._snapshots_kept)

        await asyncio.to_thread(write)
        self._snapshot_position = position
        log.info("search_snapshot_written", snapshot=name, position=position, tenants=len(tenants))
        return name


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("search_task_failed", task=task.get_name(), exc_info=task.exception())
