"""Reports: the machine and command a run was measured with, number formatting, and running
a scenario from start to its written ``<stem>.md`` and ``<stem>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.processes import Processes, sigterm_as_exit
from harness.registry import compiled_modules
from harness.wrk import require_wrk, wrk_version

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "docs" / "benchmarks"

#: What a scenario is: (arguments, its servers, a temporary folder) -> the report's data.
Bench = Callable[[argparse.Namespace, Processes, Path], dict[str, Any]]


def package_version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def _git(*argv: str) -> str:
    done = subprocess.run(["git", *argv], cwd=REPO, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def machine_info() -> dict[str, Any]:
    """The machine, the software stack and the code a wrk benchmark ran on."""
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        **{
            package: package_version(package)
            for package in ("onnxruntime", "uvicorn", "uvloop", "httptools", "orjson", "modelport")
        },
        "wrk": wrk_version(),
        "git_commit": _git("rev-parse", "--short", "HEAD") or "unknown",
        "compiled_modules": compiled_modules(),
        "src_modified": bool(_git("status", "--porcelain", "src")),
    }


def fmt(value: Any, digits: int = 2) -> str:
    """A table cell: thousands separators, ``digits`` decimals for floats, n/a for None."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def command_line() -> str:
    """The command that produced the report, relative to the repository root."""
    exe = Path(sys.executable)
    return shlex.join(
        [
            _relative(exe.parent.resolve() / exe.name),
            _relative(Path(sys.argv[0]).resolve()),
            *sys.argv[1:],
        ]
    )


def write_report(out_dir: Path, stem: str, markdown: str, result: dict[str, Any]) -> None:
    """``<stem>.md`` and ``<stem>.json`` (the same numbers, and the raw runs) in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / f"{stem}.md").write_text(markdown)
    print(f"\nwrote {out_dir / f'{stem}.md'} and {out_dir / f'{stem}.json'}")


def run_scenario(
    args: argparse.Namespace,
    bench: Bench,
    render: Callable[[dict[str, Any]], str],
    stem: str,
    *,
    needs_wrk: bool = True,
    summary: Callable[[dict[str, Any]], None] | None = None,
) -> int:
    """Run ``bench`` in a temporary folder (its servers stopped afterwards, also on Ctrl-C or
    SIGTERM), print ``summary(result)`` or else the report, and write the report to
    ``args.out_dir`` unless ``args.no_write``. Returns the exit status."""
    if needs_wrk and not require_wrk():
        return 2
    procs = Processes()
    workdir = Path(tempfile.mkdtemp(prefix="modelport-bench-"))
    try:
        with sigterm_as_exit():
            result = bench(args, procs, workdir)
    except KeyboardInterrupt:
        print("\ninterrupted; stopping the servers", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
        if getattr(args, "keep_workdir", False):
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report = render(result)
    if summary is not None:
        summary(result)
    else:
        print()
        print(report)
    if not args.no_write:
        write_report(args.out_dir, stem, report, result)
    return 0
