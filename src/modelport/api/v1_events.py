"""API for behavioural events: ``POST /v1/events`` (the ``write`` scope, bodies up to 8 MiB).

The body is parsed with orjson and checked event by event by the service: a batch of 1,000
events through a pydantic model each would cost more than storing them."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from modelport.api.access import WriteBulkTenant
from modelport.api.deps import services
from modelport.api.idempotency import (
    IDEMPOTENCY_RESPONSES,
    IdempotencyKey,
    answer_once,
    request_hash,
)
from modelport.api.responses import JsonResponse
from modelport.errors import InvalidInput
from modelport.services.events import EVENT_TYPES, MAX_BATCH, MAX_ID_CHARS, MAX_ITEMS
from modelport.wiring import Services

router = APIRouter(prefix="/v1/events", tags=["events"])
ServicesDep = Annotated[Services, Depends(services)]

_ID = {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS}
_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["event_id", "type", "timestamp"],
    "additionalProperties": False,
    "properties": {
        "event_id": {**_ID, "description": "The client's id: a retry with it is a duplicate."},
        "type": {"type": "string", "enum": list(EVENT_TYPES)},
        "user_id": {**_ID, "description": "user_id or session_id (or both) is required."},
        "session_id": _ID,
        "item_ids": {
            "type": "array",
            "items": _ID,
            "maxItems": MAX_ITEMS,
            "description": "Required (non-empty) but for search and impression events.",
        },
        "timestamp": {
            "anyOf": [{"type": "string", "format": "date-time"}, {"type": "number"}],
            "description": "When it happened: ISO-8601 (UTC when it names no offset) or epoch "
            "seconds; within MODELPORT_EVENT_MAX_AGE_S before and MODELPORT_EVENT_MAX_FUTURE_S "
            "after the server's clock.",
        },
        "request_id": {**_ID, "description": "The search/recommendation answer it came from."},
        "properties": {
            "type": "object",
            "description": "At most 50 keys, 4,096 bytes as JSON.",
        },
    },
}
_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["events"],
                "additionalProperties": False,
                "properties": {
                    "events": {
                        "type": "array",
                        "items": _EVENT,
                        "minItems": 1,
                        "maxItems": MAX_BATCH,
                    }
                },
            }
        }
    },
}
_ANSWER: dict[int | str, dict[str, Any]] = {
    **IDEMPOTENCY_RESPONSES,
    200: {
        "description": '{"accepted": [event_id], "duplicates": [event_id], "rejected": '
        '[{"index", "event_id", "reason"}]}: each event is in exactly one list. A duplicate '
        "(an event id already stored, or repeated in the batch) is applied once."
    },
}


@router.post(
    "",
    summary=f"Record behavioural events (1-{MAX_BATCH} per call)",
    openapi_extra={"requestBody": _BODY},
    responses=_ANSWER,
)
async def post_events(
    request: Request,
    svc: ServicesDep,
    tenant: WriteBulkTenant,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    raw = await request.body()

    async def run() -> Response:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise InvalidInput("the body is not a JSON document") from None
        result = await svc.events.ingest(tenant, body)
        return JsonResponse(result.to_dict())

    # Without the header, a retried event id is still answered as a duplicate: the key only
    # makes a retry get the first answer itself (accepted, not duplicates). Without it there
    # is nothing to hash (a SHA-256 of every body, for nothing).
    digest = "" if idempotency_key is None else request_hash(request, raw)
    return await answer_once(svc.idempotency, tenant, idempotency_key, digest, run)
