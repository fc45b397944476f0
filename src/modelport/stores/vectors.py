"""One tenant's in-process vector index: HNSW (faiss) keyed by product, filtered inside the search.

Why faiss, and the numbers behind it: ``docs/benchmarks/vector_index.md``. How it behaves, for
someone on call: ``docs/search.md``.

- **Cosine.** Vectors are normalised on the way in; a hit's ``score`` is the cosine similarity.
- **Keys and slots.** A product key maps to a slot (faiss's id). An upsert whose vector changed
  tombstones the old slot and appends a new one; one that changes only the facets (price,
  availability …) keeps its slot and touches no graph. A removal tombstones. Tombstoned slots keep
  guiding the graph walk but are never returned.
- **Rebuilds.** faiss's HNSW cannot delete, and a graph grown batch by batch in catalog order
  finds fewer true neighbours than one built in one go (benchmark). :meth:`VectorIndex.rebuild`
  builds a new graph from the live vectors without holding the lock, replays the writes made
  meanwhile, and swaps it in; :meth:`VectorIndex.rebuild_due` says when (tombstones past
  ``compact_at``, or growth past ``grow_at`` since the last rebuild). The owner (the catalog
  consumer) runs it in a worker thread.
- **Filters inside the search.** A :class:`SearchFilter` becomes a bitmap over the slots (facets
  AND live) that faiss checks at every node of the walk (``IDSelectorBitmap``), with ``ef_search``
  raised in proportion to the filter's selectivity. A filter that keeps at most ``exact_below``
  items is answered exactly instead (scoring just those vectors, cheaper than a walk that skips
  99 % of what it visits), and so is one of up to ``exact_max`` items too selective for the walk
  (it would need more than ``ef_filtered_max``), and any graph search that found fewer than k
  while k exist: a filter never turns ten results into three.
- **Versions.** A write may carry the product's catalog version; a write older than or equal to
  what the index holds for that key (tombstones included) is ignored, so replaying the stream
  from a snapshot's position is harmless and every replica converges.
- **Concurrency.** Searches run in parallel (faiss releases the GIL); a write waits for them and
  excludes them while it runs (:class:`RWLock`). A rebuild holds the lock only to copy the live
  vectors and to swap.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import faiss as _faiss
import numpy as np

from modelport.errors import InvalidInput
from modelport.stores.index_snapshot import array_bytes, bytes_array, pack, unpack
from modelport.stores.rwlock import RWLock
from modelport.stores.search_filter import FacetColumns, Facets, SearchFilter

KIND = "vectors"
# faiss's bundled stubs lack the HNSW search parameters and IndexFlat.get_xb used below.
faiss: Any = _faiss


@dataclass(frozen=True, slots=True)
class Hit:
    key: str
    score: float


@dataclass(frozen=True, slots=True)
class VectorParams:
    """Graph and search parameters; the defaults are the benchmarked ones."""

    m: int = 16
    ef_construction: int = 100
    ef_search: int = 128
    """Candidates kept during an unfiltered walk (recall@10 0.97-0.98 at 100k; benchmark)."""
    ef_filtered_max: int = 1024
    """A filtered walk uses ef_search / selectivity / 4, at least ef_search, up to this."""
    exact_below: int = 5_000
    """A filter keeping at most this many items is answered by exact search over them."""
    exact_max: int = 20_000
    """Up to this many, exact search also answers a filter too selective for the walk (one that
    would need more than ef_filtered_max); exact costs ~0.75 ms per 1,000 items."""
    compact_at: float = 0.25
    """Share of tombstoned slots at which a rebuild is due."""
    grow_at: float = 0.5
    """Slots appended since the last rebuild, as a share of the slots it built, at which a
    rebuild is due (an index grown from a stream in catalog order loses recall; a rebuild in
    one go restores it: docs/benchmarks/vector_index.md)."""


class VectorIndex:
    """The vectors of one tenant. Thread-safe; call from worker threads (``asyncio.to_thread``)."""

    def __init__(self, tenant: str, dim: int, params: VectorParams | None = None) -> None:
        self.tenant = tenant
        self.dim = dim
        self.params = params or VectorParams()
        self.position: str | None = None
        """The change stream id of the last message applied; the caller sets it."""
        self._lock = RWLock()
        self._graph = self._new_graph()
        self._slot_of: dict[str, int] = {}
        self._keys: list[str | None] = []  # slot -> key, None when tombstoned
        self._alive = np.zeros(0, dtype=bool)
        self._versions: dict[str, int] = {}  # key -> last version applied (tombstones too)
        self._facets = FacetColumns()
        self._built = 0  # slots the last rebuild made in one go
        self._journal: list[tuple[str, Any]] | None = None  # writes during a rebuild
        self._rebuilding = threading.Lock()

    def _new_graph(self) -> Any:
        graph = faiss.IndexHNSWFlat(self.dim, self.params.m, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = self.params.ef_construction
        graph.hnsw.efSearch = self.params.ef_search
        return graph

    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, key: object) -> bool:
        return key in self._slot_of

    # --- writes -----------------------------------------------------------------------------

    def upsert(
        self, key: str, vector: np.ndarray, facets: Facets | None = None, version: int | None = None
    ) -> bool:
        """Add or replace ``key``; False when ``version`` is not newer than the one held."""
        return self.upsert_many([key], vector.reshape(1, -1), [facets or Facets()], [version]) == 1

    def upsert_many(
        self,
        keys: Sequence[str],
        vectors: np.ndarray,
        facets: Sequence[Facets],
        versions: Sequence[int | None] | None = None,
    ) -> int:
        """Add or replace many at once (one graph insertion); returns how many were applied."""
        vectors = self._normalised(vectors, len(keys))
        if len(facets) != len(keys):
            raise InvalidInput("upsert_many needs one Facets per key")
        with self._lock.write():
            todo = [
                i
                for i, key in enumerate(keys)
                if self._newer(key, versions[i] if versions is not None else None)
            ]
            if todo:
                picked = ([keys[i] for i in todo], vectors[todo], [facets[i] for i in todo])
                self._upsert_locked(*picked)
                if self._journal is not None:
                    self._journal.append(("upsert", picked))
            return len(todo)

    def _upsert_locked(
        self, keys: Sequence[str], vectors: np.ndarray, facets: Sequence[Facets]
    ) -> None:
        fresh: list[int] = []
        for i, key in enumerate(keys):
            slot = self._slot_of.get(key)
            if slot is not None and slot < len(self._keys):  # in the graph already
                if np.array_equal(self._vector(slot), vectors[i]):
                    self._facets.set(slot, facets[i])  # facets only: the graph is untouched
                    continue
                self._tombstone(slot)
            slot = len(self._keys) + len(fresh)
            self._slot_of[key] = slot
            self._facets.set(slot, facets[i])
            fresh.append(i)
        if not fresh:
            return
        self._keys.extend(keys[i] for i in fresh)
        alive = np.zeros(len(self._keys), dtype=bool)
        alive[: len(self._alive)] = self._alive
        alive[len(self._alive) :] = True
        # A key written twice in one batch: only its last slot is alive.
        for slot in range(len(self._alive), len(self._keys)):
            written = self._keys[slot]
            if written is not None and self._slot_of[written] != slot:
                alive[slot] = False
                self._keys[slot] = None
        self._alive = alive
        self._graph.add(np.ascontiguousarray(vectors[fresh]))

    def remove(self, key: str, version: int | None = None) -> bool:
        """Tombstone ``key``; False when it was absent or ``version`` is not newer."""
        with self._lock.write():
            if not self._newer(key, version) or key not in self._slot_of:
                return False
            self._remove_locked(key)
            if self._journal is not None:
                self._journal.append(("remove", key))
            return True

    def _remove_locked(self, key: str) -> None:
        slot = self._slot_of.pop(key, None)
        if slot is not None:
            self._tombstone(slot)

    def _newer(self, key: str, version: int | None) -> bool:
        if version is None:
            return True
        if self._versions.get(key, -1) >= version:
            return False
        self._versions[key] = version
        return True

    def _tombstone(self, slot: int) -> None:
        self._alive[slot] = False
        self._keys[slot] = None
        self._facets.clear_terms(slot)

    def _normalised(self, vectors: np.ndarray, count: int) -> np.ndarray:
        vectors = np.asarray(vectors, dtype=np.float32).reshape(count, -1)
        if vectors.shape[1] != self.dim:
            raise InvalidInput(
                f"vectors have {vectors.shape[1]} dimensions; the index holds {self.dim}"
            )
        if not np.isfinite(vectors).all():
            raise InvalidInput("vectors must be finite")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        if (norms == 0).any():
            raise InvalidInput("a zero vector has no direction to compare")
        normalised: np.ndarray = vectors / norms
        return normalised

    def _stored(self) -> np.ndarray:
        """The flat storage of the graph, as a numpy view (no copy); valid until the next add."""
        storage = faiss.downcast_index(self._graph.storage)
        count = self._graph.ntotal
        if count == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        flat: np.ndarray = faiss.rev_swig_ptr(storage.get_xb(), count * self.dim)
        return flat.reshape(count, self.dim)

    def _vector(self, slot: int) -> np.ndarray:
        vector: np.ndarray = self._stored()[slot]
        return vector

    def rebuild_due(self) -> bool:
        """Whether tombstones or growth since the last rebuild call for :meth:`rebuild`."""
        slots = len(self._keys)
        if slots < 1_000:
            return False
        dead = slots - len(self._slot_of)
        return dead > self.params.compact_at * slots or (
            slots - self._built > self.params.grow_at * self._built
        )

    def rebuild(self) -> None:
        """Rebuild the graph in one go from the live vectors (drops the tombstones too).

        The build runs without the lock: searches and writes go on meanwhile (writes are also
        kept in a journal). Then, under the write lock, the journal is applied to the new graph
        and it replaces the old one. The owner calls this from a worker thread when
        :meth:`rebuild_due` says so; at 100k items it takes about a build's time (benchmark).
        """
        with self._rebuilding:
            with self._lock.write():
                live = np.flatnonzero(self._alive)
                vectors = np.array(self._stored()[live])
                keys = [self._keys[s] for s in live]
                facets = _select(*self._facets.state(), live)
                self._journal = []
            try:
                graph = self._build_graph(vectors)
            except BaseException:
                with self._lock.write():
                    self._journal = None
                raise
            with self._lock.write():
                journal, self._journal = self._journal, None
                self._graph = graph
                self._keys = list(keys)
                self._slot_of = {k: i for i, k in enumerate(keys) if k is not None}
                self._alive = np.ones(len(keys), dtype=bool)
                self._facets = FacetColumns.from_state(*facets)
                self._built = len(keys)
                for op, args in journal or ():
                    if op == "upsert":
                        self._upsert_locked(*args)
                    else:
                        self._remove_locked(args)

    def _build_graph(self, vectors: np.ndarray) -> Any:
        graph = self._new_graph()
        if len(vectors):
            graph.add(vectors)
        return graph

    # --- reads ------------------------------------------------------------------------------

    def search(
        self, vector: np.ndarray, k: int = 10, where: SearchFilter | None = None
    ) -> list[Hit]:
        """The ``k`` nearest live items passing ``where``, best first (fewer only if fewer pass)."""
        if k <= 0:
            return []
        query = self._normalised(vector, 1)
        with self._lock.read():
            size = len(self._keys)
            if where is None or where.is_empty:
                allowed = None if len(self._slot_of) == size else self._alive
            else:
                allowed = self._facets.mask(where, size) & self._alive
            count = len(self._slot_of) if allowed is None else int(allowed.sum())
            want = min(k, count)
            if want == 0:
                return []
            if allowed is not None and (
                count <= self.params.exact_below
                or (count <= self.params.exact_max and self._too_selective(count / size))
            ):
                return self._exact(query, want, allowed)
            hits = self._walk(query, want, allowed, count / max(size, 1))
            if len(hits) < want:  # the walk gave up before finding k: answer exactly
                return self._exact(query, want, allowed)
            return hits

    def _too_selective(self, share: float) -> bool:
        return self._filtered_ef(share) > self.params.ef_filtered_max

    def _filtered_ef(self, share: float) -> int:
        # Measured: a 10 % filter needs ~2.5x the unfiltered ef for the same recall, 1 % ~25x.
        return int(self.params.ef_search / max(share, 1e-9) / 4)

    def _walk(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None, share: float
    ) -> list[Hit]:
        ef = max(self.params.ef_search, k)
        if allowed is None:
            params = faiss.SearchParametersHNSW(efSearch=ef)
        else:
            ef = min(max(ef, self._filtered_ef(share)), max(self.params.ef_filtered_max, k))
            bits = np.packbits(allowed, bitorder="little")
            selector = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bits))
            params = faiss.SearchParametersHNSW(sel=selector, efSearch=ef)
        scores, slots = self._graph.search(query, k, params=params)
        return [
            Hit(key, float(score))
            for score, slot in zip(scores[0], slots[0], strict=True)
            if slot >= 0 and (key := self._keys[slot]) is not None
        ]

    def _exact(self, query: np.ndarray, k: int, allowed: np.ndarray | None) -> list[Hit]:
        slots = np.flatnonzero(self._alive if allowed is None else allowed)
        scores = self._stored()[slots] @ query[0]
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        return [Hit(self._keys[slots[i]] or "", float(scores[i])) for i in top]

    def facets_of(self, keys: Sequence[str]) -> dict[str, Facets]:
        """The facets held for each of ``keys`` that the index holds (for facet counts)."""
        with self._lock.read():
            return {
                key: self._facets.get(slot)
                for key in keys
                if (slot := self._slot_of.get(key)) is not None
            }

    def stats(self) -> dict[str, Any]:
        slots = len(self._keys)
        return {
            "tenant": self.tenant,
            "items": len(self._slot_of),
            "slots": slots,
            "tombstones": slots - len(self._slot_of),
            "rebuild_due": self.rebuild_due(),
            "dim": self.dim,
            # vectors + level-0 links (2M ints) + upper levels (~M/(M-1) ints on average)
            "approx_bytes": slots * (4 * self.dim + 4 * 2 * self.params.m + 8 * 2),
            "position": self.position,
        }

    # --- snapshots --------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The whole index and its stream position, as one byte string (``index_snapshot``)."""
        with self._lock.read():
            meta, arrays = self._facets.state()
            header = {
                "kind": KIND,
                "tenant": self.tenant,
                "position": self.position,
                "dim": self.dim,
                "params": _params(self.params),
                "items": len(self._slot_of),
                "built": self._built,
                "facets": meta,
            }
            keys = "\n".join("" if k is None else k for k in self._keys).encode()
            sections = {
                "graph": faiss.serialize_index(self._graph).tobytes(),
                "keys": keys,
                "alive": array_bytes(self._alive),
                "versions": "\n".join(f"{k}\t{v}" for k, v in self._versions.items()).encode(),
                **{f"facets.{name}": array_bytes(a) for name, a in arrays.items()},
            }
            return pack(header, sections)

    @classmethod
    def restore(cls, data: bytes, tenant: str) -> VectorIndex:
        """The index a snapshot holds; refuses a snapshot of another tenant or kind."""
        header, sections = unpack(data)
        if header.get("kind") != KIND:
            raise InvalidInput(f"this snapshot holds a {header.get('kind')!r} index, not vectors")
        if header["tenant"] != tenant:
            raise InvalidInput("this snapshot belongs to another tenant")
        index = cls(tenant, header["dim"], VectorParams(**header["params"]))
        index.position = header["position"]
        index._built = header["built"]
        index._graph = faiss.deserialize_index(np.frombuffer(sections["graph"], dtype=np.uint8))
        index._graph.hnsw.efSearch = index.params.ef_search
        index._alive = bytes_array(sections["alive"]).astype(bool)
        raw_keys = sections["keys"].decode().split("\n") if index._alive.size else []
        index._keys = [
            k if alive else None for k, alive in zip(raw_keys, index._alive, strict=True)
        ]
        index._slot_of = {k: s for s, k in enumerate(index._keys) if k is not None}
        for line in sections["versions"].decode().splitlines():
            key, _, version = line.rpartition("\t")
            index._versions[key] = int(version)
        arrays = {
            name.removeprefix("facets."): bytes_array(blob)
            for name, blob in sections.items()
            if name.startswith("facets.")
        }
        index._facets = FacetColumns.from_state(header["facets"], arrays)
        return index


def _params(params: VectorParams) -> dict[str, Any]:
    return {name: getattr(params, name) for name in VectorParams.__dataclass_fields__}


def _select(
    meta: dict[str, Any], arrays: dict[str, np.ndarray], slots: np.ndarray
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The facet state of ``slots`` only, renumbered 0..len(slots)-1 (for a rebuild)."""
    renumber = np.full(max(len(arrays["price"]), 1), -1, dtype=np.int64)
    renumber[slots] = np.arange(len(slots))
    picked = {name: arrays[name][slots] for name in ("category", "brand", "availability", "price")}
    new_slots = renumber[arrays["term_slot"]] if len(arrays["term_slot"]) else arrays["term_slot"]
    keep = new_slots >= 0
    picked["term_slot"] = new_slots[keep]
    picked["term_code"] = arrays["term_code"][keep]
    return meta, picked
