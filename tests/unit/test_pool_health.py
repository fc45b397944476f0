"""The model pool after a hang: unhealthy while a fresh runtime loads, then served again.

A real ONNX identity model in a real artifact store, loaded by a real pool. The pool's runtime
loader (its extension point for runtime kinds) wraps the ONNX runtime in one whose call blocks
on a ``threading.Event`` for inputs that start with a negative value: a hang in Python code,
which, unlike an ONNX run, nothing can tell to stop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from modelport.errors import ComputeTimeout, ModelNotReady
from modelport.observability.metrics import Metrics
from modelport.serving.config import RuntimeConfig, VersionConfig
from modelport.serving.pool import LoadedVersion, ModelPool, VersionState
from modelport.serving.runtimes import Runtime, load_runtime
from modelport.serving.runtimes.onnx import read_onnx_signature
from modelport.serving.signature import Signature
from modelport.stores.artifacts import ArtifactStore
from modelport.stores.registry import VersionRecord

TIMEOUT_S = 0.3


class GatedRuntime:
    """The loaded ONNX runtime, except that a batch whose first value is negative waits for
    ``gate`` first."""

    def __init__(self, inner: Runtime, gate: threading.Event) -> None:
        self._inner = inner
        self._gate = gate

    @property
    def signature(self) -> Signature:
        return self._inner.signature

    def check(self, inputs: dict[str, np.ndarray]) -> None:
        self._inner.check(inputs)

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if float(inputs["x"].flat[0]) < 0:
            self._gate.wait(30)
        return self._inner.predict(inputs)

    def close(self) -> None:
        self._inner.close()


@dataclass
class Loader:
    """Builds gated runtimes; the second build (the reload) waits for ``reload_may_finish``."""

    gate: threading.Event = field(default_factory=threading.Event)
    reload_may_finish: threading.Event = field(default_factory=threading.Event)
    builds: int = 0

    def __call__(self, path: Path, config: RuntimeConfig) -> Runtime:
        self.builds += 1
        if self.builds > 1:
            assert self.reload_may_finish.wait(30), "the test never let the reload finish"
        return GatedRuntime(load_runtime(path, config), self.gate)


@pytest.fixture
def loader() -> Loader:
    return Loader()


@pytest.fixture
async def pool(tmp_path: Path, loader: Loader) -> AsyncIterator[ModelPool]:
    artifacts = ArtifactStore(str(tmp_path / "store"), tmp_path / "cache")
    pool = ModelPool(artifacts, Metrics(), runtimes=loader)
    try:
        yield pool
    finally:
        loader.gate.set()
        loader.reload_may_finish.set()
        await pool.close()


def identity_model(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture
def record(tmp_path: Path) -> VersionRecord:
    source = identity_model(tmp_path / "identity.onnx")
    uri, sha = ArtifactStore(str(tmp_path / "store"), tmp_path / "cache").put("ident", source)
    return VersionRecord(
        tenant="acme",
        model="ident",
        version="1",
        artifact_uri=uri,
        sha256=sha,
        signature=read_onnx_signature(source).to_dict(),
        config=VersionConfig(runtime=RuntimeConfig(compute_timeout_s=TIMEOUT_S)).model_dump(),
        created_at=dt.datetime.now(dt.UTC),
        created_by="tests",
    )


def rows(value: float) -> dict[str, np.ndarray]:
    return {"x": np.full((1, 2), value, dtype=np.float32)}


async def wait_until(condition: Callable[[], bool], seconds: float = 10) -> None:
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 - pool state changes without an event to await
            await asyncio.sleep(0.01)


async def hang(entry: LoadedVersion) -> ComputeTimeout:
    assert entry.batcher is not None
    with pytest.raises(ComputeTimeout) as caught:
        await asyncio.wait_for(entry.batcher.submit(rows(-1.0), 1), TIMEOUT_S + 3)
    return caught.value


async def test_hung_version_is_unhealthy_until_a_fresh_runtime_is_ready(
    pool: ModelPool, record: VersionRecord, loader: Loader
) -> None:
    first = await pool.load(record)
    assert first.state is VersionState.READY
    assert first.batcher is not None

    error = await hang(first)
    assert "model 'ident' version '1'" in error.message

    # Unhealthy, and it stays so while the reload's runtime is being built.
    await asyncio.sleep(0.1)
    assert pool.newest_ready("acme", "ident") is None
    current = pool.get("acme", "ident", "1")
    assert current is not None and current.state in (VersionState.UNHEALTHY, VersionState.LOADING)
    assert current.error is not None and f"compute timeout of {TIMEOUT_S:g} s" in current.error
    with pytest.raises(ModelNotReady):
        first.batcher.enqueue(rows(1.0), 1)

    loader.reload_may_finish.set()
    await wait_until(lambda: pool.newest_ready("acme", "ident") is not None)
    fresh = pool.newest_ready("acme", "ident")
    assert fresh is not None and fresh is not first
    assert fresh.state is VersionState.READY and fresh.error is None
    assert fresh.batcher is not None
    answer = await asyncio.wait_for(fresh.batcher.submit(rows(4.0), 1), 2)
    np.testing.assert_array_equal(answer["y"], rows(4.0)["x"])
    assert loader.builds == 2

    # The abandoned call returns at last (into a closed runtime); the fresh version is unmoved.
    loader.gate.set()
    await asyncio.sleep(0.1)
    assert pool.newest_ready("acme", "ident") is fresh
    answer = await asyncio.wait_for(fresh.batcher.submit(rows(5.0), 1), 2)
    np.testing.assert_array_equal(answer["y"], rows(5.0)["x"])


async def test_version_unloaded_while_unhealthy_is_not_brought_back(
    pool: ModelPool, record: VersionRecord, loader: Loader
) -> None:
    entry = await pool.load(record)
    await hang(entry)
    assert await pool.unload("acme", "ident", "1", drain_timeout_s=1)
    loader.reload_may_finish.set()
    await asyncio.sleep(0.2)
    assert pool.get("acme", "ident", "1") is None
    assert loader.builds == 1


async def test_reload_that_fails_takes_the_version_out_of_rotation(
    pool: ModelPool, record: VersionRecord, loader: Loader
) -> None:
    entry = await pool.load(record)
    # The stored bytes change under the version: its reload cannot pass the checksum.
    stored = Path(record.artifact_uri.removeprefix("file://"))
    await asyncio.to_thread(stored.write_bytes, b"not the pushed model")
    loader.reload_may_finish.set()
    await hang(entry)
    await wait_until(
        lambda: (v := pool.get("acme", "ident", "1")) is not None and v.state is VersionState.FAILED
    )
    failed = pool.get("acme", "ident", "1")
    assert failed is not None and failed.error is not None
    assert failed.error.startswith("out of rotation: a batch ran past its compute timeout")
    assert "the reload failed" in failed.error and "sha256" in failed.error
    assert pool.load_error("acme", "ident", "1") == failed.error
    assert pool.newest_ready("acme", "ident") is None


async def test_warmup_that_hangs_fails_the_load_instead_of_hanging_it(
    pool: ModelPool, record: VersionRecord, loader: Loader
) -> None:
    config = VersionConfig(
        runtime=RuntimeConfig(compute_timeout_s=TIMEOUT_S),
        warmup=[{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [-1, 0]}]}],
    )
    hanging = dataclasses.replace(record, config=config.model_dump())
    entry = await asyncio.wait_for(pool.load(hanging), TIMEOUT_S + 5)
    assert entry.state is VersionState.FAILED
    assert entry.error is not None
    assert f"compute timeout of {TIMEOUT_S:g} s" in entry.error
    await asyncio.sleep(0.1)
    assert loader.builds == 1  # a version that never became READY is not reloaded
