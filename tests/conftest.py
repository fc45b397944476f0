"""Session-wide: say whether the request path runs compiled, and refuse to test stale builds."""

from __future__ import annotations

import pytest

from modelport import compiled


def pytest_report_header() -> str:
    running = compiled.running()
    return (
        f"modelport request path: {len(running)} of {len(compiled.MODULES)} modules compiled"
        " (make setup builds them, make pure removes them)"
    )


def pytest_sessionstart(session: pytest.Session) -> None:
    stale = compiled.stale()
    if stale:
        # Python would import the old extensions: the tests would not test the sources.
        raise pytest.UsageError(
            f"compiled modules older than their sources: {', '.join(stale)}; "
            "run `make setup` to rebuild them (or `make pure` to run as plain Python)"
        )
