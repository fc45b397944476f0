"""The composition root: ``create_app(settings)`` builds every store and service in the lifespan.

Every HTTP request goes through the front door (``api.front_door``), where the edge's rules
run once; it hands OIP infer calls to the bare ``InferEndpoint`` and everything else to
FastAPI. Process-wide tuning (the garbage collector) is the server command's business
(``modelport serve``), not the app's: the app runs the same under any ASGI server, e.g.
``uvicorn --factory modelport.app:create_app``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from modelport import __version__, compiled_modules
from modelport.api.errors import error_response
from modelport.api.front_door import FrontDoor
from modelport.api.responses import send_answer
from modelport.errors import Unavailable
from modelport.observability.logging import configure_logging
from modelport.settings import Settings
from modelport.wiring import build_services
from modelport.workers import in_process_runtime

log = structlog.get_logger("modelport.app")


class ModelportApp:
    """ASGI entry point; see the module docstring."""

    def __init__(self, settings: Settings, on_started: Callable[[], None] | None = None) -> None:
        self.settings = settings
        self.api = _fastapi(self)
        self.door: FrontDoor | None = None
        self._on_started = on_started

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """The ASGI 3 callable: returns the coroutine that serves the request.

        Not a coroutine itself, so an infer call suspends through one frame fewer; it is
        marked as one (below) so that servers detect ASGI 3 by themselves."""
        if scope["type"] == "http" and self.door is not None:
            return self.door(scope, receive, send)
        if scope["type"] == "http":
            return _not_started(send)
        return self.api(scope, receive, send)

    @asynccontextmanager
    async def lifespan(self, api: FastAPI) -> AsyncIterator[None]:
        configure_logging(self.settings.log_level)
        services = await build_services(self.settings, server=True)
        api.state.services = services
        # The embedded default applies its stream here; with Redis, `modelport worker` does.
        workers = in_process_runtime(services)
        try:
            self.door = FrontDoor(api, services, self.settings)
            services.start_pipeline()
            if workers is not None:
                workers.start()
            if self.settings.load_models_on_start:
                await services.start_release_workers()
                await services.repository.load_on_start()
            elif services.guard is not None:
                services.guard.start()
            # After the models: the index embeds through them (and waits for them anyway).
            services.start_search()
            if self._on_started is not None:
                self._on_started()
            log.info(
                "server_started",
                version=__version__,
                compiled_modules=len(compiled_modules.running()),
            )
            stale = compiled_modules.stale()
            if stale:
                log.warning(
                    "compiled_modules_stale",
                    modules=stale,
                    detail="these run as built before their sources changed; run make setup",
                )
            yield
        finally:
            self.door = None
            if workers is not None:
                await workers.close()  # the batches in hand finish; the rest stay pending
            await services.close()
            log.info("server_stopped")


# ASGI servers (uvicorn's interface detection) look for a coroutine function; ``__call__``
# returns its coroutine instead of being one, which serves the same and saves a frame.
ModelportApp.__call__._is_coroutine = asyncio.coroutines._is_coroutine  # type: ignore[attr-defined]


def create_app(
    settings: Settings | None = None, *, on_started: Callable[[], None] | None = None
) -> ModelportApp:
    """The app for ``settings`` (read from the environment when None); ``on_started`` runs once
    the models are loaded, before the first request."""
    return ModelportApp(settings or Settings(), on_started)


async def _not_started(send: Send) -> None:
    status, headers, body = error_response(Unavailable("the server is starting; retry shortly"))
    await send_answer(send, status, headers, body)


def _fastapi(app: ModelportApp) -> FastAPI:
    from modelport.api.docs_ui import install_docs
    from modelport.api.errors_http import install_error_handlers
    from modelport.api.metrics_endpoint import router as metrics_router
    from modelport.api.openapi import install_openapi
    from modelport.api.v1_catalog import router as catalog_router
    from modelport.api.v1_events import router as events_router
    from modelport.api.v1_experiments import router as experiments_router
    from modelport.api.v1_features import router as features_router
    from modelport.api.v1_models import router as models_router
    from modelport.api.v1_search import router as search_router
    from modelport.api.v1_tenants import router as tenants_router
    from modelport.api.v2_endpoints import router as v2_router

    api = FastAPI(
        title="modelport",
        version=__version__,
        description="Open Inference Protocol v2 model server with a registry and dynamic batching.",
        lifespan=app.lifespan,
        docs_url=None,
        redoc_url=None,
    )
    # The front door ignores a trailing slash itself; Starlette's redirect would build its
    # Location from the client's Host header.
    api.router.redirect_slashes = False
    install_error_handlers(api)
    api.include_router(v2_router)
    api.include_router(metrics_router)
    api.include_router(tenants_router)
    api.include_router(models_router)
    api.include_router(features_router)
    api.include_router(events_router)
    api.include_router(catalog_router)
    api.include_router(experiments_router)
    api.include_router(search_router)
    install_docs(api)
    install_openapi(api)
    return api
