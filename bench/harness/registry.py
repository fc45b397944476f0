"""A fresh modelport registry in a benchmark's temporary folder, set up in-process.

Scenarios register their models, views and keys through modelport's own services (what
``modelport models push`` does), before the server that serves them starts on the same
folder. modelport's internal names are imported here only, so a rename inside modelport is
one edit for every benchmark.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from modelport.settings import Settings

#: The tenant every benchmark registers its models under.
BENCH_TENANT = "bench"
RANKER = "ranker"
MINILM = "minilm"

T = TypeVar("T")


def registry_settings(workdir: Path, **extra: Any) -> Settings:
    """The settings a server on ``workdir`` runs with (SQLite, artifacts and cache there);
    ``extra`` adds or replaces fields (``redis_url``, a PostgreSQL ``database_url``). No
    ``.env`` file is read."""
    from modelport.settings import Settings

    fields: dict[str, Any] = {
        "database_url": f"sqlite+aiosqlite:///{workdir / 'modelport.db'}",
        "artifacts_uri": str(workdir / "artifacts"),
        "cache_dir": workdir / "cache",
        **extra,
    }
    return Settings(_env_file=None, **fields)  # type: ignore[call-arg]


@asynccontextmanager
async def open_services(workdir: Path, **extra: Any) -> AsyncIterator[Any]:
    """modelport's services on ``workdir``'s registry, closed afterwards."""
    from modelport.wiring import build_services

    services = await build_services(registry_settings(workdir, **extra))
    try:
        yield services
    finally:
        await services.close()


def in_registry(workdir: Path, setup: Callable[[Any], Awaitable[T]], **extra: Any) -> T:
    """Run ``setup(services)`` on ``workdir``'s registry and return what it returns."""

    async def main() -> T:
        async with open_services(workdir, **extra) as services:
            await services.tenancy.ensure_tenant(BENCH_TENANT)
            return await setup(services)

    return asyncio.run(main())


async def issue_key(services: Any, scopes: list[str], **kwargs: Any) -> str:
    """A new API key of the benchmark tenant; its secret."""
    issued = await services.tenancy.create_key(BENCH_TENANT, scopes, **kwargs)
    return str(issued.secret)


def demo_model(name: str, build_dir: Path, seed: int | None = None) -> tuple[Path, Any]:
    """A demo model (``ranker`` or ``minilm``) built under ``build_dir``, with its demo config."""
    from modelport.demo.models import build_minilm, build_ranker, minilm_config, ranker_config

    if name == RANKER:
        filename = "ranker.onnx" if seed is None else f"ranker-{seed}.onnx"
        kwargs = {} if seed is None else {"seed": seed}
        return build_ranker(build_dir / filename, **kwargs), ranker_config()
    if name == MINILM:
        return build_minilm(build_dir / "minilm"), minilm_config()
    raise ValueError(f"no demo model {name!r}")


def demo_config(name: str) -> Any:
    """The demo config of ``ranker`` or ``minilm`` (what the reports describe)."""
    from modelport.demo.models import minilm_config, ranker_config

    return ranker_config() if name == RANKER else minilm_config()


def compiled_modules() -> tuple[int, int]:
    """How many of the request path's modules the server here runs compiled, of how many."""
    try:
        from modelport import compiled_modules
    except ImportError:  # a modelport without a compiled request path
        return 0, 0
    return len(compiled_modules.running()), len(compiled_modules.MODULES)
