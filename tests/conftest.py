"""Session-wide: say whether the request path runs compiled, refuse to test stale builds, and in
CI (``CI=true``) count a skipped test as a failure: a CI run must not pass by skipping the
tests whose service or package is missing (``required_services`` writes their messages)."""

from __future__ import annotations

from collections.abc import Generator

import pytest

from modelport import compiled_modules
from required_services import in_ci

_ALLOW = "mark the test @pytest.mark.ci_may_skip(reason=...) if skipping is right in CI too"


def pytest_report_header() -> str:
    running = compiled_modules.running()
    return (
        f"modelport request path: {len(running)} of {len(compiled_modules.MODULES)} modules "
        "compiled"
        " (make setup builds them, make pure removes them)"
    )


def pytest_sessionstart(session: pytest.Session) -> None:
    stale = compiled_modules.stale()
    if stale:
        # Python would import the old extensions: the tests would not test the sources.
        raise pytest.UsageError(
            f"compiled modules older than their sources: {', '.join(stale)}; "
            "run `make setup` to rebuild them (or `make pure` to run as plain Python)"
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if (
        report.skipped
        and not hasattr(report, "wasxfail")
        and in_ci()
        and item.get_closest_marker("ci_may_skip") is None
    ):
        report.outcome = "failed"
        report.longrepr = (
            f"skipped in CI (CI=true), which counts as a failure: {_reason(report)}; {_ALLOW}"
        )
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    report = yield
    if report.skipped and in_ci():
        report.outcome = "failed"
        report.longrepr = (
            f"module skipped in CI (CI=true), which counts as a failure: {_reason(report)}"
        )
    return report


def _reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple):  # (path, line, "Skipped: reason")
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)
