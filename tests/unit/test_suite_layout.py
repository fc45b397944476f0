"""``make test`` runs every test folder, in the order the README tells developers."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _testpaths() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return list(config["tool"]["pytest"]["ini_options"]["testpaths"])


def test_no_folder_of_tests_is_left_out_of_the_run() -> None:
    # pytest collects only under testpaths: a folder outside them would never run in CI.
    run = [ROOT / path for path in _testpaths()]
    folders = {test.parent for test in (ROOT / "tests").rglob("test_*.py")}
    left_out = sorted(
        str(folder.relative_to(ROOT))
        for folder in folders
        if not any(folder.is_relative_to(path) for path in run)
    )
    assert not left_out, f"not in pyproject's testpaths, so never run: {left_out}"


def test_the_readme_names_the_folders_in_the_order_they_run() -> None:
    # pytest collects testpaths in the order they are listed.
    order = [Path(path).name for path in _testpaths()]
    readme = (ROOT / "README.md").read_text()
    summary = next(line for line in readme.splitlines() if line.startswith("make test "))
    said = sorted(order, key=lambda name: summary.find(name) if name in summary else 10**6)
    assert all(name in summary for name in order), summary
    assert said == order, f"README: {summary!r}; testpaths: {order}"
    detail = re.findall(r"`(tests/[a-z_]+)`", readme)
    assert [path for path in detail if path in _testpaths()] == _testpaths(), detail
