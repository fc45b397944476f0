"""Which consumers a worker runs, and where: ``--consumer module:factory`` and the in-process
default of the embedded server."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from pydantic import SecretStr
from typer.testing import CliRunner

from modelport.cli import app
from modelport.settings import Settings
from modelport.stores.streams import Message
from modelport.workers import load_consumers, runs_in_process


class Echo:
    topic = "events"
    group = "echo"

    async def handle(self, messages: list[Message]) -> None:
        return None


def one(services: object) -> Echo:
    return Echo()


def two(services: object) -> list[Echo]:
    return [Echo(), Echo()]


def not_a_consumer(services: object) -> object:
    return object()


NOT_CALLABLE = 3


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg, arg-type]


def test_a_factory_gives_one_consumer_or_several() -> None:
    assert [type(c) for c in load_consumers(f"{__name__}:one", object())] == [Echo]  # type: ignore[arg-type]
    assert len(load_consumers(f"{__name__}:two", object())) == 2  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        (f"{__name__}", "module:function"),
        (f"{__name__}:missing", "no callable 'missing'"),
        (f"{__name__}:NOT_CALLABLE", "no callable 'NOT_CALLABLE'"),
        (f"{__name__}:not_a_consumer", "not a consumer"),
    ],
)
def test_a_bad_factory_is_refused_naming_what_is_wrong(spec: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        load_consumers(spec, object())  # type: ignore[arg-type]


def test_a_missing_module_is_an_import_error() -> None:
    with pytest.raises(ImportError):
        load_consumers("modelport_no_such_module:make", object())  # type: ignore[arg-type]


def test_the_server_applies_events_itself_only_without_redis_unless_told() -> None:
    redis = SecretStr("redis://127.0.0.1:6379/0")
    assert runs_in_process(settings()) is True
    assert runs_in_process(settings(redis_url=redis)) is False
    assert runs_in_process(settings(redis_url=redis, workers_in_process=True)) is True
    assert runs_in_process(settings(workers_in_process=False)) is False


@pytest.fixture
def logging_restored() -> Iterator[None]:
    """``modelport worker`` points logging at the CLI runner's output, which is closed once the
    command returns: the tests after this one must not log into it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("logging_restored")
def test_modelport_worker_refuses_a_consumer_it_cannot_load(tmp_path: Path) -> None:
    env = {
        "MODELPORT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}",
        "MODELPORT_LOG_LEVEL": "WARNING",
    }
    result = CliRunner().invoke(
        app, ["worker", "--no-builtin", "--consumer", f"{__name__}:missing"], env=env
    )
    assert result.exit_code == 2
    assert "no callable 'missing'" in result.output
    result = CliRunner().invoke(app, ["worker", "--no-builtin"], env=env)
    assert result.exit_code == 2
    assert "no consumers to run" in result.output
