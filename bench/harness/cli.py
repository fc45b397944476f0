"""The command-line options every benchmark shares, and ``--quick``.

``--quick`` is a smoke run: each script names short settings that prove it works end to end,
and the report goes to a temporary folder (not ``docs/benchmarks``) unless ``--out-dir``
says otherwise. Options given explicitly win over the quick settings.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.report import DEFAULT_OUT

QUICK_OUT = Path(tempfile.gettempdir()) / "modelport-bench-quick"


def parser(doc: str | None, *, runs: int = 3, quiet_wait: float = 30) -> argparse.ArgumentParser:
    """An argument parser described by the first paragraph of ``doc`` (the script's docstring),
    with the shared options: --runs, --quiet-wait, --out-dir, --no-write, --keep-workdir,
    --quick."""
    p = argparse.ArgumentParser(
        description=(doc or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--runs", type=int, default=runs, help="interleaved runs per point (%(default)s)"
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=quiet_wait,
        help="before each run, wait up to this many seconds for other load to stop (%(default)s)",
    )
    p.add_argument(
        "--out-dir",
        type=Path,
        default=DEFAULT_OUT,
        help=f"where the report (.md and .json) goes (docs/benchmarks; with --quick: {QUICK_OUT})",
    )
    p.add_argument("--no-write", action="store_true", help="print only; write no report")
    p.add_argument("--keep-workdir", action="store_true", help="keep the temp folder and logs")
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"a short smoke run that proves the script works; the report goes to {QUICK_OUT}",
    )
    return p


def parse(
    p: argparse.ArgumentParser, argv: Sequence[str] | None, quick: dict[str, Any]
) -> argparse.Namespace:
    """Parse ``argv``; with ``--quick``, ``quick`` replaces the defaults it names."""
    args = p.parse_args(argv)
    if args.quick:
        p.set_defaults(out_dir=QUICK_OUT, quiet_wait=0, **quick)
        args = p.parse_args(argv)
    return args
