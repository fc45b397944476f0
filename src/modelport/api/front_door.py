"""The front door: every HTTP request passes here, and the edge's rules run once.

In order, for every route: read the head (request id, sizes, the one ``Authorization``),
answer a CORS preflight, find the route and its declared ``Access`` (404 and 405 with
``Allow`` are decided here, a ``HEAD`` is a ``GET`` without its body, a trailing slash is
ignored), authenticate and check scope and rate (``Gate.admit``), cap and read the body
(``BodyBudget``, ``read_body``, ``inflate``), then hand the request to the infer fast path or
to FastAPI, whose answers get the common headers on their way out. Any error on the way is
answered by ``error_response``: one JSON shape and one set of headers for all of them.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import structlog
from fastapi import FastAPI
from starlette.routing import Match
from starlette.types import Message, Receive, Scope, Send

from modelport.api.access import Access, routes
from modelport.api.bodies import BodyBudget, BodyPermit, inflate, read_body
from modelport.api.cors import CorsPolicy
from modelport.api.errors import EndpointNotFound, MethodNotAllowed, error_response
from modelport.api.gate import Gate
from modelport.api.request_head import RequestHead, read_head
from modelport.api.responses import CLOSE, add_common_headers, log_access, send_answer
from modelport.api.v2_infer import InferEndpoint, match_infer_path
from modelport.settings import Settings
from modelport.wiring import Services

log = structlog.get_logger("modelport.http")

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class RouteAccess:
    """Every route with the ``Access`` it declares, to find before FastAPI routes a request."""

    def __init__(self, api: FastAPI) -> None:
        self._routes: list[tuple[Any, Access]] = list(routes(api))

    def find(self, scope: Scope) -> Access:
        """The access of the route ``scope`` asks for; rewrites a trailing slash away."""
        path: str = scope["path"]
        if not path.isprintable() or "\\" in path:
            raise EndpointNotFound()
        if match_infer_path(path) is not None:
            raise MethodNotAllowed(scope["method"], ["POST"])  # POST went to the fast path
        found = self._match(scope)
        if found is None and len(path) > 1 and path.endswith("/"):
            stripped = path.rstrip("/") or "/"
            found = self._match({**scope, "path": stripped})
            if found is not None:
                scope["path"] = stripped
                scope["raw_path"] = stripped.encode()
        if found is None:
            raise EndpointNotFound()
        return found

    def _match(self, scope: Scope) -> Access | None:
        allowed: set[str] = set()
        for route, access in self._routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return access
            if match is Match.PARTIAL:
                allowed.update(getattr(route, "methods", None) or ())
        if allowed:
            if "GET" in allowed:
                allowed.add("HEAD")
            raise MethodNotAllowed(scope["method"], sorted(allowed))
        return None


class FrontDoor:
    """The ASGI callable for HTTP requests once the services are built."""

    def __init__(self, api: FastAPI, services: Services, settings: Settings) -> None:
        self._api = api
        self._routes = RouteAccess(api)
        self._gate = Gate(services.authenticator, services.quotas)
        self._budget = BodyBudget(
            settings.max_inflight_body_bytes, settings.tenant_max_inflight_body_bytes
        )
        self._cors = CorsPolicy(settings.cors_origins)
        self._max = settings.max_request_bytes
        self._max_headers = settings.max_header_bytes
        self._access_log = settings.access_log
        self._infer = InferEndpoint(
            services.inference,
            self._gate,
            services.quotas,
            self._budget,
            self._cors,
            max_request_bytes=settings.max_request_bytes,
            max_header_bytes=settings.max_header_bytes,
            access_log=settings.access_log,
            experiments=services.experiments,
        )

    @property
    def budget(self) -> BodyBudget:
        return self._budget

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["method"] == "POST":
            target = match_infer_path(scope["path"])
            if target is not None:
                return self._infer(scope, receive, send, target[0], target[1])
        return self._serve(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        head = read_head(scope["headers"], self._max_headers)
        method: str = scope["method"]
        permit: BodyPermit | None = None
        unread = method in _BODY_METHODS and head.content_length != 0
        answer = _Answer(send, head, self._cors, method, scope["path"], self._access_log)
        structlog.contextvars.bind_contextvars(request_id=head.request_id.decode())
        try:
            if head.problem is not None:
                raise head.problem
            if method == "OPTIONS" and head.origin and self._cors.enabled:
                await self._preflight(send, head)
                return
            if method == "HEAD":
                # FastAPI routes GET only; the server still knows it answers a HEAD.
                scope = {**scope, "method": "GET"}
            access = self._routes.find(scope)
            caller = await self._gate.admit(head, access)
            state = scope.setdefault("state", {})
            state["request_id"] = head.request_id.decode()
            if caller is not None:
                state["principal"] = caller
            if method in _BODY_METHODS:
                limit, reason = self._limit(access, caller.quotas.max_body_bytes if caller else 0)
                tenant = None if caller is None else caller.tenant
                permit = self._budget.permit(tenant, limit, reason, head.content_length)
                body = await read_body(receive, permit, self._budget)
                if body is None:
                    return  # the client went away, or was cut off for sending too slowly
                unread = False
                if head.encoding:
                    body = inflate(body, head.encoding, permit)
                receive = _replay(body, receive)
            await self._api(scope, receive, answer.send)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an answer
            await answer.error(exc, close=unread)
        finally:
            if permit is not None:
                self._budget.release(permit)
            structlog.contextvars.unbind_contextvars("request_id")

    def _limit(self, access: Access, tenant_max: int) -> tuple[int, str]:
        limit, reason = self._max, "MODELPORT_MAX_REQUEST_BYTES"
        if access.max_body_bytes < limit:
            limit, reason = access.max_body_bytes, "this endpoint's limit"
        if tenant_max and tenant_max < limit:
            limit, reason = tenant_max, "the tenant's max_body_bytes"
        return limit, reason

    async def _preflight(self, send: Send, head: RequestHead) -> None:
        headers: list[tuple[bytes, bytes]] = []
        add_common_headers(headers, head.request_id, self._cors, b"")
        headers.extend(self._cors.preflight_headers(head.origin))
        status = 204 if self._cors.allows(head.origin) else 403
        await send_answer(send, status, headers, b"")


class _Answer:
    """The response side of one request: FastAPI's answer with the common headers added, or
    an error answer when something failed before (or instead of) FastAPI answering."""

    __slots__ = ("_access_log", "_cors", "_head", "_method", "_path", "_send", "started")

    def __init__(
        self,
        send: Send,
        head: RequestHead,
        cors: CorsPolicy,
        method: str,
        path: str,
        access_log: bool,
    ) -> None:
        self._send = send
        self._head = head
        self._cors = cors
        self._method = method
        self._path = path
        self._access_log = access_log
        self.started = False

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            headers = list(message.get("headers", []))
            add_common_headers(headers, self._head.request_id, self._cors, self._head.origin)
            message["headers"] = headers
            if self._access_log:
                log_access(self._head.request_id, self._method, self._path, message["status"])
        elif message["type"] == "http.response.body" and self._method == "HEAD":
            message = {**message, "body": b""}
        await self._send(message)

    async def error(self, exc: BaseException, *, close: bool = False) -> None:
        """Answer ``exc``; ``close``: the body was not read, so the connection is closed."""
        if self.started:
            return  # FastAPI already answered (and logged it); nothing more can be sent
        status, headers, body = error_response(exc)
        if status == 500:
            log.error("request_crashed", path=self._path, exc_info=exc)
        add_common_headers(headers, self._head.request_id, self._cors, self._head.origin)
        if close:
            headers.append(CLOSE)
        self.started = True
        await send_answer(self._send, status, headers, body, head=self._method == "HEAD")
        if self._access_log:
            log_access(self._head.request_id, self._method, self._path, status)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the body the door read, then the connection's own messages
    (a disconnect)."""
    pending = True

    async def replayed() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
