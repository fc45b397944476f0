"""A CI run cannot pass by skipping: with ``CI=true`` a test whose PostgreSQL or Redis is down
fails and says how to start it; without it the test skips with the same reason.

Each case runs pytest in a subprocess on real tests of the suite, with the services'
URLs pointing at a port where nothing listens."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from redis_process import free_port

ROOT = Path(__file__).resolve().parents[2]

#: One test of each kind that needs a service: a contract test on PostgreSQL, one on Redis,
#: and an integration test whose server keeps its registry in PostgreSQL.
NEEDS_A_SERVICE = [
    "tests/contract/test_release_store.py"
    "::test_set_alias_returns_the_previous_version_and_audits_the_move[postgres]",
    "tests/contract/test_ratelimit.py::test_a_full_bucket_allows_its_burst_then_refuses[redis]",
    "tests/integration/test_endpoints.py::test_live[postgres]",
]

SKIPPING = """
import pytest

def test_skips_without_leave():
    pytest.skip("no GPU on this machine")

@pytest.mark.ci_may_skip(reason="CI has no GPU either")
def test_skips_with_leave():
    pytest.skip("no GPU on this machine")

@pytest.mark.xfail(reason="a known bug", strict=True)
def test_known_bug():
    assert False
"""


def _pytest(args: list[str], ci: bool, cwd: Path = ROOT, **env: str) -> subprocess.Popen[str]:
    environ = {k: v for k, v in os.environ.items() if k != "CI"}
    environ.update(env)
    if ci:
        environ["CI"] = "true"
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-ra", *args],
        cwd=cwd,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    output, _ = process.communicate(timeout=100)
    return process.returncode, output


def test_a_missing_service_fails_in_ci_and_skips_with_its_reason_locally() -> None:
    port = free_port()  # nothing listens there
    postgres = f"postgresql://postgres@127.0.0.1:{port}/test"
    redis = f"redis://127.0.0.1:{port}/0"
    urls = {"MODELPORT_TEST_POSTGRES_URL": postgres, "MODELPORT_TEST_REDIS_URL": redis}
    in_ci = _pytest(NEEDS_A_SERVICE, ci=True, **urls)
    local = _pytest(NEEDS_A_SERVICE, ci=False, **urls)

    code, output = _finish(in_ci)
    assert code == 1, output
    assert "3 errors" in output and "skipped" not in output, output
    assert f"PostgreSQL at {postgres} is not reachable" in output, output
    assert f"Redis at {redis} is not reachable" in output, output
    assert "pg_ctlcluster" in output and "redis-server" in output, output
    assert "CI=true: a missing service fails the run" in output, output

    code, output = _finish(local)
    assert code == 0, output
    assert "3 skipped" in output and "error" not in output, output
    # -ra prints each skip's reason: the service, where it was looked for, how to start it.
    assert f"PostgreSQL at {postgres} is not reachable" in output, output
    assert f"Redis at {redis} is not reachable" in output, output
    assert "pg_ctlcluster" in output, output


def test_in_ci_any_skip_fails_unless_the_test_may_skip_there(tmp_path: Path) -> None:
    (tmp_path / "test_skipping.py").write_text(SKIPPING)
    # The suite's own conftest (as a plugin) and configuration, on a file outside the suite.
    args = ["-c", str(ROOT / "pyproject.toml"), "--rootdir", str(tmp_path), "-p", "conftest"]
    args.append(str(tmp_path / "test_skipping.py"))
    pythonpath = str(ROOT / "tests")
    in_ci = _pytest(args, ci=True, cwd=tmp_path, PYTHONPATH=pythonpath)
    local = _pytest(args, ci=False, cwd=tmp_path, PYTHONPATH=pythonpath)

    code, output = _finish(in_ci)
    assert code == 1, output
    assert "1 failed, 1 skipped, 1 xfailed" in output, output
    assert "skipped in CI (CI=true), which counts as a failure: no GPU on this machine" in output

    code, output = _finish(local)
    assert code == 0, output
    assert "2 skipped, 1 xfailed" in output, output
