from __future__ import annotations

import asyncio
from typing import Annotated, Any

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
        # ModelportApp.__call__ returns a coroutine rather than being one, which uvicorn's
        # interface detection would take for ASGI 2.
        interface="asgi3",
        access_log=False,
        # No "server: uvicorn": naming the software and its stack helps only an attacker.
        server_header=False,
        # modelport reads no client address, so X-Forwarded-* parsing would be wasted work.
        proxy_headers=False,
        log_config=None,
        timeout_graceful_shutdown=30,
    )


def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind (MODELPORT_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind (MODELPORT_PORT).")] = None,
) -> None:
    """Serve every registered model over HTTP."""
    overrides: dict[str, Any] = {
        k: v for k, v in {"host": host, "port": port}.items() if v is not None
    }
    run_server(Settings(**overrides))


def migrate_command() -> None:
    """Create or upgrade the registry schema in MODELPORT_DATABASE_URL."""
    asyncio.run(migrate(Settings().database_url.get_secret_value()))
    typer.echo("registry schema is up to date")
