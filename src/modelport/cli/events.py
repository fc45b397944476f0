"""``modelport events …``: the behavioural events a tenant sent, and their dead letters."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Annotated, Any, TextIO

import orjson
import typer
from rich.console import Console

from modelport.cli.dlq import dlq_app
from modelport.cli.models import TenantOption, run_with_services
from modelport.settings import Settings

events_app = typer.Typer(help="Behavioural events and their pipeline.", no_args_is_help=True)
events_app.add_typer(dlq_app, name="dlq")
notes = Console(stderr=True)


def _when(value: str | None, default: dt.datetime, option: str) -> dt.datetime:
    if value is None:
        return default
    try:
        parsed = dt.datetime.fromisoformat(value.upper())
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not an ISO-8601 time (e.g. 2024-05-01T12:00:00Z)", param_hint=option
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


@events_app.command("export")
def export(
    tenant: TenantOption = "default",
    since: Annotated[
        str | None, typer.Option(help="Events at or after this time (ISO-8601; default: all).")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Events before this time (ISO-8601; default: no end).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write here instead of standard output.")] = None,
) -> None:
    """Write a tenant's retained events as NDJSON (one event per line, oldest first), by the
    time they happened: for offline evaluation and training."""
    start = _when(since, dt.datetime(1970, 1, 1, tzinfo=dt.UTC), "--since")
    end = _when(until, dt.datetime.now(dt.UTC) + dt.timedelta(days=1), "--until")

    async def action(services: Any) -> int:
        written = 0
        sink: TextIO = sys.stdout if out is None else out.open("w", encoding="utf-8")
        try:
            async for event in services.events.export(tenant, start, end):
                sink.write(orjson.dumps(event).decode() + "\n")
                written += 1
        finally:
            if out is not None:
                sink.close()
        return written

    written = run_with_services(Settings(), action)
    notes.print(f"exported {written} events of tenant {tenant}")
