"""The online feature store contract: feature views and their latest values per entity.

Two backends implement :class:`OnlineStore`: in-process memory persisted to SQL (the embedded
default; a restart keeps values) and Redis (production; shared by replicas). Keys are laid out
per tenant, view and entity, so a view's TTL applies to its own keys only. Writes are
idempotent and an older event never overwrites a newer one. Reads for many entities of many
views are one round trip.
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, Mapping, Sequence, ValuesView
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol

import numpy as np

FeatureType = Literal["float", "int", "bool", "string"]
Status = Literal["present", "missing", "expired"]


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    name: str
    dtype: FeatureType
    default: Any = None


@dataclass(frozen=True, slots=True)
class FeatureView:
    tenant: str
    name: str
    version: int
    entity: str
    features: tuple[FeatureSpec, ...]
    ttl_s: float
    """A value older than this (by its event time) reads as ``expired``."""

    def spec(self, feature: str) -> FeatureSpec | None:
        for spec in self.features:
            if spec.name == feature:
                return spec
        return None


@dataclass(frozen=True, slots=True)
class FeatureRow:
    entity: str
    values: dict[str, Any]
    event_ts: float
    """Event time, seconds since the epoch (UTC)."""


@dataclass(frozen=True, slots=True)
class WriteResult:
    written: int
    stale: int
    """Rows skipped because the store already held a newer event for that entity."""


class FeatureValue(NamedTuple):
    """One feature of one entity as read: its value (the default unless present), status and
    event time. A named tuple: the cheapest immutable record Python has."""

    value: Any
    status: Status
    event_ts: float | None


@dataclass(frozen=True, slots=True)
class ViewRead:
    view: FeatureView
    features: tuple[str, ...]
    keys: tuple[str, ...]


class NumberRead(NamedTuple):
    """One read's numbers, aligned with its keys: ``event_ts`` (float64, one per key; NaN
    where there is no record) and ``values`` (float32, keys x features in the order asked
    for; NaN where the record lacks the feature or holds something that is not a number, and
    on every feature of a key without a record). Booleans read as 1 and 0. Nothing is decided
    about TTLs or defaults: the caller does that, for a whole batch at once."""

    event_ts: np.ndarray
    values: np.ndarray


class ReadShape:
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
        self, shape: ReadShape, status: Status, event_ts: float | None, stored: dict[str, Any]
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


#: Per read, per key (aligned with ``ViewRead.keys``): the entity's features, a mapping
#: feature name -> FeatureValue.
ReadResult = list[list[EntityRead]]


class OnlineStore(Protocol):
    async def load(self) -> None:
        """Get ready to serve (the memory backend reads its persisted values)."""
        ...

    async def write(self, view: FeatureView, rows: Sequence[FeatureRow]) -> WriteResult: ...

    async def read(self, reads: Sequence[ViewRead], now: float | None = None) -> ReadResult:
        """All reads in one round trip."""
        ...

    def read_blocking(self, reads: Sequence[ViewRead], now: float | None = None) -> ReadResult:
        """The same, from a worker thread (the batch runtime joins features there)."""
        ...

    async def read_numbers(self, reads: Sequence[ViewRead]) -> list[NumberRead]:
        """What the feature join needs from the same round trip, with no Python object per
        value: per read, aligned with its keys, the records' event times and the requested
        features as a float32 matrix."""
        ...

    def read_numbers_blocking(self, reads: Sequence[ViewRead]) -> list[NumberRead]:
        """The same, from a worker thread (the batch runtime joins features there)."""
        ...

    async def close(self) -> None: ...


def _default(read: ViewRead, name: str) -> Any:
    spec = read.view.spec(name)
    return None if spec is None else spec.default


#: ``_new(FeatureValue, (value, status, event_ts))`` builds a FeatureValue without the named
#: tuple's ``__new__`` wrapper (about half the cost).
_new = tuple.__new__
