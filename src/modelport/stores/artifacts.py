"""The artifact store: content-addressed model files behind an fsspec URI.

An artifact is one file or one folder. It is stored under ``<base>/<model>/<sha256>/`` so a
path never changes meaning; its digest is the sha256 of the file, or for a folder the sha256 of
its manifest (one ``<sha256>  <relative path>`` line per file, sorted). The digest is checked
every time an artifact is materialised for loading.
"""

from __future__ import annotations

import hashlib
import shutil
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import fsspec

from modelport.errors import ArtifactError

_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def artifact_sha256(path: Path) -> str:
    if path.is_file():
        return file_sha256(path)
    if not path.is_dir():
        raise ArtifactError(f"artifact path {path} does not exist")
    files = sorted(p for p in path.rglob("*") if p.is_file())
    if not files:
        raise ArtifactError(f"artifact folder {path} is empty")
    manifest = "".join(f"{file_sha256(p)}  {p.relative_to(path).as_posix()}\n" for p in files)
    return hashlib.sha256(manifest.encode()).hexdigest()


class ArtifactStore:
    """Synchronous on purpose (fsspec is); callers run it with ``asyncio.to_thread``."""

    def __init__(self, base_uri: str, cache_dir: Path) -> None:
        self._fs, root = fsspec.core.url_to_fs(base_uri)
        self._root = root.rstrip("/")
        self._protocol = base_uri.split("://", 1)[0] if "://" in base_uri else "file"
        self._cache_dir = cache_dir

    def _uri(self, path: str) -> str:
        return f"{self._protocol}://{path}"

    @asynccontextmanager
    async def stage(self, source: Path | str) -> AsyncIterator[Path]:
        """A local path holding ``source`` (a path or an fsspec URI) while the block runs."""
        yield Path(source)

    def put(self, model: str, source: Path) -> tuple[str, str]:
        """Copy ``source`` into the store; returns ``(uri, sha256)``.

        The copy lands in a staging path first and is moved into place, so a reader never sees
        half an artifact. Identical content under another file name gets its own path in the
        same content folder; a damaged local copy is replaced."""
        sha = artifact_sha256(source)
        target = f"{self._root}/{model}/{sha}/{source.name}"
        if self._fs.exists(target) and not self._damaged_local(target, sha):
            return self._uri(target), sha
        staging = f"{self._root}/{model}/.staging-{uuid.uuid4().hex}"
        self._fs.makedirs(staging, exist_ok=True)
        try:
            self._fs.put(str(source), f"{staging}/{source.name}", recursive=source.is_dir())
            if self._fs.exists(target):
                self._fs.rm(target, recursive=True)
            self._fs.makedirs(f"{self._root}/{model}/{sha}", exist_ok=True)
            self._fs.mv(f"{staging}/{source.name}", target, recursive=source.is_dir())
        finally:
            if self._fs.exists(staging):
                self._fs.rm(staging, recursive=True)
        return self._uri(target), sha

    def _damaged_local(self, target: str, sha: str) -> bool:
        if not _is_local(self._fs):
            return False  # trusting content addressing; the checksum is verified on load
        return artifact_sha256(Path(target)) != sha

    def _download(self, fs: Any, path: str, sha256: str, local: Path) -> None:
        tmp = self._cache_dir / f".{sha256}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        fs.get(path, str(tmp / Path(path).name), recursive=fs.isdir(path))
        local.parent.mkdir(parents=True, exist_ok=True)
        (tmp / Path(path).name).rename(local)
        shutil.rmtree(tmp, ignore_errors=True)

    def materialise(self, uri: str, sha256: str) -> Path:
        """A local path holding the artifact, verified against ``sha256``."""
        fs, path = fsspec.core.url_to_fs(uri)
        local: Path
        if getattr(fs, "protocol", None) in ("file", ("file", "local")) or _is_local(fs):
            local = Path(path)
            if not local.exists():
                raise ArtifactError(f"artifact {uri} is missing from the artifact store")
        else:
            local = self._cache_dir / sha256 / Path(path).name
            if local.exists() and artifact_sha256(local) != sha256:
                # A damaged cached copy is discarded and fetched again, once.
                shutil.rmtree(local.parent, ignore_errors=True)
            if not local.exists():
                self._download(fs, path, sha256, local)
        actual = artifact_sha256(local)
        if actual != sha256:
            raise ArtifactError(
                f"artifact {uri} has sha256 {actual[:12]}…, the registry recorded "
                f"{sha256[:12]}…; refusing to serve it"
            )
        return local


def _is_local(fs: object) -> bool:
    protocol = getattr(fs, "protocol", ())
    protocols = (protocol,) if isinstance(protocol, str) else tuple(protocol)
    return "file" in protocols or "local" in protocols
