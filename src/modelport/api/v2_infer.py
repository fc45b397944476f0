"""``POST /v2/models/{m}[/versions/{v}]/infer`` as a bare ASGI handler.

This is the hot path, so it skips the framework's routing, dependency injection and response
classes: it reads the body, calls ``InferenceService.infer`` and writes bytes. Two request
headers steer routing: ``X-Model-Alias`` pins an alias (like ``{model}@{alias}`` in the path)
and ``X-Routing-Key`` gives the sticky routing key. Everything else
(metadata, health, repository, metrics) goes through FastAPI. The route is also declared in the
FastAPI app so it appears in the OpenAPI schema.
"""

from __future__ import annotations

import zlib

import structlog
from starlette.types import Message, Receive, Scope, Send

from modelport.api.errors import error_body, error_headers, status_for
from modelport.api.request_id import new_request_id, sane_request_id
from modelport.errors import HeadersTooLarge, InvalidInput, ModelportError, PayloadTooLarge
from modelport.services.inference import InferenceService
from modelport.services.quotas import QuotaGate
from modelport.services.tenancy import Authenticator
from modelport.serving.codec import decode_document, encode_response, parse_body

log = structlog.get_logger("modelport.http")

_JSON = b"application/json"
_OCTET = b"application/octet-stream"
_NOSNIFF = (b"x-content-type-options", b"nosniff")
_EXPOSED = b"X-Request-ID, X-Model-Version, X-Cache, Inference-Header-Content-Length"


def match_infer_path(path: str) -> tuple[str, str | None] | None:
    """``(model, version)`` when ``path`` is an OIP infer URL, else None."""
    if not path.startswith("/v2/models/") or not path.endswith("/infer"):
        return None
    parts = path.split("/")
    if len(parts) == 5 and parts[3]:
        return parts[3], None
    if len(parts) == 7 and parts[4] == "versions" and parts[3] and parts[5]:
        return parts[3], parts[5]
    return None


class InferEndpoint:
    def __init__(
        self,
        inference: InferenceService,
        authenticator: Authenticator,
        quotas: QuotaGate,
        max_request_bytes: int,
        access_log: bool,
        *,
        max_header_bytes: int = 16384,
        cors_origins: frozenset[str] = frozenset(),
    ) -> None:
        self._max_headers = max_header_bytes
        self._inference = inference
        self._auth = authenticator
        self._quotas = quotas
        self._max = max_request_bytes
        self._access_log = access_log
        self._cors = cors_origins

    async def __call__(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        model: str,
        version: str | None,
    ) -> None:
        header_length: int | None = None
        content_length: int | None = None
        encoding = b""
        authorization: str | None = None
        origin = b""
        alias: str | None = None
        routing_key: str | None = None
        request_id: bytes | None = None
        header_bytes = 0
        # One pass over the headers: everything the request path reads from them.
        for key, value in scope["headers"]:
            header_bytes += len(key) + len(value)
            if key == b"authorization":
                authorization = value.decode("latin-1")
            elif key == b"content-length":
                content_length = int(value) if value.isdigit() else None
            elif key == b"content-type" or key == b"host":
                pass
            elif key == b"x-request-id":
                request_id = sane_request_id(value)
            elif key == b"inference-header-content-length":
                header_length = int(value) if value.isdigit() else -1
            elif key == b"content-encoding":
                encoding = value.lower()
            elif key == b"origin":
                origin = value
            elif key == b"x-model-alias":
                alias = value.decode("latin-1")
            elif key == b"x-routing-key":
                routing_key = value.decode("latin-1")
        if request_id is None:
            request_id = new_request_id()
        status = 200
        headers: list[tuple[bytes, bytes]] = []
        try:
            if header_bytes > self._max_headers:
                raise HeadersTooLarge("request headers are too large")
            caller = self._auth.cached(authorization)
            if caller is None:
                caller = await self._auth.authenticate(authorization)
            tenant = caller.tenant_for("infer")
            quotas = caller.quotas
            if quotas.rate_limit_rps > 0:
                await self._quotas.check_rate(tenant, quotas)
            if content_length is not None:
                if content_length > self._max:
                    raise _too_large(content_length, self._max)
                self._quotas.check_body(tenant, quotas, content_length)
            self._quotas.enter(tenant, quotas)
            try:
                message = await receive()
                if message["type"] == "http.request" and not message.get("more_body", False):
                    body = message.get("body", b"")
                    if len(body) > self._max:
                        raise _too_large(len(body), self._max)
                else:
                    more = await _read_body(message, receive, self._max)
                    if more is None:
                        return  # the client went away
                    body = more
                if encoding and encoding != b"identity":
                    body = _decompress(body, encoding, self._max)
                if quotas.max_body_bytes:
                    self._quotas.check_body(tenant, quotas, len(body))
                doc, binary = parse_body(body, header_length)
                if quotas.max_rows:
                    request = decode_document(doc, binary)
                    rows = max((t.shape[0] if t.shape else 1) for t in request.inputs)
                    self._quotas.check_rows(tenant, quotas, rows)
                    result = await self._inference.infer(
                        tenant,
                        model,
                        version,
                        request,
                        alias=alias or None,
                        routing_key=routing_key,
                    )
                else:
                    result = await self._inference.infer_document(
                        tenant,
                        model,
                        version,
                        doc,
                        binary,
                        alias=alias or None,
                        routing_key=routing_key,
                    )
            finally:
                self._quotas.leave(tenant)
            payload, json_length = encode_response(
                result.model, result.version, result.outputs, result.id
            )
            if json_length is None:
                content_type = _JSON
            else:
                content_type = _OCTET
                headers.append((b"inference-header-content-length", str(json_length).encode()))
            headers.append((b"x-model-version", result.version.encode()))
            if result.cache is not None:
                headers.append((b"x-cache", result.cache.encode()))
        except ModelportError as exc:
            status = status_for(exc)
            payload = error_body(exc.message)
            content_type = _JSON
            headers = error_headers(exc)
            log.warning(
                "infer_failed",
                request_id=request_id.decode(),
                model=model,
                version=version,
                status=status,
                error=exc.message,
            )
        except Exception as exc:
            status = 500
            payload = error_body(
                "internal error; the request id in X-Request-ID identifies it in the logs"
            )
            content_type = _JSON
            headers = []
            log.error(
                "infer_crashed",
                request_id=request_id.decode(),
                model=model,
                version=version,
                exc_info=exc,
            )
        headers.append((b"content-type", content_type))
        headers.append((b"content-length", str(len(payload)).encode()))
        headers.append((b"x-request-id", request_id))
        headers.append(_NOSNIFF)
        if origin and self._cors and origin.decode("latin-1") in self._cors:
            headers.append((b"access-control-allow-origin", origin))
            headers.append((b"access-control-expose-headers", _EXPOSED))
            headers.append((b"vary", b"Origin"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        if self._access_log:
            log.info(
                "request",
                request_id=request_id.decode(),
                method="POST",
                path=scope["path"],
                status=status,
            )


async def _read_body(first: Message, receive: Receive, limit: int) -> bytes | None:
    """The whole body from ``first`` and the messages after it; None when the client left."""
    chunks: list[bytes] = []
    size = 0
    message = first
    while True:
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise _too_large(size, limit)
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
        message = await receive()
    return b"".join(chunks)


def _decompress(body: bytes, encoding: bytes, limit: int) -> bytes:
    if encoding == b"gzip":
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == b"deflate":
        wbits = zlib.MAX_WBITS
    else:
        raise InvalidInput(
            f"Content-Encoding {encoding.decode(errors='replace')!r} is not supported; "
            "send gzip, deflate or identity"
        )
    decompressor = zlib.decompressobj(wbits)
    try:
        out = decompressor.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidInput(f"the body is not valid {encoding.decode()} data: {exc}") from None
    if len(out) > limit or decompressor.unconsumed_tail:
        raise _too_large(len(out), limit)
    return out


def _too_large(size: int, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"request body of at least {size} bytes exceeds the limit of {limit} bytes "
        "(MODELPORT_MAX_REQUEST_BYTES)"
    )
