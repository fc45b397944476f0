"""Behavioural events: intake (validate, deduplicate, store with their outbox messages),
export and retention.

An intake batch is checked event by event: a bad event is rejected with its reason and does not
stop the others. Accepted events and their outbox messages commit in one transaction
(``EventStore.append``); an event id the tenant already sent (a client retry) is answered as a
duplicate and applied nothing again, as long as the first copy is retained. The checks are plain
Python over the parsed JSON, not a model per event: intake is benchmarked against a raw stream
append, and a pydantic object per event would cost more than the SQL does.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog

from modelport.errors import InvalidInput, PayloadTooLarge
from modelport.stores.events import EventStore

log = structlog.get_logger("modelport.events")

EVENT_TYPES = ("view", "click", "add_to_cart", "purchase", "impression", "search")
MAX_BATCH = 1000
MAX_ID_CHARS = 128
MAX_ITEMS = 100
"""Item ids per event (an impression lists what was shown)."""
MAX_PROPERTIES = 50
MAX_PROPERTIES_BYTES = 4096
"""The properties object as JSON."""
_FIELDS = frozenset(
    (
        "event_id",
        "type",
        "user_id",
        "session_id",
        "item_ids",
        "timestamp",
        "request_id",
        "properties",
    )
)
_TYPES = frozenset(EVENT_TYPES)
_MAX_EPOCH_S = 1e11  # larger is almost surely milliseconds
#: Purge at most this many expired events per intake call, at most once per interval.
PURGE_CHUNK = 5000
PURGE_EVERY_S = 60.0


@dataclass(frozen=True, slots=True)
class EventLimits:
    """The accepted timestamp window, relative to the server's clock."""

    max_age_s: float = 7 * 86_400.0
    max_future_s: float = 600.0
    retention_days: float = 90.0


@dataclass(slots=True)
class IngestResult:
    accepted: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    """Event ids already stored (a retry), or repeated within the batch: applied once."""
    rejected: list[dict[str, Any]] = field(default_factory=list)
    """``{"index", "event_id", "reason"}`` per event that failed its checks."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
        }


class Rejected(Exception):
    """One event's failed check (internal: becomes an entry of ``rejected``)."""


class EventService:
    def __init__(self, store: EventStore, limits: EventLimits | None = None) -> None:
        self._store = store
        self._limits = limits or EventLimits()
        self._next_purge = 0.0

    async def ingest(self, tenant: str, body: Any, now: float | None = None) -> IngestResult:
        """``body`` is the parsed request, ``{"events": [...]}``."""
        if not isinstance(body, Mapping) or not isinstance(body.get("events"), list):
            raise InvalidInput('expected {"events": [...]}: a list of 1-1000 events')
        extra = set(body) - {"events"}
        if extra:
            raise InvalidInput(f"unknown field(s) {', '.join(sorted(map(str, extra)))}")
        batch = body["events"]
        if not batch:
            raise InvalidInput("send at least one event")
        if len(batch) > MAX_BATCH:
            raise PayloadTooLarge(f"send at most {MAX_BATCH} events per call, got {len(batch)}")
        at = time.time() if now is None else now
        received = dt.datetime.fromtimestamp(at, dt.UTC)
        oldest, newest = at - self._limits.max_age_s, at + self._limits.max_future_s
        result = IngestResult()
        rows: list[dict[str, Any]] = []
        payloads: list[dict[str, Any]] = []
        seen: set[str] = set()
        for index, raw in enumerate(batch):
            try:
                row, payload = _check(raw, oldest, newest)
            except Rejected as exc:
                event_id = raw.get("event_id") if isinstance(raw, dict) else None
                result.rejected.append(
                    {
                        "index": index,
                        "event_id": event_id if isinstance(event_id, str) else None,
                        "reason": str(exc),
                    }
                )
                continue
            event_id = row["event_id"]
            if event_id in seen:
                result.duplicates.append(event_id)
                continue
            seen.add(event_id)
            row["tenant"] = tenant
            row["received_at"] = received
            rows.append(row)
            # When it was accepted: the workers' freshness metric runs from here.
            payload["accepted_at"] = at
            payloads.append(payload)
        new = await self._store.append(tenant, rows, payloads)
        if len(new) == len(rows):
            result.accepted.extend(row["event_id"] for row in rows)
        else:
            for row in rows:
                (result.accepted if row["event_id"] in new else result.duplicates).append(
                    row["event_id"]
                )
        await self._purge_now_and_then(at)
        return result

    async def close(self) -> None:
        await self._store.close()

    async def export(
        self, tenant: str, since: dt.datetime, until: dt.datetime
    ) -> AsyncIterator[dict[str, Any]]:
        """The tenant's retained events with ``since <= timestamp < until``, oldest first."""
        if until <= since:
            raise InvalidInput(f"--until ({until.isoformat()}) must be after --since")
        async for page in self._store.export(tenant, _utc(since), _utc(until)):
            for event in page:
                yield event

    async def purge_expired(self, now: float | None = None, limit: int = PURGE_CHUNK) -> int:
        """Delete up to ``limit`` events received longer than the retention ago."""
        at = time.time() if now is None else now
        cutoff = dt.datetime.fromtimestamp(at - self._limits.retention_days * 86_400, dt.UTC)
        purged = await self._store.purge(cutoff, limit)
        if purged:
            log.info("events_purged", count=purged, received_before=cutoff.isoformat())
        return purged

    async def _purge_now_and_then(self, now: float) -> None:
        # Intake pays for retention in small chunks, once a minute per process: no task to
        # own, and a server that takes no events has none to expire either.
        if now < self._next_purge:
            return
        self._next_purge = now + PURGE_EVERY_S
        await self.purge_expired(now)


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _check(raw: Any, oldest: float, newest: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``events`` row (without tenant and received_at) and the stream payload of one
    event; ``Rejected`` naming the first thing wrong."""
    if not isinstance(raw, dict):
        raise Rejected("an event is an object")
    if not raw.keys() <= _FIELDS:
        unknown = ", ".join(sorted(str(k) for k in raw.keys() - _FIELDS))
        raise Rejected(f"unknown field(s) {unknown}")
    get = raw.get
    event_id = get("event_id")
    if not _good_id(event_id):
        _id(event_id, "event_id", required=True)
    kind = get("type")
    if kind not in _TYPES:
        raise Rejected(f"type must be one of {', '.join(EVENT_TYPES)}, got {_show(kind)}")
    user = get("user_id")
    if user is not None and not _good_id(user):
        _id(user, "user_id")
    session = get("session_id")
    if session is not None and not _good_id(session):
        _id(session, "session_id")
    if user is None and session is None:
        raise Rejected("give user_id or session_id (or both)")
    items = get("item_ids")
    if items is None:
        items = []
    if not isinstance(items, list) or len(items) > MAX_ITEMS:
        raise Rejected(f"item_ids must be a list of at most {MAX_ITEMS} ids")
    for item in items:
        if not _good_id(item):
            _id(item, "item_ids[]", required=True)
    if not items and kind not in ("search", "impression"):
        raise Rejected(f"a {kind} event names the item(s) in item_ids")
    ts = _timestamp(raw.get("timestamp"), oldest, newest)
    request_id = _id(raw.get("request_id"), "request_id")
    properties = raw.get("properties")
    if properties is None:
        properties = {}
    elif not isinstance(properties, dict):
        raise Rejected("properties must be an object")
    elif properties:
        if len(properties) > MAX_PROPERTIES:
            raise Rejected(f"properties holds at most {MAX_PROPERTIES} keys")
        try:
            size = len(orjson.dumps(properties))
        except TypeError:  # too deeply nested for orjson
            raise Rejected("properties nest too deeply") from None
        if size > MAX_PROPERTIES_BYTES:
            raise Rejected(f"properties hold at most {MAX_PROPERTIES_BYTES} bytes as JSON")
    row = {
        "event_id": event_id,
        "type": kind,
        "user_id": user,
        "session_id": session,
        "item_ids": items,
        "occurred_at": dt.datetime.fromtimestamp(ts, dt.UTC),
        "request_id": request_id,
        "properties": properties,
    }
    payload = {"type": kind, "user": user, "session": session, "items": items, "ts": ts}
    return row, payload


def _good_id(value: Any) -> bool:
    """The common case of ``_id`` in one expression (checked for every id of every event)."""
    return type(value) is str and 0 < len(value) <= MAX_ID_CHARS and "\x00" not in value


def _id(value: Any, name: str, *, required: bool = False) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_CHARS:
        raise Rejected(f"{name} must be a string of 1-{MAX_ID_CHARS} characters")
    if "\x00" in value:  # PostgreSQL text cannot hold it
        raise Rejected(f"{name} cannot contain NUL characters")
    return value


def _timestamp(value: Any, oldest: float, newest: float) -> float:
    if isinstance(value, str):
        try:
            # RFC 3339 allows a lowercase 't' and 'z'; fromisoformat does not.
            parsed = dt.datetime.fromisoformat(value.upper())
        except ValueError:
            raise Rejected(
                f"timestamp {value[:64]!r} is not an ISO-8601 time "
                "(e.g. 2024-05-01T12:00:00Z) or epoch seconds"
            ) from None
        seconds = (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)).timestamp()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
        if not math.isfinite(seconds) or seconds >= _MAX_EPOCH_S:
            raise Rejected(
                f"timestamp {value!r} is not epoch seconds (milliseconds? divide by 1000)"
            )
    elif value is None:
        raise Rejected("timestamp is required: when the event happened")
    else:
        raise Rejected("timestamp must be an ISO-8601 time or epoch seconds")
    if seconds < oldest:
        raise Rejected(
            f"timestamp {_show(value)} is older than the accepted window "
            "(MODELPORT_EVENT_MAX_AGE_S before the server's clock)"
        )
    if seconds > newest:
        raise Rejected(
            f"timestamp {_show(value)} is too far in the future (MODELPORT_EVENT_MAX_FUTURE_S)"
        )
    return seconds


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 64 else text[:61] + "..."
