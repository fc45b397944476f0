from __future__ import annotations

import asyncio

import typer
import uvicorn

from modelport.app import create_app
from modelport.settings import Settings
from modelport.stores.sql import migrate


def run_server(settings: Settings) -> None:
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=30,
    )


def serve(
    host: str = typer.Option(None, help="Interface to bind (MODELPORT_HOST)."),
    port: int = typer.Option(None, help="Port to bind (MODELPORT_PORT)."),
) -> None:
    """Serve every registered model over HTTP."""
    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    run_server(Settings(**overrides))


def migrate_command() -> None:
    """Create or upgrade the registry schema in MODELPORT_DATABASE_URL."""
    asyncio.run(migrate(Settings().database_url.get_secret_value()))
    typer.echo("registry schema is up to date")
