"""The composition root: ``create_app(settings)`` builds every store and service in the lifespan.

The returned ASGI app sends OIP infer calls to the bare ``InferEndpoint`` and everything else to
FastAPI. It also gives every HTTP request a request id (``X-Request-ID``, kept when the client
sends a sane one), bound into the log context and returned as a response header.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.exceptions import HTTPException
from starlette.types import Message, Receive, Scope, Send

from modelport import __version__, compiled
from modelport.api.errors import error_body, error_headers, status_for
from modelport.api.request_id import new_request_id, sane_request_id
from modelport.api.v2_infer import InferEndpoint, match_infer_path
from modelport.container import Services, build_services
from modelport.errors import ModelportError
from modelport.observability.logging import configure_logging
from modelport.settings import Settings

log = structlog.get_logger("modelport.app")

#: Net allocations of tracked objects between two young-generation collections.
GC_THRESHOLD = 10_000


class ModelportApp:
    """ASGI entry point; see the module docstring."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.api = _fastapi(self)
        self.services: Services | None = None
        self._infer: InferEndpoint | None = None
        self._max = settings.max_request_bytes
        self._max_headers = settings.max_header_bytes

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """The ASGI 3 callable: returns the coroutine that serves the request.

        Not a coroutine itself, so an infer call suspends through one frame fewer; servers
        must therefore be told the interface (``uvicorn.run(..., interface="asgi3")``)."""
        if scope["type"] == "http" and scope["method"] == "POST" and self._infer is not None:
            target = match_infer_path(scope["path"])
            if target is not None:
                # The hot path reads the headers once itself (request id, size, auth, ...) and
                # logs its request id explicitly instead of binding contextvars.
                return self._infer(scope, receive, send, target[0], target[1])
        return self._serve(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Everything but the OIP infer calls: FastAPI, behind the request id, the size
        limits and authentication."""
        if scope["type"] != "http":
            await self.api(scope, receive, send)
            return
        request_id = _request_id(scope)
        if _header_bytes(scope) > self._max_headers:
            await _send_error(send, request_id, 431, "request headers are too large")
            return
        structlog.contextvars.bind_contextvars(request_id=request_id.decode())
        try:
            if _content_length(scope) > self._max:
                await _send_error(send, request_id, 413, _too_large_message(self._max))
                return
            if self.services is not None and not _public(scope):
                # Authenticate before FastAPI reads and parses a body: an anonymous caller
                # gets its 401 without the server reading a byte of what it sent.
                try:
                    caller = await self.services.authenticator.authenticate(
                        _header(scope, b"authorization")
                    )
                except ModelportError as exc:
                    await _send_error(
                        send, request_id, status_for(exc), exc.message, error_headers(exc)
                    )
                    return
                scope.setdefault("state", {})["principal"] = caller
            await self.api(
                scope,
                _limited(receive, self._max),
                _with_request_id(send, request_id, self.settings.access_log),
            )
        finally:
            structlog.contextvars.unbind_contextvars("request_id")

    @asynccontextmanager
    async def lifespan(self, api: FastAPI) -> AsyncIterator[None]:
        configure_logging(self.settings.log_level)
        services = await build_services(self.settings, server=True)
        self.services = services
        api.state.services = services
        self._infer = InferEndpoint(
            services.inference,
            services.authenticator,
            services.quotas,
            self.settings.max_request_bytes,
            self.settings.access_log,
            max_header_bytes=self.settings.max_header_bytes,
            cors_origins=frozenset(self.settings.cors_origins),
        )
        try:
            if self.settings.load_models_on_start:
                await services.start_release_workers()
                await services.repository.load_on_start()
            elif services.guard is not None:
                services.guard.start()
            # Everything built so far lives as long as the process: moving it out of the
            # collector's reach keeps full collections short (p99 at -c64 fell ~3x with it).
            gc.collect()
            gc.freeze()
            # Requests waiting for their batch keep a few thousand young objects alive, so
            # with the default threshold (700) the collector ran ~200 times a second under
            # load (3 % of the event loop) to find almost nothing: the request path makes
            # no reference cycles. Above the in-flight set's size it runs only for real
            # cyclic garbage.
            gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
            log.info(
                "server_started", version=__version__, compiled_modules=len(compiled.running())
            )
            stale = compiled.stale()
            if stale:
                log.warning(
                    "compiled_modules_stale",
                    modules=stale,
                    detail="these run as built before their sources changed; run make setup",
                )
            yield
        finally:
            self._infer = None
            await services.close()
            log.info("server_stopped")


def create_app(settings: Settings | None = None) -> ModelportApp:
    return ModelportApp(settings or Settings())


def _fastapi(app: ModelportApp) -> FastAPI:
    from modelport.api.errors_http import install_error_handlers
    from modelport.api.metrics_endpoint import router as metrics_router
    from modelport.api.v1_features import router as features_router
    from modelport.api.v1_models import router as models_router
    from modelport.api.v1_tenants import router as tenants_router
    from modelport.api.v2_endpoints import router as v2_router

    api = FastAPI(
        title="modelport",
        version=__version__,
        description="Open Inference Protocol v2 model server with a registry and dynamic batching.",
        lifespan=app.lifespan,
    )
    install_error_handlers(api)
    if app.settings.cors_origins:
        api.add_middleware(
            CORSMiddleware,
            allow_origins=app.settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "Inference-Header-Content-Length",
                "X-Model-Alias",
                "X-Routing-Key",
            ],
            expose_headers=[
                "X-Request-ID",
                "X-Model-Version",
                "X-Cache",
                "Inference-Header-Content-Length",
            ],
        )
    api.include_router(v2_router)
    api.include_router(metrics_router)
    api.include_router(tenants_router)
    api.include_router(models_router)
    api.include_router(features_router)
    return api


def _request_id(scope: Scope) -> bytes:
    for key, value in scope["headers"]:
        if key == b"x-request-id":
            return sane_request_id(value) or new_request_id()
    return new_request_id()


#: Sent with every response of the API and its documentation pages.
SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)


def _with_request_id(send: Send, request_id: bytes, access_log: bool) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [
                *message.get("headers", []),
                (b"x-request-id", request_id),
                *SECURITY_HEADERS,
            ]
            if access_log:
                log.info("request", status=message["status"])
        await send(message)

    return wrapped


def _limited(receive: Receive, limit: int) -> Receive:
    """Count body bytes as they arrive: a chunked body has no Content-Length to check."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise HTTPException(413, _too_large_message(limit))
        return message

    return wrapped


def _content_length(scope: Scope) -> int:
    value = _header(scope, b"content-length")
    return int(value) if value and value.isdigit() else 0


def _header_bytes(scope: Scope) -> int:
    return sum(len(k) + len(v) for k, v in scope["headers"])


#: Routes anyone may call: probes, server metadata and the API documentation.
PUBLIC_PATHS = frozenset(
    {"/v2", "/v2/health/live", "/v2/health/ready", "/openapi.json", "/docs", "/redoc",
     "/docs/oauth2-redirect"}
)  # fmt: skip


def _public(scope: Scope) -> bool:
    return (
        scope["method"] == "OPTIONS"
        or scope["path"].rstrip("/") in PUBLIC_PATHS
        or (scope["path"] == "/")
    )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


async def _send_error(
    send: Send,
    request_id: bytes,
    status: int,
    message: str,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = error_body(message)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id),
        *SECURITY_HEADERS,
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _too_large_message(limit: int) -> str:
    return f"request body exceeds the limit of {limit} bytes (MODELPORT_MAX_REQUEST_BYTES)"
