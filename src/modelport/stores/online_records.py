"""Records of the online store, as both backends keep them: a stored record, the rule that
decides whether a write wins, and turning records into what a read returns
(:class:`~modelport.stores.online.EntityRead` per key, or :class:`NumberRead` per read).

A record is the latest row of one entity in one view: its event time and its values (a row
replaces the whole record; a feature the row does not carry reads as missing). Statuses, for a
view with TTL ``ttl`` and the store's grace period ``grace``, at time ``now``::

    present   now - event_ts <= ttl
    expired   ttl < now - event_ts <= ttl + grace        (value: the feature's default)
    missing   no record, the feature is not in it, or now - event_ts > ttl + grace
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import orjson

from modelport.errors import StorageQuotaExceeded
from modelport.stores.online import EntityRead, NumberRead, ReadResult, ReadShape, ViewRead

#: How long past its view's TTL a record is kept (so it reads as expired, not missing).
DEFAULT_GRACE_S = 3600.0


class Record(NamedTuple):
    event_ts: float
    values: dict[str, Any]


def wins(event_ts: float, stored: float | None) -> bool:
    """Whether a row with ``event_ts`` replaces the stored record.

    An equal time wins too: re-sending a row is idempotent (same outcome, counted as written),
    and of two different rows with the same event time the later write is kept.
    """
    return stored is None or event_ts >= stored


def stored_bytes(entity: str, values: dict[str, Any]) -> int:
    """What a record counts against its tenant's storage cap: its entity key and its values
    as JSON (what the Redis backend stores; the memory backend counts the same)."""
    return len(entity.encode()) + len(orjson.dumps(values))


def over_cap(
    tenant: str, stored: int, adding: int, cap: int, written: int = 0
) -> StorageQuotaExceeded:
    done = "Nothing was written" if not written else f"Its first {written} rows were written"
    return StorageQuotaExceeded(
        f"tenant '{tenant}' stores {stored} bytes of online feature values; this push would "
        f"bring that to {stored + adding}, over its cap of {cap} bytes "
        f"(MODELPORT_FEATURE_TENANT_MAX_BYTES). {done}: push fewer or smaller values, or "
        "wait for old ones to pass their view's TTL and grace period"
    )


_NOTHING: dict[str, Any] = {}


def assemble(
    reads: Sequence[ViewRead],
    records: Sequence[Sequence[Record | None]],
    now: float,
    grace_s: float,
) -> ReadResult:
    """Per read, per key: the entity's features, from the records found (aligned with the
    keys)."""
    result: ReadResult = []
    for read, found in zip(reads, records, strict=True):
        shape = ReadShape(read)
        ttl = read.view.ttl_s
        rows: list[EntityRead] = []
        append = rows.append
        nothing = EntityRead(shape, "missing", None, _NOTHING)
        for record in found:
            if record is None:
                append(nothing)
                continue
            ts, values = record
            age = now - ts
            if age <= ttl:
                append(EntityRead(shape, "present", ts, values))
            elif age <= ttl + grace_s:
                append(EntityRead(shape, "expired", ts, values))
            else:
                append(nothing)
        result.append(rows)
    return result


def numbers(
    reads: Sequence[ViewRead], records: Sequence[Sequence[Record | None]]
) -> list[NumberRead]:
    """:class:`NumberRead` per read from the records found (aligned with the keys)."""
    result: list[NumberRead] = []
    for read, found in zip(reads, records, strict=True):
        names = read.features
        nothing = [_NAN] * len(names)
        stamps: list[float] = []
        table: list[list[Any]] = []
        for record in found:
            if record is None:
                stamps.append(_NAN)
                table.append(nothing)
                continue
            stamps.append(record.event_ts)
            values = record.values
            table.append([number(values.get(name)) for name in names])
        with np.errstate(over="ignore"):  # a float beyond float32 reads as inf
            matrix = np.array(table, dtype=np.float32).reshape(len(found), len(names))
        result.append(NumberRead(np.array(stamps, dtype=np.float64), matrix))
    return result


def number(value: Any) -> float:
    """A stored value as the join reads it: numbers and booleans as floats, anything else
    (absent, a string) as NaN."""
    return float(value) if type(value) in _NUMBER_TYPES else _NAN


_NAN = float("nan")
_NUMBER_TYPES = (float, int, bool)
