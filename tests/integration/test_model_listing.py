"""Listing a tenant's models (``GET /v1/models``, the OIP repository index) costs a fixed
number of SQL statements, however many models the tenant has: no query per model."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from modelport.routing.policy import RoutingPolicy, Split
from modelport.wiring import Services, build_services

from .conftest import BACKENDS, TENANT, registry_url, settings_for
from .onnx_models import scale_model

pytestmark = pytest.mark.integration

OTHER = "listing-other"


@pytest.fixture(scope="module", params=BACKENDS)
def listing_db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, str]]:
    workdir = tmp_path_factory.mktemp(f"listing-{request.param}")
    with ExitStack() as stack:
        yield workdir, registry_url(request.param, workdir, stack, request)


@pytest.fixture
async def services(listing_db: tuple[Path, str]) -> AsyncIterator[Services]:
    workdir, url = listing_db
    built = await build_services(settings_for(workdir, url))
    await built.tenancy.ensure_tenant(TENANT)
    await built.tenancy.ensure_tenant(OTHER)
    try:
        yield built
    finally:
        await built.close()


class StatementCounter:
    """Counts the SQL statements every engine of this process sends while it is active (the
    services' engine is theirs alone, so the class-wide event is the way in)."""

    def __init__(self) -> None:
        self.count = 0

    def _seen(self, *_args: Any) -> None:
        self.count += 1

    async def measure(self, call: Callable[[], Awaitable[Any]]) -> tuple[int, Any]:
        self.count = 0
        event.listen(Engine, "before_cursor_execute", self._seen)
        try:
            result = await call()
        finally:
            event.remove(Engine, "before_cursor_execute", self._seen)
        return self.count, result


async def add_models(
    services: Services, tmp_path: Path, start: int, stop: int, tenant: str = TENANT
) -> None:
    """The tenant's models ``m<start>`` .. ``m<stop - 1>``, each with two versions and a
    production alias; every other one also has a routing policy."""
    for i in range(start, stop):
        name = f"m{i}"
        for v in (1, 2):
            path = scale_model(tmp_path / f"{tenant}-{name}-{v}.onnx", float(10 * i + v))
            await services.registry.push(tenant, name, path)
        await services.releases.set_alias(tenant, name, "production", "1", "test", "")
        if i % 2 == 0:
            policy = RoutingPolicy(splits=(Split("1", 90.0), Split("2", 10.0)))
            await services.releases.set_policy(tenant, name, policy, "test", "")


async def test_listing_models_costs_the_same_for_two_models_as_for_six(
    services: Services, tmp_path: Path
) -> None:
    counter = StatementCounter()
    # Another tenant's model is never listed, and costs nothing either.
    await services.registry.push(OTHER, "m0", scale_model(tmp_path / "other.onnx", 3.0))

    await add_models(services, tmp_path, 0, 2)
    few, overviews = await counter.measure(lambda: services.releases.overviews(TENANT))
    assert [o.model.name for o in overviews] == ["m0", "m1"]

    await add_models(services, tmp_path, 2, 6)
    many, overviews = await counter.measure(lambda: services.releases.overviews(TENANT))
    assert many == few, f"{few} statements for 2 models, {many} for 6"
    assert 0 < many <= 5  # models, versions, aliases, policies, active rollouts

    assert [o.model.name for o in overviews] == [f"m{i}" for i in range(6)]
    for i, overview in enumerate(overviews):
        assert [v.record.version for v in overview.versions] == ["1", "2"]
        assert overview.releases.aliases == {"production": "1"}
        assert [v.aliases for v in overview.versions] == [["production"], []]
        assert [v.state for v in overview.versions] == ["UNAVAILABLE", "UNAVAILABLE"]
        assert overview.releases.rollout is None
        if i % 2 == 0:
            assert overview.releases.policy is not None
            assert [s.target for s in overview.releases.policy.splits] == ["1", "2"]
        else:
            assert overview.releases.policy is None
        # The listing says what describing each model one by one says.
        single = await services.releases.overview(TENANT, overview.model.name)
        assert single == overview


async def test_registry_listing_and_repository_index_cost_no_query_per_model(
    services: Services, tmp_path: Path
) -> None:
    counter = StatementCounter()
    # A tenant of its own: the other test's models are not in the way.
    tenant = "listing-index"
    await services.tenancy.ensure_tenant(tenant)
    await add_models(services, tmp_path, 0, 1, tenant)
    listed_few, _ = await counter.measure(lambda: services.registry.list_models(tenant))
    index_few, _ = await counter.measure(lambda: services.repository.index(tenant))

    await add_models(services, tmp_path, 1, 4, tenant)
    listed_many, listed = await counter.measure(lambda: services.registry.list_models(tenant))
    index_many, index = await counter.measure(lambda: services.repository.index(tenant))

    assert (listed_many, index_many) == (listed_few, index_few) == (2, 2)
    assert [(d.model.name, [v.version for v in d.versions]) for d in listed] == [
        (f"m{i}", ["1", "2"]) for i in range(4)
    ]
    assert [(e.name, e.version, e.state) for e in index] == [
        (f"m{i}", "2", "UNAVAILABLE") for i in range(4)
    ]
