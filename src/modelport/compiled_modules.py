"""The request path's modules that ``make setup`` compiles to C, and what this process runs.

The modules every infer request passes through (the HTTP protocol, the bare infer endpoint,
the request plan, the inference service, the batcher and its compute threads, the pool,
routing, tenancy, quotas and metrics) are plain, ``mypy --strict`` typed Python.
``scripts/build_compiled.py`` compiles them with mypyc into extension modules next to their
sources; Python imports an extension module before the ``.py`` of the same name, so the
server then runs them compiled. Compiled, the event loop spends less time per request
(``docs/benchmarks/inference.md`` measures both). The sources stay the single truth: the
behaviour is the same, and without a C compiler everything runs as plain Python.

A compiled module whose ``.py`` changed after it was built is **stale**: Python would still
import the old extension. ``make test`` and ``make run`` rebuild first; ``stale()`` names
any that are out of date so the test suite and the server can say so.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path

#: The modules compiled by ``scripts/build_compiled.py``, in import-path form.
MODULES = (
    "modelport.api.bodies",
    "modelport.api.cors",
    "modelport.api.gate",
    "modelport.api.request_head",
    "modelport.api.request_id",
    "modelport.api.v2_infer",
    "modelport.cli.http_protocol",
    "modelport.observability.loop_metrics",
    "modelport.observability.metrics",
    "modelport.routing.policy",
    "modelport.routing.table",
    "modelport.routing.request_stats",
    "modelport.services.inference",
    "modelport.services.quotas",
    "modelport.services.tenancy",
    "modelport.serving.batcher",
    "modelport.serving.batching",
    "modelport.serving.codec",
    "modelport.serving.compute",
    "modelport.serving.request_plan",
    "modelport.serving.pool",
)

_PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def source(module: str, root: Path = _PACKAGE_ROOT) -> Path:
    """The ``.py`` file of ``module`` under ``root`` (the folder that holds ``modelport``)."""
    return root.joinpath(*module.split(".")).with_suffix(".py")


def extension(module: str, root: Path = _PACKAGE_ROOT) -> Path | None:
    """The compiled extension file next to ``module``'s source, if one was built."""
    base = source(module, root).with_suffix("")
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = base.with_name(base.name + suffix)
        if candidate.exists():
            return candidate
    return None


def stale(root: Path = _PACKAGE_ROOT) -> list[str]:
    """The compiled modules whose source changed after they were built."""
    out = []
    for module in MODULES:
        built = extension(module, root)
        if built is not None and source(module, root).stat().st_mtime > built.stat().st_mtime:
            out.append(module)
    return out


def running() -> list[str]:
    """Which of ``MODULES`` this process runs compiled (imported or, if not yet imported,
    would import as an extension)."""
    out = []
    for module in MODULES:
        loaded = sys.modules.get(module)
        if loaded is not None:
            origin = getattr(loaded, "__file__", None) or ""
        else:
            spec = importlib.util.find_spec(module)
            origin = (spec.origin or "") if spec is not None else ""
        if origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)):
            out.append(module)
    return out
