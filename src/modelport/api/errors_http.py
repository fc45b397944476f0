"""FastAPI exception handlers: every error leaves as ``{"error": "<actionable message>"}``."""

from __future__ import annotations

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.routing import Match

from modelport.api.errors import error_headers, status_for
from modelport.api.responses import JsonResponse
from modelport.errors import ModelportError

log = structlog.get_logger("modelport.http")


def install_error_handlers(api: FastAPI) -> None:
    async def domain_error(_request: Request, exc: Exception) -> JsonResponse:
        assert isinstance(exc, ModelportError)  # noqa: S101 - registered for this type only
        status = status_for(exc)
        log.warning("request_failed", status=status, error=exc.message)
        headers = {k.decode(): v.decode() for k, v in error_headers(exc)}
        return JsonResponse({"error": exc.message}, status_code=status, headers=headers)

    async def validation_error(_request: Request, exc: Exception) -> JsonResponse:
        assert isinstance(exc, RequestValidationError)  # noqa: S101 - registered for this type only
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', 'invalid')}"
            for err in exc.errors()
        )
        return JsonResponse({"error": f"invalid request: {problems}"}, status_code=400)

    async def http_error(request: Request, exc: Exception) -> JsonResponse:
        assert isinstance(exc, HTTPException)  # noqa: S101 - registered for this type only
        message = (
            "no such endpoint; see /docs for the API" if exc.status_code == 404 else str(exc.detail)
        )
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names the methods of the first matching route only.
            allowed = _allowed_methods(request)
            headers["Allow"] = ", ".join(allowed)
            message = f"method {request.method} is not allowed here; use {', '.join(allowed)}"
        return JsonResponse({"error": message}, status_code=exc.status_code, headers=headers)

    async def unexpected_error(_request: Request, exc: Exception) -> JsonResponse:
        log.error("unhandled_error", error_type=type(exc).__name__, exc_info=exc)
        return JsonResponse(
            {"error": "internal error; the request id in X-Request-ID identifies it in the logs"},
            status_code=500,
        )

    api.add_exception_handler(ModelportError, domain_error)
    api.add_exception_handler(RequestValidationError, validation_error)
    api.add_exception_handler(HTTPException, http_error)
    api.add_exception_handler(Exception, unexpected_error)


def _allowed_methods(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        route_methods = getattr(route, "methods", None)
        if match is not Match.NONE and route_methods:
            methods.update(route_methods)
    return sorted(methods)
