"""Every tenant's search indexes, kept apart by construction.

A tenant gets a :class:`~modelport.stores.vectors.VectorIndex` and a
:class:`~modelport.stores.lexical.LexicalIndex` of its own, made on first use. Nothing here or in
either index searches across tenants, and a snapshot names its tenant and is refused by any other,
so one tenant's products cannot reach another's results or facets whatever a caller forgets.

The composition root makes one :class:`SearchIndexes` per process and hands it to the search
service and the catalog consumer. Snapshots are plain bytes: the caller stores them (artifact
store) and restores the newest on start, then replays the catalog stream from each index's
``position``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

from modelport.stores.lexical import DEFAULT_FIELDS, LexicalIndex
from modelport.stores.vectors import VectorIndex, VectorParams


class SearchIndexes:
    def __init__(
        self,
        dim: int,
        vector_params: VectorParams | None = None,
        fields: Mapping[str, float] = DEFAULT_FIELDS,
        folder: Path | None = None,
    ) -> None:
        """``folder``: where lexical indexes live (a subfolder per tenant); temp folders if None."""
        self.dim = dim
        self.vector_params = vector_params or VectorParams()
        self.fields = dict(fields)
        self._folder = folder
        self._vectors: dict[str, VectorIndex] = {}
        self._lexical: dict[str, LexicalIndex] = {}
        self._lock = threading.Lock()

    def vectors(self, tenant: str, dim: int | None = None) -> VectorIndex:
        """The tenant's vector index; a new one has ``dim`` dimensions (the default's if None)."""
        with self._lock:
            index = self._vectors.get(tenant)
            if index is None:
                index = self._vectors[tenant] = VectorIndex(
                    tenant, dim or self.dim, self.vector_params
                )
            return index

    def has_vectors(self, tenant: str) -> bool:
        with self._lock:
            return tenant in self._vectors

    def lexical(self, tenant: str, fields: Mapping[str, float] | None = None) -> LexicalIndex:
        """The tenant's lexical index; ``fields`` (name -> weight, else the default) shape it
        when it is made. Its weights can still change per query; its fields cannot."""
        with self._lock:
            index = self._lexical.get(tenant)
            if index is None:
                index = self._lexical[tenant] = LexicalIndex(
                    tenant, fields or self.fields, self._tenant_folder(tenant)
                )
            return index

    def restore(self, tenant: str, vectors: bytes | None, lexical: bytes | None) -> None:
        """Replace a tenant's indexes with the ones in its snapshots (either may be None)."""
        restored_vectors = VectorIndex.restore(vectors, tenant) if vectors else None
        restored_lexical = (
            LexicalIndex.restore(lexical, tenant, self._tenant_folder(tenant)) if lexical else None
        )
        with self._lock:
            if restored_vectors is not None:
                self._vectors[tenant] = restored_vectors
            if restored_lexical is not None:
                old = self._lexical.pop(tenant, None)
                self._lexical[tenant] = restored_lexical
                if old is not None:
                    old.close()

    def tenants(self) -> list[str]:
        with self._lock:
            return sorted(set(self._vectors) | set(self._lexical))

    def drop(self, tenant: str) -> None:
        with self._lock:
            self._vectors.pop(tenant, None)
            lexical = self._lexical.pop(tenant, None)
        if lexical is not None:
            lexical.close()

    def close(self) -> None:
        for tenant in self.tenants():
            self.drop(tenant)

    def _tenant_folder(self, tenant: str) -> Path | None:
        """A new, empty folder for one of the tenant's lexical indexes (a restore makes another)."""
        if self._folder is None:
            return None
        # Hex: any tenant id makes a safe folder name.
        base = self._folder / tenant.encode().hex()
        n = 0
        while (candidate := base.with_name(f"{base.name}.{n}")).exists():
            n += 1
        return candidate
