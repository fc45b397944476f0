"""The compiled request path: which modules, whether this process runs them, staleness."""

from __future__ import annotations

import importlib
import importlib.machinery
import os
from pathlib import Path

from modelport import compiled_modules

SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def test_every_compiled_module_has_its_source() -> None:
    for module in compiled_modules.MODULES:
        assert compiled_modules.source(module).is_file(), module


def test_a_built_module_is_the_one_python_imports() -> None:
    # An extension next to its source must win the import; otherwise building it buys nothing.
    running = set(compiled_modules.running())
    for module in compiled_modules.MODULES:
        built = compiled_modules.extension(module)
        assert (module in running) == (built is not None), module
        if built is not None:
            assert importlib.import_module(module).__file__ == str(built)


def _tree(root: Path, module: str, source_age: float, built_age: float | None) -> None:
    source = compiled_modules.source(module, root)
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_text("x = 1\n")
    now = source.stat().st_mtime
    os.utime(source, (now - source_age, now - source_age))
    if built_age is not None:
        built = source.with_name(source.stem + SUFFIX)
        built.write_bytes(b"")
        os.utime(built, (now - built_age, now - built_age))


def test_a_source_edited_after_its_build_is_stale(tmp_path: Path) -> None:
    edited, fresh, plain = (
        compiled_modules.MODULES[0],
        compiled_modules.MODULES[1],
        compiled_modules.MODULES[2],
    )
    _tree(tmp_path, edited, source_age=10, built_age=60)  # edited after the build
    _tree(tmp_path, fresh, source_age=60, built_age=10)  # built after the last edit
    _tree(tmp_path, plain, source_age=60, built_age=None)  # never built: runs as Python
    assert compiled_modules.stale(tmp_path) == [edited]
    assert compiled_modules.extension(fresh, tmp_path) is not None
    assert compiled_modules.extension(plain, tmp_path) is None
