"""What both online store backends share: a stored record, the rule that decides whether a
write wins, and turning records into :class:`FeatureValue` with their status.

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

from modelport.stores.online import FeatureValue, ReadResult, ViewRead

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


def assemble(
    reads: Sequence[ViewRead],
    records: Sequence[Sequence[Record | None]],
    now: float,
    grace_s: float,
) -> ReadResult:
    """Per read, per key: feature -> value, from the records found (aligned with the keys)."""
    result: ReadResult = []
    for read, found in zip(reads, records, strict=True):
        names = read.features
        defaults = [(name, _default(read, name)) for name in names]
        missing = {
            name: _new(FeatureValue, (default, "missing", None)) for name, default in defaults
        }
        ttl = read.view.ttl_s
        rows: list[dict[str, FeatureValue]] = []
        append = rows.append
        for record in found:
            if record is None:
                append(missing.copy())
                continue
            ts, values = record
            age = now - ts
            if age <= ttl:
                append(
                    {
                        name: _new(FeatureValue, (values[name], "present", ts))
                        if name in values
                        else missing[name]
                        for name in names
                    }
                )
            elif age <= ttl + grace_s:
                append(
                    {
                        name: _new(FeatureValue, (default, "expired", ts))
                        if name in values
                        else missing[name]
                        for name, default in defaults
                    }
                )
            else:
                append(missing.copy())
        result.append(rows)
    return result


def _default(read: ViewRead, name: str) -> Any:
    spec = read.view.spec(name)
    return None if spec is None else spec.default


#: ``_new(FeatureValue, (value, status, event_ts))`` builds a FeatureValue without the named
#: tuple's ``__new__`` wrapper: a 2,000-value read spends half as long building its result.
_new = tuple.__new__
