"""Compile modelport's request path with mypyc, in place (``make setup`` runs this).

    .venv/bin/python scripts/build_compiled.py            # build (about a minute on 2 cores)
    .venv/bin/python scripts/build_compiled.py --remove   # back to plain Python
    .venv/bin/python scripts/build_compiled.py --sources  # the compiled modules' .py files

``modelport.compiled_modules.MODULES`` names the modules. Each becomes an extension module
next to its ``.py`` under ``src/`` (plus one shared library,
``src/modelport_compiled__mypyc*.so``, that holds their common code); generated C and object
files go to ``build/compiled/``. All of it is ignored by git. ``MODELPORT_COMPILE=0`` removes
the extensions instead of building them.

A build that fails (no C compiler, no Python headers) leaves no extension behind and says so;
modelport then runs the same modules as plain Python, only slower, so setup goes on.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.machinery
import os
import shutil
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
BUILD = REPO / "build" / "compiled"
GROUP = "modelport_compiled"

sys.path.insert(0, str(SRC))
from modelport.compiled_modules import MODULES, extension, source  # noqa: E402 - needs SRC on the path


def remove() -> int:
    """Delete every extension this script builds; returns how many it found."""
    found = {built for module in MODULES if (built := extension(module)) is not None}
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        found.update(SRC.glob(f"{GROUP}__mypyc*{suffix}"))  # the suffixes overlap: a set
    for path in found:
        path.unlink(missing_ok=True)
    return len(found)


def build() -> None:
    from mypyc.build import mypycify
    from setuptools import setup

    remove()
    BUILD.mkdir(parents=True, exist_ok=True)
    paths = [str(source(module).relative_to(SRC)) for module in MODULES]
    os.chdir(SRC)  # module names come from paths relative to here; --inplace writes here
    extensions = mypycify(
        ["--config-file", str(REPO / "pyproject.toml"), *paths],
        opt_level="3",
        group_name=GROUP,
        target_dir=str(BUILD / "c"),
    )
    try:
        _setup(setup, extensions)
    finally:
        # build_ext --inplace stages the extensions in ./build before copying them in place.
        shutil.rmtree(SRC / "build", ignore_errors=True)


def _setup(setup: Any, extensions: list[Any]) -> None:
    setup(
        name="modelport-compiled",
        ext_modules=extensions,
        script_args=[
            "--quiet",
            "build_ext",
            "--inplace",
            "--parallel",
            str(os.cpu_count() or 1),
            "--build-temp",
            str(BUILD / "temp"),
        ],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--remove", action="store_true", help="delete the compiled modules")
    parser.add_argument("--sources", action="store_true", help="print the compiled sources")
    args = parser.parse_args(argv)
    if args.sources:
        print(" ".join(str(source(module).relative_to(REPO)) for module in MODULES))
        return 0
    if args.remove or os.environ.get("MODELPORT_COMPILE") == "0":
        print(f"removed {remove()} compiled modules: modelport runs as plain Python")
        return 0
    try:
        build()
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - any build failure falls back
        with contextlib.suppress(Exception):
            remove()
        print(
            f"warning: compiling the request path failed ({exc}); modelport runs as plain "
            "Python (correct, but slower). A C compiler and the Python headers fix this.",
            file=sys.stderr,
        )
        return 0
    print(f"compiled {len(MODULES)} modules of the request path with mypyc")
    return 0


if __name__ == "__main__":
    sys.exit(main())
