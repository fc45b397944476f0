"""Search index snapshots in the artifact store (a path or an fsspec URI: file, s3, gs).

One snapshot is a folder named by when it was taken::

    {base}/{unix ns, 20 digits}/
        {tenant as hex}.vectors       VectorIndex.snapshot() bytes
        {tenant as hex}.lexical       LexicalIndex.snapshot() bytes
        manifest.json                 written last: the stream position and the tenants

A folder without its manifest is a snapshot cut short (its replica died) and is ignored; the
newest folder with one is what a starting replica restores. Synchronous (fsspec is): callers
run it in a worker thread.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import fsspec

MANIFEST = "manifest.json"


@dataclass(frozen=True, slots=True)
class SnapshotManifest:
    name: str
    position: str | None
    tenants: dict[str, dict[str, Any]]
    """tenant -> {"fingerprint": ..., "vectors": file or None, "lexical": file}"""


class SnapshotStore:
    def __init__(self, base_uri: str) -> None:
        self._fs, root = fsspec.core.url_to_fs(base_uri)
        self._root = root.rstrip("/")

    def new_name(self) -> str:
        return f"{time.time_ns():020d}"

    def write(self, name: str, filename: str, data: bytes) -> None:
        folder = f"{self._root}/{name}"
        self._fs.makedirs(folder, exist_ok=True)
        with self._fs.open(f"{folder}/{filename}", "wb") as fh:
            fh.write(data)

    def commit(self, manifest: SnapshotManifest) -> None:
        body = {"position": manifest.position, "tenants": manifest.tenants}
        self.write(manifest.name, MANIFEST, json.dumps(body, sort_keys=True).encode())

    def read(self, name: str, filename: str) -> bytes:
        with self._fs.open(f"{self._root}/{name}/{filename}", "rb") as fh:
            data: bytes = fh.read()
            return data

    def names(self) -> list[str]:
        """Complete snapshots, oldest first."""
        if not self._fs.exists(self._root):
            return []
        found = []
        for path in self._fs.ls(self._root, detail=False):
            name = str(path).rstrip("/").rsplit("/", 1)[-1]
            if name.isdigit() and self._fs.exists(f"{self._root}/{name}/{MANIFEST}"):
                found.append(name)
        return sorted(found)

    def newest(self) -> SnapshotManifest | None:
        names = self.names()
        if not names:
            return None
        body = json.loads(self.read(names[-1], MANIFEST))
        return SnapshotManifest(names[-1], body["position"], body["tenants"])

    def prune(self, keep: int) -> int:
        """Delete all but the newest ``keep`` snapshots (and any cut short before them)."""
        names = self.names()
        if len(names) <= keep:
            return 0
        cutoff = names[-keep]
        removed = 0
        for path in self._fs.ls(self._root, detail=False):
            name = str(path).rstrip("/").rsplit("/", 1)[-1]
            if name.isdigit() and name < cutoff:
                self._fs.rm(f"{self._root}/{name}", recursive=True)
                removed += 1
        return removed
