"""What both online store backends share: a stored record, the rule that decides whether a
write wins, and turning records into what a read returns (:class:`EntityRead`, which gives
each feature as a :class:`FeatureValue` with its status).

A record is the latest row of one entity in one view: its event time and its values (a row
replaces the whole record; a feature the row does not carry reads as missing). Statuses, for a
view with TTL ``ttl`` and the store's grace period ``grace``, at time ``now``::

    present   now - event_ts <= ttl
    expired   ttl < now - event_ts <= ttl + grace        (value: the feature's default)
    missing   no record, the feature is not in it, or now - event_ts > ttl + grace
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, Mapping, Sequence, ValuesView
from typing import Any, NamedTuple

import numpy as np

from modelport.stores.online import FeatureValue, NumberRead, ReadResult, Status, ViewRead

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


class _ReadShape:
    """What every row of one read shares: the features asked for, their defaults and their
    ``missing`` values (built once per read, not per row)."""

    __slots__ = ("defaults", "missing", "names")

    def __init__(self, read: ViewRead) -> None:
        self.names = read.features
        self.defaults = {name: _default(read, name) for name in self.names}
        self.missing = {
            name: _new(FeatureValue, (default, "missing", None))
            for name, default in self.defaults.items()
        }


class EntityRead(Mapping[str, FeatureValue]):
    """One entity's requested features of one view, as read: a mapping feature ->
    :class:`FeatureValue`, in the order the features were asked for.

    A read returns one of these per key, not one object per value: the record's status and
    event time are decided once, and a value object is built only when a feature is looked
    up. ``status`` and ``event_ts`` are the record's (``missing`` and None when there is none,
    or it is past its grace period); a feature the record does not carry still reads as
    ``missing``. The record's values stay private: the memory backend's records are its state."""

    __slots__ = ("_shape", "_stored", "event_ts", "status")

    def __init__(
        self, shape: _ReadShape, status: Status, event_ts: float | None, stored: dict[str, Any]
    ) -> None:
        self._shape = shape
        self.status = status
        self.event_ts = event_ts
        self._stored = stored

    def __getitem__(self, name: str) -> FeatureValue:
        missing = self._shape.missing[name]  # KeyError: a feature that was not asked for
        if self.status == "present":
            if name in self._stored:
                return _new(FeatureValue, (self._stored[name], "present", self.event_ts))
        elif self.status == "expired" and name in self._stored:
            return _new(FeatureValue, (self._shape.defaults[name], "expired", self.event_ts))
        return missing

    def to_dict(self) -> dict[str, FeatureValue]:
        """Every feature at once: cheaper than looking each one up."""
        shape, stored, ts = self._shape, self._stored, self.event_ts
        missing = shape.missing
        if self.status == "present":
            return {
                name: _new(FeatureValue, (stored[name], "present", ts))
                if name in stored
                else missing[name]
                for name in shape.names
            }
        if self.status == "expired":
            return {
                name: _new(FeatureValue, (default, "expired", ts))
                if name in stored
                else missing[name]
                for name, default in shape.defaults.items()
            }
        return missing.copy()

    def items(self) -> ItemsView[str, FeatureValue]:
        return self.to_dict().items()

    def values(self) -> ValuesView[FeatureValue]:
        return self.to_dict().values()

    def __iter__(self) -> Iterator[str]:
        return iter(self._shape.names)

    def __len__(self) -> int:
        return len(self._shape.names)

    def __repr__(self) -> str:
        return f"EntityRead({self.to_dict()!r})"


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
        shape = _ReadShape(read)
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


def _default(read: ViewRead, name: str) -> Any:
    spec = read.view.spec(name)
    return None if spec is None else spec.default


#: ``_new(FeatureValue, (value, status, event_ts))`` builds a FeatureValue without the named
#: tuple's ``__new__`` wrapper (about half the cost).
_new = tuple.__new__
