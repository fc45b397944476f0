"""FastAPI's exception handlers: what a route raises leaves through ``error_response``.

Routes raise domain errors; FastAPI's own (a body that does not validate, an HTTP error from
Starlette) are turned into the matching domain error first, so every error answer has the one
shape and its status is chosen in ``api.errors`` alone.
"""

from __future__ import annotations

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from modelport.api.errors import EndpointNotFound, error_response
from modelport.errors import InvalidInput, ModelportError

log = structlog.get_logger("modelport.http")


def install_error_handlers(api: FastAPI) -> None:
    api.add_exception_handler(ModelportError, _domain_error)
    api.add_exception_handler(RequestValidationError, _validation_error)
    api.add_exception_handler(HTTPException, _http_error)
    api.add_exception_handler(Exception, _unexpected_error)


def _respond(exc: BaseException) -> Response:
    status, headers, body = error_response(exc)
    response = Response(body, status_code=status)
    response.raw_headers.extend(h for h in headers if h[0] != b"content-type")
    response.headers["content-type"] = "application/json"
    return response


async def _domain_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ModelportError)  # noqa: S101 - registered for this type only
    log.warning("request_failed", error=exc.message)
    return _respond(exc)


async def _validation_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)  # noqa: S101 - registered for this type only
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', 'invalid')}"
        for err in exc.errors()
    )
    return _respond(InvalidInput(f"invalid request: {problems}"))


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)  # noqa: S101 - registered for this type only
    # The front door answers unknown paths and methods itself; what reaches here is
    # Starlette's own 404 and the odd 400 of a body it could not read.
    if exc.status_code == 404:
        return _respond(EndpointNotFound())
    return _respond(InvalidInput(str(exc.detail)))


async def _unexpected_error(_request: Request, exc: Exception) -> Response:
    log.error("unhandled_error", error_type=type(exc).__name__, exc_info=exc)
    return _respond(exc)
