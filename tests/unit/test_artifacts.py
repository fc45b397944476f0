"""Content-addressed artifacts: digests, storing, and verified materialisation."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

from modelport.errors import ArtifactError
from modelport.stores.artifacts import ArtifactStore, artifact_sha256, file_sha256


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    return write(tmp_path / "src" / "model.onnx", b"\x08\x07onnx-graph" + bytes(range(256)) * 10)


@pytest.fixture
def model_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "src" / "encoder"
    write(folder / "model.onnx", b"graph bytes")
    write(folder / "tokenizer.json", b'{"vocab": {"a": 1}}')
    write(folder / "assets" / "labels.txt", b"cat\ndog\n")
    return folder


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "store"), tmp_path / "cache")


def tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# ---------------------------------------------------------------------------------------------
# Digests


def test_file_digest_is_the_sha256_of_its_bytes(model_file: Path) -> None:
    expected = hashlib.sha256(model_file.read_bytes()).hexdigest()
    assert artifact_sha256(model_file) == expected
    assert file_sha256(model_file) == expected


def test_large_file_digest_spans_read_chunks(tmp_path: Path) -> None:
    data = bytes(range(256)) * (5 * 4096 + 3)  # a bit over 5 MiB: several 1 MiB chunks
    path = write(tmp_path / "big.bin", data)
    assert artifact_sha256(path) == hashlib.sha256(data).hexdigest()


def test_folder_digest_is_the_sha256_of_its_sorted_manifest(model_folder: Path) -> None:
    files = sorted(tree(model_folder).items())
    lines = [f"{hashlib.sha256(data).hexdigest()}  {rel}\n" for rel, data in files]
    expected = hashlib.sha256("".join(lines).encode()).hexdigest()
    assert artifact_sha256(model_folder) == expected


def test_folder_digest_changes_when_any_file_changes(model_folder: Path) -> None:
    original = artifact_sha256(model_folder)
    for rel in ("model.onnx", "tokenizer.json", "assets/labels.txt"):
        path = model_folder / rel
        before = path.read_bytes()
        path.write_bytes(before + b" ")
        assert artifact_sha256(model_folder) != original, f"editing {rel} went unnoticed"
        path.write_bytes(before)
        assert artifact_sha256(model_folder) == original


def test_folder_digest_changes_when_a_file_is_added_removed_or_renamed(
    model_folder: Path,
) -> None:
    original = artifact_sha256(model_folder)

    extra = write(model_folder / "extra.bin", b"")
    assert artifact_sha256(model_folder) != original
    extra.unlink()
    assert artifact_sha256(model_folder) == original

    labels = model_folder / "assets" / "labels.txt"
    renamed = labels.rename(model_folder / "assets" / "labels2.txt")
    assert artifact_sha256(model_folder) != original
    renamed.rename(labels)

    moved = labels.rename(model_folder / "labels.txt")
    assert artifact_sha256(model_folder) != original, "moving a file between folders went unnoticed"
    moved.rename(labels)
    assert artifact_sha256(model_folder) == original


def test_identical_folders_in_different_places_share_a_digest(
    model_folder: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "elsewhere" / "renamed"
    # Written in a different order from the original.
    for rel, data in reversed(list(tree(model_folder).items())):
        write(copy / rel, data)
    assert artifact_sha256(copy) == artifact_sha256(model_folder)


def test_missing_path_has_no_digest(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="does not exist"):
        artifact_sha256(tmp_path / "nope")


def test_empty_folder_has_no_digest(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="empty"):
        artifact_sha256(tmp_path / "empty")


# ---------------------------------------------------------------------------------------------
# The store on a local path


def test_put_then_materialise_returns_the_same_file(store: ArtifactStore, model_file: Path) -> None:
    uri, sha = store.put("clf", model_file)

    local = store.materialise(uri, sha)

    assert sha == hashlib.sha256(model_file.read_bytes()).hexdigest()
    assert sha in uri and uri.endswith("/model.onnx")
    assert local.read_bytes() == model_file.read_bytes()
    assert local.name == "model.onnx"
    assert local.resolve() != model_file.resolve(), "the store must hold its own copy"


def test_put_then_materialise_returns_the_same_folder(
    store: ArtifactStore, model_folder: Path
) -> None:
    uri, sha = store.put("enc", model_folder)

    local = store.materialise(uri, sha)

    assert sha == artifact_sha256(model_folder)
    assert local.is_dir()
    assert tree(local) == tree(model_folder)


def test_stored_artifact_survives_changes_to_its_source(
    store: ArtifactStore, model_file: Path
) -> None:
    original = model_file.read_bytes()
    uri, sha = store.put("clf", model_file)
    model_file.write_bytes(b"retrained")
    assert store.materialise(uri, sha).read_bytes() == original


def test_putting_the_same_artifact_twice_gives_the_same_address(
    store: ArtifactStore, model_file: Path
) -> None:
    assert store.put("clf", model_file) == store.put("clf", model_file)


def test_tampered_stored_file_is_refused(store: ArtifactStore, model_file: Path) -> None:
    uri, sha = store.put("clf", model_file)
    store.materialise(uri, sha).write_bytes(b"swapped weights")

    with pytest.raises(ArtifactError) as info:
        store.materialise(uri, sha)

    assert "sha256" in info.value.message
    assert sha[:12] in info.value.message
    assert hashlib.sha256(b"swapped weights").hexdigest()[:12] in info.value.message


def test_tampered_stored_folder_is_refused(store: ArtifactStore, model_folder: Path) -> None:
    uri, sha = store.put("enc", model_folder)
    local = store.materialise(uri, sha)
    write(local / "assets" / "backdoor.py", b"print('hi')")

    with pytest.raises(ArtifactError, match="sha256"):
        store.materialise(uri, sha)


def test_wrong_recorded_digest_is_refused(store: ArtifactStore, model_file: Path) -> None:
    uri, _ = store.put("clf", model_file)
    with pytest.raises(ArtifactError, match="sha256"):
        store.materialise(uri, "0" * 64)


def test_missing_stored_artifact_is_reported(store: ArtifactStore, model_file: Path) -> None:
    uri, sha = store.put("clf", model_file)
    store.materialise(uri, sha).unlink()
    with pytest.raises(ArtifactError, match="missing"):
        store.materialise(uri, sha)


# ---------------------------------------------------------------------------------------------
# The store on a remote filesystem (fsspec's in-memory one): artifacts are cached locally


@pytest.fixture
def memory_root() -> Iterator[str]:
    root = f"/modelport-unit-{uuid.uuid4().hex}"
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


def test_remote_artifact_is_copied_into_the_cache_and_verified(
    memory_root: str, tmp_path: Path, model_file: Path
) -> None:
    cache = tmp_path / "cache"
    store = ArtifactStore(f"memory://{memory_root}", cache)

    uri, sha = store.put("clf", model_file)
    local = store.materialise(uri, sha)

    assert uri.startswith("memory://")
    assert local.is_relative_to(cache)
    assert local.read_bytes() == model_file.read_bytes()
    assert store.materialise(uri, sha) == local


def test_remote_folder_is_copied_into_the_cache_whole(
    memory_root: str, tmp_path: Path, model_folder: Path
) -> None:
    store = ArtifactStore(f"memory://{memory_root}", tmp_path / "cache")

    uri, sha = store.put("enc", model_folder)
    local = store.materialise(uri, sha)

    assert tree(local) == tree(model_folder)


def test_damaged_cached_copy_is_fetched_again_and_verified(
    memory_root: str, tmp_path: Path, model_file: Path
) -> None:
    store = ArtifactStore(f"memory://{memory_root}", tmp_path / "cache")
    uri, sha = store.put("clf", model_file)
    store.materialise(uri, sha).write_bytes(b"swapped in the cache")

    local = store.materialise(uri, sha)

    assert local.read_bytes() == model_file.read_bytes()


def test_tampered_remote_artifact_is_refused(
    memory_root: str, tmp_path: Path, model_file: Path
) -> None:
    import fsspec

    store = ArtifactStore(f"memory://{memory_root}", tmp_path / "cache")
    uri, sha = store.put("clf", model_file)
    fs, path = fsspec.core.url_to_fs(uri)
    with fs.open(path, "wb") as fh:
        fh.write(b"swapped in the store")

    with pytest.raises(ArtifactError, match="sha256"):
        store.materialise(uri, sha)
