"""Request bodies at the edge: capped, counted against a memory budget, read whole, inflated.

Every route's body goes through ``BodyBudget.permit`` (the cap: the smallest of the server's
``MODELPORT_MAX_REQUEST_BYTES``, the route's or model's own limit and the tenant's
``max_body_bytes``) and ``read_body`` before anything parses it. A declared
``Content-Length`` over the cap is refused before a byte is read; a chunked body is refused as
soon as it passes the cap. Bodies held in memory at once are budgeted per tenant and in all,
so many large requests in flight are refused (429 / 503) instead of exhausting memory.
Slow senders are cut off by the HTTP server (``modelport.cli.http_protocol``), which turns
into a disconnect here.
"""

from __future__ import annotations

import zlib

from starlette.types import Message, Receive

from modelport.errors import InvalidInput, PayloadTooLarge, TooManyRequests, Unavailable


class BodyPermit:
    """One request's share of the budget: its cap and the bytes reserved for it so far."""

    __slots__ = ("limit", "reason", "reserved", "tenant")

    def __init__(self, tenant: str, limit: int, reason: str, reserved: int) -> None:
        self.tenant = tenant
        self.limit = limit
        self.reason = reason
        self.reserved = reserved


#: Bodies up to this size are not counted against the budget: even every in-flight slot of a
#: tenant holding one is a few MiB, and the common small request then costs no bookkeeping.
UNCOUNTED_BYTES = 64 * 1024


class BodyBudget:
    """Bytes of request bodies held at once, per tenant and in all (one replica); bodies up to
    ``UNCOUNTED_BYTES`` are not counted."""

    def __init__(self, total_bytes: int, tenant_bytes: int) -> None:
        self._total_limit = total_bytes
        self._tenant_limit = tenant_bytes
        self._total = 0
        self._tenants: dict[str, int] = {}

    @property
    def held(self) -> int:
        return self._total

    def permit(
        self, tenant: str | None, limit: int, reason: str, declared: int | None
    ) -> BodyPermit:
        """Admit a body of at most ``limit`` bytes (``reason`` names the limit for the error),
        reserving what ``Content-Length`` declares; refuse it now if that is already too much."""
        permit = BodyPermit(tenant or "", limit, reason, 0)
        if declared:
            if declared > limit:
                raise too_large(declared, permit)
            self.grow(permit, declared)
        return permit

    def grow(self, permit: BodyPermit, size: int) -> None:
        """Reserve up to ``size`` bytes for ``permit`` (a chunked body as it arrives)."""
        extra = size - permit.reserved
        if extra <= 0 or size <= UNCOUNTED_BYTES:
            return
        held = self._tenants.get(permit.tenant, 0)
        if held + extra > self._tenant_limit:
            raise TooManyRequests(
                f"{held + extra} bytes of this tenant's request bodies would be in memory at "
                f"once, over its budget of {self._tenant_limit} "
                "(MODELPORT_TENANT_MAX_INFLIGHT_BODY_BYTES); retry when fewer are in flight",
                retry_after_s=1.0,
                limit=self._tenant_limit,
                remaining=max(0, self._tenant_limit - held),
                reset_s=1.0,
            )
        if self._total + extra > self._total_limit:
            raise Unavailable(
                "this replica holds too many request bodies in memory "
                "(MODELPORT_MAX_INFLIGHT_BODY_BYTES); retry shortly"
            )
        self._tenants[permit.tenant] = held + extra
        self._total += extra
        permit.reserved = size

    def release(self, permit: BodyPermit) -> None:
        if permit.reserved:
            held = self._tenants.get(permit.tenant, 0) - permit.reserved
            if held > 0:
                self._tenants[permit.tenant] = held
            else:
                self._tenants.pop(permit.tenant, None)
            self._total -= permit.reserved
            permit.reserved = 0


async def read_body(receive: Receive, permit: BodyPermit, budget: BodyBudget) -> bytes | None:
    """The whole body, within ``permit``; None when the client went away (or was cut off)."""
    message = await receive()
    body = whole_body(message, permit, budget)
    if body is None:
        return await read_rest(message, receive, permit, budget)
    return body


def whole_body(message: Message, permit: BodyPermit, budget: BodyBudget) -> bytes | None:
    """The body when the first message carries all of it (the usual case), within ``permit``;
    None when more is coming or the client left (``read_rest`` then takes over)."""
    if message["type"] != "http.request" or message.get("more_body", False):
        return None
    body: bytes = message.get("body", b"")
    if len(body) > permit.reserved:
        if len(body) > permit.limit:
            raise too_large(len(body), permit)
        budget.grow(permit, len(body))
    return body


async def read_rest(
    message: Message, receive: Receive, permit: BodyPermit, budget: BodyBudget
) -> bytes | None:
    """The body from ``message`` and the ones after it, within ``permit``; None when the
    client went away (or was cut off)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > permit.limit:
                raise too_large(size, permit)
            budget.grow(permit, size)
            chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
        message = await receive()


def inflate(body: bytes, encoding: bytes, permit: BodyPermit) -> bytes:
    """``body`` decoded from its ``Content-Encoding``; the inflated size counts against the
    cap, and a stream that is cut short or has anything after its end is refused."""
    if encoding == b"gzip" or encoding == b"x-gzip":
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == b"deflate":
        wbits = zlib.MAX_WBITS
    elif encoding == b"identity":
        return body
    else:
        raise InvalidInput(
            f"Content-Encoding {encoding.decode(errors='replace')!r} is not supported; "
            "send gzip, deflate or identity"
        )
    name = encoding.decode()
    decompressor = zlib.decompressobj(wbits)
    try:
        out = decompressor.decompress(body, permit.limit + 1)
    except zlib.error as exc:
        raise InvalidInput(f"the body is not valid {name} data: {exc}") from None
    if len(out) > permit.limit or decompressor.unconsumed_tail:
        raise too_large(len(out), permit)
    if not decompressor.eof:
        raise InvalidInput(f"the {name} body is truncated: its stream has no end")
    if decompressor.unused_data:
        raise InvalidInput(f"the {name} body has data after the end of its stream")
    return out


def too_large(size: int, permit: BodyPermit) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"request body of at least {size} bytes exceeds the limit of {permit.limit} bytes "
        f"({permit.reason})"
    )
