from __future__ import annotations

import asyncio
import gc
from typing import Annotated, Any

import typer
import uvicorn

from modelport.app import create_app
from modelport.cli.http_protocol import http_protocol
from modelport.settings import Settings
from modelport.stores.sql import migrate

#: Net allocations of tracked objects between two young-generation collections.
GC_THRESHOLD = 10_000


def tune_gc() -> None:
    """Process-wide garbage collector settings for a server, once its models are loaded."""
    # Everything built so far lives as long as the process: moving it out of the
    # collector's reach keeps full collections short (p99 at -c64 fell ~3x with it).
    gc.collect()
    gc.freeze()
    # Requests waiting for their batch keep a few thousand young objects alive, so with the
    # default threshold (700) the collector ran ~200 times a second under load (3 % of the
    # event loop) to find almost nothing: the request path makes no reference cycles. Above
    # the in-flight set's size it runs only for real cyclic garbage.
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])


def run_server(settings: Settings) -> None:
    uvicorn.run(
        create_app(settings, on_started=tune_gc),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        # modelport's compiled HTTP/1.1 protocol on httptools, slow senders cut off
        # (MODELPORT_HEADER_TIMEOUT_S, _BODY_TIMEOUT_S): cli/http_protocol.py.
        http=http_protocol(settings.header_timeout_s, settings.body_timeout_s),
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
