"""``Idempotency-Key`` on POST routes, with Stripe's semantics.

A client that may retry a POST (a timeout, a dropped connection) sends a key of its choosing;
the server then applies the request once whatever the number of retries:

- the first request with a key runs, and its answer (status, body, a few headers) is kept for
  ``MODELPORT_IDEMPOTENCY_TTL_S`` (24 h);
- the same key with the same request (method, path, query and body) gets that answer again,
  with ``Idempotent-Replayed: true``, and nothing runs;
- the same key with another request is refused with 422;
- while the first request runs, another with the same key is refused with 409 (retry later
  to get the first one's answer); concurrent requests with one key therefore have one effect;
- an answer that is an error (4xx, 5xx raised by the route) is not kept: the key is released
  and a retry runs again.

A route takes the header and hands the answer's computation to ``answer_once``::

    @router.post("/things")
    async def create(request: Request, svc: ServicesDep, tenant: WriteTenant,
                     idempotency_key: IdempotencyKey = None) -> Response:
        body = await request.body()
        return await answer_once(
            svc.idempotency, tenant, idempotency_key, request_hash(request, body),
            lambda: compute(body),   # returns a Response with its body rendered
        )
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Header, Request
from starlette.responses import Response

from modelport.stores.idempotency import IdempotencyKeys, StoredAnswer

#: Set on a replayed answer.
REPLAYED_HEADER = "Idempotent-Replayed"
#: The answer's headers kept with it (the rest are the edge's, added to every answer anew).
KEPT_HEADERS = ("content-type", "etag", "location")

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="Any unique string (e.g. a UUID) of 1-255 printable ASCII characters: "
        "a retry with the same key and body replays the first answer instead of running "
        "again, for 24 h. The same key with another body is refused (422); while the first "
        "request runs, a second one with its key gets 409.",
    ),
]

#: What routes that take the header add to their OpenAPI ``responses=``.
IDEMPOTENCY_RESPONSES: dict[int | str, dict[str, Any]] = {
    409: {"description": "A request with this Idempotency-Key is still in progress."},
    422: {"description": "This Idempotency-Key was already used with another request."},
}


def request_hash(request: Request, body: bytes) -> str:
    """What makes two requests the same one: method, path, query and body."""
    digest = hashlib.sha256()
    for part in (request.method, request.url.path, request.url.query):
        digest.update(part.encode())
        digest.update(b"\0")
    digest.update(body)
    return digest.hexdigest()


async def answer_once(
    keys: IdempotencyKeys,
    tenant: str,
    key: str | None,
    request_hash: str,
    compute: Callable[[], Awaitable[Response]],
) -> Response:
    """``compute()``'s answer, computed once per (tenant, key); without a key, just computed."""
    if key is None:
        return await compute()
    stored = await keys.claim(tenant, key, request_hash)
    if stored is not None:
        replay = Response(stored.body, status_code=stored.status, headers=stored.headers)
        replay.headers[REPLAYED_HEADER] = "true"
        return replay
    try:
        response = await compute()
    except BaseException:
        await keys.release(tenant, key)
        raise
    headers = {h: response.headers[h] for h in KEPT_HEADERS if h in response.headers}
    await keys.record(
        tenant, key, StoredAnswer(response.status_code, bytes(response.body), headers)
    )
    return response
