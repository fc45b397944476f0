"""The registry service on real databases: SQLite and PostgreSQL behave the same."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from modelport.errors import InvalidInput, ModelNotFound, VersionNotFound
from modelport.serving.config import BatchingConfig, VersionConfig
from modelport.wiring import Services, build_services

from .conftest import BACKENDS, TENANT, registry_url, settings_for
from .onnx_models import scale_model

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=BACKENDS)
def registry_db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, str]]:
    workdir = tmp_path_factory.mktemp(f"registry-{request.param}")
    with ExitStack() as stack:
        yield workdir, registry_url(request.param, workdir, stack, request)


@pytest.fixture
async def services(registry_db: tuple[Path, str]) -> AsyncIterator[Services]:
    workdir, url = registry_db
    built = await build_services(settings_for(workdir, url))
    await built.tenancy.ensure_tenant(TENANT)
    try:
        yield built
    finally:
        await built.close()


def models(tmp_path: Path, count: int) -> list[Path]:
    # The same interface, different weights: every artifact has its own checksum.
    return [scale_model(tmp_path / f"m{i}.onnx", float(i + 1)) for i in range(count)]


async def test_push_records_everything(services: Services, tmp_path: Path) -> None:
    config = VersionConfig(batching=BatchingConfig(max_batch_size=7, preferred_batch_sizes=[2, 4]))
    before = dt.datetime.now(dt.UTC)
    record = await services.registry.push(TENANT, "roundtrip", models(tmp_path, 1)[0], config)
    assert record.version == "1"

    stored = await services.registry.version(TENANT, "roundtrip", "1")
    assert stored.config == config.model_dump(mode="json")
    assert stored.signature == {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}],
    }
    assert stored.sha256 == record.sha256 and len(stored.sha256) == 64
    assert stored.artifact_uri == record.artifact_uri
    assert stored.created_by == "cli"
    assert stored.created_at.tzinfo is not None
    assert before - dt.timedelta(seconds=5) <= stored.created_at <= dt.datetime.now(dt.UTC)
    assert (await services.registry.version(TENANT, "roundtrip")).version == "1"
    description = await services.registry.describe(TENANT, "roundtrip")
    assert description.model.required is True
    assert [v.version for v in description.versions] == ["1"]


async def test_versions_increase_and_required_can_change(
    services: Services, tmp_path: Path
) -> None:
    first, second, third = models(tmp_path, 3)
    assert (await services.registry.push(TENANT, "flags", first, required=False)).version == "1"
    assert (await services.registry.describe(TENANT, "flags")).model.required is False
    # Not given: unchanged.
    assert (await services.registry.push(TENANT, "flags", second)).version == "2"
    assert (await services.registry.describe(TENANT, "flags")).model.required is False
    assert (await services.registry.push(TENANT, "flags", third, required=True)).version == "3"
    description = await services.registry.describe(TENANT, "flags")
    assert description.model.required is True
    assert [v.version for v in description.versions] == ["1", "2", "3"]
    assert (await services.registry.version(TENANT, "flags")).version == "3"
    names = [d.model.name for d in await services.registry.list_models(TENANT)]
    assert names == sorted(names) and "flags" in names


async def test_lookups_of_unknown_models_and_versions(services: Services, tmp_path: Path) -> None:
    await services.registry.push(TENANT, "lookups", models(tmp_path, 1)[0])
    with pytest.raises(ModelNotFound):
        await services.registry.version(TENANT, "no-such-model")
    with pytest.raises(ModelNotFound):
        await services.registry.describe(TENANT, "no-such-model")
    for version in ("2", "0", "x", "-1"):
        with pytest.raises(VersionNotFound):
            await services.registry.version(TENANT, "lookups", version)


async def test_a_failed_push_leaves_the_registry_as_it_was(
    services: Services, tmp_path: Path
) -> None:
    path = models(tmp_path, 1)[0]
    bad_warmup = VersionConfig(
        warmup=[{"inputs": [{"name": "nope", "datatype": "FP32", "shape": [1, 1], "data": [0]}]}]
    )
    with pytest.raises(InvalidInput):
        await services.registry.push(TENANT, "unchanged", path, bad_warmup)
    with pytest.raises(InvalidInput):
        await services.registry.push(TENANT, "unchanged", tmp_path / "missing.onnx")
    with pytest.raises(InvalidInput):
        await services.registry.push(TENANT, "not a valid name!", path)
    assert "unchanged" not in {d.model.name for d in await services.registry.list_models(TENANT)}


#: Concurrent pushes of one model. ``RegistryStore.add_version`` retries a taken version number
#: 5 times; a push loses at most once to each other push, so up to 5 always succeed.
PUSHERS = 5


async def test_concurrent_pushes_get_distinct_versions(services: Services, tmp_path: Path) -> None:
    paths = models(tmp_path, PUSHERS + 1)
    await services.registry.push(TENANT, "contended", paths[0])
    records = await asyncio.gather(
        *(services.registry.push(TENANT, "contended", p) for p in paths[1:])
    )
    assert sorted(int(r.version) for r in records) == list(range(2, PUSHERS + 2))
    by_version = {
        v.version: v.sha256
        for v in (await services.registry.describe(TENANT, "contended")).versions
    }
    assert {r.version: r.sha256 for r in records}.items() <= by_version.items()


async def test_concurrent_first_pushes_of_a_new_model(services: Services, tmp_path: Path) -> None:
    """BUG (PostgreSQL only): the first pushes of a new model, made at the same time, fail.

    ``RegistryStore.ensure_model`` catches the IntegrityError of the losing INSERT and then
    SELECTs in the same transaction; PostgreSQL has aborted that transaction ("current
    transaction is aborted, commands ignored until end of transaction block"). SQLite does
    not abort on a constraint error, so only PostgreSQL fails. A SAVEPOINT around the INSERT
    (``conn.begin_nested()``) or ``INSERT ... ON CONFLICT DO NOTHING`` fixes it.
    """
    paths = models(tmp_path, PUSHERS)
    results = await asyncio.gather(
        *(services.registry.push(TENANT, "brand-new", p) for p in paths), return_exceptions=True
    )
    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    versions = sorted(int(r.version) for r in results if not isinstance(r, BaseException))
    assert versions == list(range(1, PUSHERS + 1))
