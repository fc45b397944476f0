"""The online feature store contract: feature views and their latest values per entity.

Two backends implement :class:`OnlineStore`: in-process memory persisted to SQL (the embedded
default; a restart keeps values) and Redis (production; shared by replicas). Keys are laid out
per tenant, view and entity, so a view's TTL applies to its own keys only. Writes are
idempotent and an older event never overwrites a newer one. Reads for many entities of many
views are one round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

import numpy as np

if TYPE_CHECKING:
    from modelport.stores.online_values import EntityRead

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


#: Per read, per key (aligned with ``ViewRead.keys``): the entity's features, a mapping
#: feature name -> FeatureValue (see ``online_values.EntityRead``).
ReadResult = list[list["EntityRead"]]


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
