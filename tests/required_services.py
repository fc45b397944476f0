"""What a test does when a real service it needs (PostgreSQL, Redis) is down.

Locally it skips, and the reason names the service, where it was looked for and how to start
it. In CI (``CI=true``: ``.ci/run`` sets it, as CI providers do) it fails with the same message:
a run that skipped the real backends would pass without having tested them. ``tests/conftest.py``
turns any other skip into a failure in CI too, unless the test is marked ``ci_may_skip``.
"""

from __future__ import annotations

import os
import re
from typing import NoReturn

import pytest

#: How to bring each service up on a development machine (``.ci/run`` starts both).
HOW_TO_START = {
    "PostgreSQL": (
        "start it with `pg_ctlcluster <version> main start` (or run `.ci/run`, which starts "
        "PostgreSQL and Redis), or point MODELPORT_TEST_POSTGRES_URL at one"
    ),
    "Redis": (
        "start it with `redis-server --daemonize yes --save '' --appendonly no` (or run "
        "`.ci/run`, which starts PostgreSQL and Redis), or point MODELPORT_TEST_REDIS_URL at one"
    ),
    "redis-server": "install it with `apt-get install -y redis-server`",
}


def in_ci() -> bool:
    """True when the environment says this is a CI run (``CI=true``, ``CI=1``)."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def without_password(url: str) -> str:
    """``url`` with any password replaced, fit for a test report."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def service_missing(service: str, url: str, error: object) -> NoReturn:
    """Skip the test (locally) or fail it (in CI): ``service`` at ``url`` did not answer."""
    message = (
        f"{service} at {without_password(url)} is not reachable ({error}); " + HOW_TO_START[service]
    )
    if in_ci():
        _fail(f"{message}. CI=true: a missing service fails the run instead of skipping its tests")
    _skip(message)


def program_missing(program: str) -> NoReturn:
    """Skip the test (locally) or fail it (in CI): ``program`` is not installed."""
    message = f"{program} is not installed; {HOW_TO_START[program]}"
    if in_ci():
        _fail(f"{message}. CI=true: a missing program fails the run")
    _skip(message)


# Raised ``from None``: called while handling the connection error, whose traceback would
# only bury the message.


def _fail(message: str) -> NoReturn:
    raise pytest.fail.Exception(message, pytrace=False) from None


def _skip(message: str) -> NoReturn:
    raise pytest.skip.Exception(message) from None
