"""The artifact store: content-addressed model files behind an fsspec URI.

An artifact is one file or one folder. It is stored under ``<base>/<model>/<sha256>/`` so a
path never changes meaning; its digest is the sha256 of the file, or for a folder the sha256 of
its manifest (one ``<sha256>  <relative path>`` line per file, sorted). The digest is checked
every time an artifact is materialised for loading.

The store and the sources of a push may be any fsspec filesystem: a local path, ``file://``,
``s3://`` (the ``s3`` extra), ``gs://`` (the ``gcs`` extra). Remote filesystems read their
endpoint and credentials from their own environment (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``GOOGLE_APPLICATION_CREDENTIALS`` …), never from modelport's settings.
URIs are written into messages with their user info and query string removed, since either can
carry a secret.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import fsspec

from modelport.errors import ArtifactError, InvalidInput

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
        try:
            self._fs, root = fsspec.core.url_to_fs(base_uri)
        except Exception as exc:  # noqa: BLE001 - e.g. s3fs not installed for an s3:// store
            raise ArtifactError(
                f"cannot open the artifact store {redact(base_uri)}: {_describe(exc)}"
            ) from None
        self._root = root.rstrip("/")
        self._protocol = base_uri.split("://", 1)[0] if "://" in base_uri else "file"
        self._cache_dir = cache_dir

    def _uri(self, path: str) -> str:
        return f"{self._protocol}://{path}"

    @asynccontextmanager
    async def stage(self, source: Path | str) -> AsyncIterator[Path]:
        """A local path holding ``source`` (a path or an fsspec URI) while the block runs.

        A remote source is downloaded into a temporary folder under the cache directory (sized
        for artifacts, unlike ``/tmp`` on many hosts) and removed when the block exits."""
        if isinstance(source, Path) or "://" not in source:
            yield Path(source)
            return
        fs, path = _url_to_fs(source)
        if _is_local(fs):
            yield Path(path)
            return
        await asyncio.to_thread(self._cache_dir.mkdir, parents=True, exist_ok=True)
        tmp = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix=".stage-", dir=self._cache_dir))
        try:
            yield await asyncio.to_thread(_fetch_source, fs, path, source, tmp)
        finally:
            await asyncio.to_thread(shutil.rmtree, tmp, True)

    def put(self, model: str, source: Path) -> tuple[str, str]:
        """Copy ``source`` into the store; returns ``(uri, sha256)``.

        The copy lands in a staging path first and is moved into place, so a reader never sees
        half an artifact on a local store; on an object store each file appears whole, and a
        folder caught half-moved fails its checksum on load rather than being served. Identical
        content under another file name gets its own path in the
        same content folder; a damaged or incomplete stored copy is replaced."""
        sha = artifact_sha256(source)
        target = f"{self._root}/{model}/{sha}/{source.name}"
        try:
            self._copy_in(source, model, sha, target)
        except ArtifactError:
            raise
        except Exception as exc:  # noqa: BLE001 - filesystems raise anything; say which
            raise ArtifactError(
                f"cannot write to the artifact store {redact(self._uri(self._root))}: "
                f"{_describe(exc)}"
            ) from None
        return self._uri(target), sha

    def _copy_in(self, source: Path, model: str, sha: str, target: str) -> None:
        if self._fs.exists(target) and self._intact(target, source, sha):
            return
        staging = f"{self._root}/{model}/.staging-{uuid.uuid4().hex}"
        staged = f"{staging}/{source.name}"
        self._fs.makedirs(staging, exist_ok=True)
        try:
            self._fs.put(str(source), staged, recursive=source.is_dir())
            if self._fs.exists(target):
                self._fs.rm(target, recursive=True)
            self._fs.makedirs(f"{self._root}/{model}/{sha}", exist_ok=True)
            if source.is_dir() and not _is_local(self._fs):
                # Object stores have no folders to rename, and fsspec's recursive mv also tries
                # to copy the folder placeholders (which are not objects) and fails: move the
                # files by explicit lists instead.
                files = self._fs.find(staged)
                self._fs.mv(files, [target + f.removeprefix(staged) for f in files])
            else:
                self._fs.mv(staged, target, recursive=source.is_dir())
        finally:
            if self._fs.exists(staging):
                self._fs.rm(staging, recursive=True)

    def _intact(self, target: str, source: Path, sha: str) -> bool:
        """Whether the stored copy at ``target`` can be kept rather than written again."""
        if _is_local(self._fs):
            return artifact_sha256(Path(target)) == sha
        # Hashing a remote copy means downloading it; the checksum is verified on every load
        # anyway. Comparing names and sizes catches what an interrupted upload leaves behind.
        if source.is_file():
            return bool(self._fs.info(target)["size"] == source.stat().st_size)
        stored = {
            name.removeprefix(target).lstrip("/"): info["size"]
            for name, info in self._fs.find(target, detail=True).items()
        }
        local = {
            p.relative_to(source).as_posix(): p.stat().st_size
            for p in source.rglob("*")
            if p.is_file()
        }
        return stored == local

    def _download(self, fs: Any, path: str, uri: str, sha256: str, local: Path) -> None:
        tmp = self._cache_dir / f".{sha256}.{uuid.uuid4().hex}.partial"
        tmp.mkdir(parents=True)
        try:
            try:
                fs.invalidate_cache(path)
                fs.get(path, str(tmp / Path(path).name), recursive=fs.isdir(path))
            except FileNotFoundError:
                raise ArtifactError(
                    f"artifact {redact(uri)} is missing from the artifact store"
                ) from None
            except Exception as exc:  # noqa: BLE001 - filesystems raise anything; say which
                raise ArtifactError(
                    f"cannot fetch artifact {redact(uri)}: {_describe(exc)}"
                ) from None
            local.parent.mkdir(parents=True, exist_ok=True)
            (tmp / Path(path).name).rename(local)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def delete(self, uri: str) -> bool:
        """Remove a stored artifact (a deleted model's); False when it is not under this
        store's root or already gone. The caller checks that no version still uses it."""
        fs, path = _url_to_fs(uri)
        if not path.startswith(self._root + "/") or not fs.exists(path):
            return False
        fs.rm(path, recursive=True)
        if _is_local(fs):
            # The content folder and the model's folder, once empty (object stores have none).
            folder = path.rsplit("/", 1)[0]
            for _ in range(2):
                try:
                    if fs.ls(folder) or folder == self._root:
                        break
                    fs.rmdir(folder)
                except OSError:
                    break  # a concurrent push writes there: keep it
                folder = folder.rsplit("/", 1)[0]
        return True

    def materialise(self, uri: str, sha256: str) -> Path:
        """A local path holding the artifact, verified against ``sha256``."""
        fs, path = _url_to_fs(uri)
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
                self._download(fs, path, uri, sha256, local)
        actual = artifact_sha256(local)
        if actual != sha256:
            if not _is_local(fs):
                # Never keep unverified bytes in the cache: the next load fetches again.
                shutil.rmtree(local.parent, ignore_errors=True)
            raise ArtifactError(
                f"artifact {redact(uri)} has sha256 {actual[:12]}…, the registry recorded "
                f"{sha256[:12]}…; refusing to serve it"
            )
        return local


_USERINFO = re.compile(r"(?<=://)[^/@]*@")


def redact(uri: str) -> str:
    """``uri`` without user info (``user:secret@``) or query string (signed URLs)."""
    return _USERINFO.sub("***@", uri.split("?", 1)[0])


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {redact(str(exc))}" if str(exc) else type(exc).__name__


def _url_to_fs(uri: str) -> tuple[Any, str]:
    try:
        fs, path = fsspec.core.url_to_fs(uri)
    except Exception as exc:  # noqa: BLE001 - e.g. s3fs not installed, an FTP host down
        raise InvalidInput(f"cannot open {redact(uri)}: {_describe(exc)}") from None
    return fs, str(path)


def _fetch_source(fs: Any, path: str, uri: str, into: Path) -> Path:
    """Download the file or folder at ``path`` into the folder ``into``; returns its copy."""
    path = path.rstrip("/")
    try:
        # A long-lived process may hold a listing from before the object was uploaded.
        fs.invalidate_cache(path)
        if not fs.exists(path):
            raise InvalidInput(f"{redact(uri)} does not exist (no such file or folder)")
        local = into / (path.rsplit("/", 1)[-1] or "artifact")
        fs.get(path, str(local), recursive=fs.isdir(path))
    except InvalidInput:
        raise
    except FileNotFoundError:
        raise InvalidInput(f"{redact(uri)} does not exist (no such file or folder)") from None
    except PermissionError:
        raise InvalidInput(f"access to {redact(uri)} was denied; check the credentials") from None
    except Exception as exc:  # noqa: BLE001 - filesystems raise anything; say which, not how
        raise InvalidInput(f"cannot read {redact(uri)}: {_describe(exc)}") from None
    if not local.exists():
        raise InvalidInput(f"{redact(uri)} does not exist (no such file or folder)")
    return local


def _is_local(fs: object) -> bool:
    protocol = getattr(fs, "protocol", ())
    protocols = (protocol,) if isinstance(protocol, str) else tuple(protocol)
    return "file" in protocols or "local" in protocols
