"""``modelport worker``: run the stream consumers until SIGTERM or SIGINT.

Start any number, on any machine, against the same Redis and database: the consumer groups
share the messages out, and the messages a killed worker left pending are taken over by the
others after ``MODELPORT_WORKER_CLAIM_IDLE_S``.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated

import structlog
import typer
from prometheus_client import start_http_server

from modelport.observability.logging import configure_logging
from modelport.settings import Settings
from modelport.wiring import build_services
from modelport.workers import builtin_consumers, load_consumers, worker_name, worker_runtime

log = structlog.get_logger("modelport.worker")


def worker(
    consumer: Annotated[
        list[str] | None,
        typer.Option(
            "--consumer",
            help="Also run the consumers module:factory makes (factory(services) returns one "
            "or a list); repeatable.",
        ),
    ] = None,
    builtin: Annotated[
        bool, typer.Option(help="Run modelport's own consumers (features, catalog).")
    ] = True,
    name: Annotated[
        str | None,
        typer.Option(help="This worker's name in its consumer groups (default: host-pid)."),
    ] = None,
) -> None:
    """Apply the event and catalog streams: online features, the search index's feed."""
    settings = Settings()
    configure_logging(settings.log_level)
    asyncio.run(_run(settings, consumer or [], builtin=builtin, name=name or worker_name()))


async def _run(settings: Settings, specs: list[str], *, builtin: bool, name: str) -> None:
    services = await build_services(settings)
    try:
        consumers = builtin_consumers(services) if builtin else []
        for spec in specs:
            try:
                consumers.extend(load_consumers(spec, services))
            except (ImportError, ValueError) as exc:
                raise typer.BadParameter(str(exc), param_hint="--consumer") from None
        if not consumers:
            raise typer.BadParameter("no consumers to run", param_hint="--consumer")
        runtime = worker_runtime(services.stream, consumers, services, name)
        if settings.worker_metrics_port:
            # On MODELPORT_HOST (loopback by default): unauthenticated, unlike the server's.
            start_http_server(
                settings.worker_metrics_port,
                addr=settings.host,
                registry=services.metrics.registry,
            )
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, runtime.stop)
        await runtime.run()
    finally:
        await services.close()
