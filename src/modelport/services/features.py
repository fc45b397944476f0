"""Online features: defining views, pushing values, reading them per entity.

Every input is checked here, whichever transport sent it (HTTP, the CLI): view definitions,
pushed values against the view's dtypes, event times, feature references (``view:feature`` or
``view:*``) and entity keys. The inference path calls :meth:`FeatureService.resolve` once per
request (cached view definitions) and then the online store directly, from a worker thread if
need be (``OnlineStore.read_blocking``).
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from modelport.errors import InvalidInput, PayloadTooLarge
from modelport.stores.features import (
    AppliedView,
    FeatureViewStore,
    check_name,
    check_unicode,
    check_value,
)
from modelport.stores.online import (
    FeatureRow,
    FeatureSpec,
    FeatureValue,
    FeatureView,
    OnlineStore,
    ViewRead,
    WriteResult,
)

MAX_PUSH_ROWS = 10_000
MAX_KEYS = 10_000
MAX_REFS = 1_000
MAX_KEY_CHARS = 512
#: An event time further ahead than this is refused: it would shadow every real update of its
#: entity until then.
MAX_FUTURE_S = 3600.0
_MAX_EPOCH_S = 1e11  # year 5138: anything larger is almost surely milliseconds


@dataclass(frozen=True, slots=True)
class PushLimits:
    """What one push may carry (``MODELPORT_FEATURE_PUSH_*``, ``…_MAX_STRING_CHARS``); the
    store caps what a tenant keeps in all."""

    rows: int = MAX_PUSH_ROWS
    values: int = 1_000_000
    """Feature values in all: rows x features per row (a row carries at most its view's)."""
    string_chars: int = 4096


@dataclass(frozen=True, slots=True)
class FeatureSelection:
    """Features of one view, in the order they were asked for."""

    view: FeatureView
    features: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EntityFeatures:
    entity: str
    """The entity type, e.g. ``user``."""
    key: str
    features: dict[str, FeatureValue]
    """``view:feature`` -> value."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape the API and the CLI answer with, one object per key."""
        return {
            "entity": self.entity,
            "key": self.key,
            "features": {
                name: {"value": v.value, "status": v.status, "event_timestamp": v.event_ts}
                for name, v in self.features.items()
            },
        }


def parse_ref(ref: object) -> tuple[str, str]:
    """``"view:feature"`` or ``"view:*"`` -> (view, feature)."""
    if not isinstance(ref, str) or ref.count(":") != 1:
        raise InvalidInput(f"feature reference {ref!r}: use 'view:feature' or 'view:*'")
    view, feature = ref.split(":")
    check_name("feature view", view)
    if feature != "*":
        check_name("feature", feature)
    return view, feature


def parse_event_time(value: object, where: str, now: float | None = None) -> float:
    """Epoch seconds from a JSON number (epoch seconds) or an ISO-8601 string (UTC if it names
    no offset)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidInput(
            f"{where}: expected epoch seconds or an ISO-8601 time, got {type(value).__name__}"
        )
    if isinstance(value, str):
        try:
            # RFC 3339 allows a lowercase 't' and 'z'; fromisoformat does not.
            parsed = dt.datetime.fromisoformat(value.upper())
        except ValueError:
            raise InvalidInput(
                f"{where}: {value[:64]!r} is not an ISO-8601 time "
                "(e.g. 2024-05-01T12:00:00Z) or epoch seconds"
            ) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        seconds = parsed.timestamp()
    else:
        seconds = float(value)
        if not math.isfinite(seconds):
            raise InvalidInput(f"{where}: epoch seconds must be finite, got {value!r}")
        if seconds >= _MAX_EPOCH_S:
            raise InvalidInput(
                f"{where}: {value!r} is too large for epoch seconds (milliseconds? divide by 1000)"
            )
    if seconds < 0:
        raise InvalidInput(f"{where}: event time {value!r} is before 1970")
    limit = (time.time() if now is None else now) + MAX_FUTURE_S
    if seconds > limit:
        raise InvalidInput(
            f"{where}: event time {value!r} is more than {MAX_FUTURE_S:.0f} s in the future; "
            "it is when the values were observed"
        )
    return seconds


class FeatureService:
    def __init__(
        self,
        views: FeatureViewStore,
        online: OnlineStore,
        *,
        view_cache_s: float = 1.0,
        limits: PushLimits | None = None,
    ) -> None:
        self._limits = limits or PushLimits()
        self.views = views
        self.online = online
        self._view_cache_s = view_cache_s
        self._cache: dict[tuple[str, str, int | None], tuple[float, FeatureView]] = {}

    # ------------------------------------------------------------------ views

    async def apply_view(
        self,
        tenant: str,
        name: str,
        entity: str,
        features: Sequence[FeatureSpec],
        ttl_s: float,
        actor: str,
    ) -> AppliedView:
        applied = await self.views.apply(tenant, name, entity, features, ttl_s, actor)
        self._cache.pop((tenant, name, None), None)
        return applied

    async def list_views(self, tenant: str) -> list[FeatureView]:
        return await self.views.list(tenant)

    async def get_view(self, tenant: str, name: str, version: int | None = None) -> FeatureView:
        return await self.views.get(tenant, name, version)

    async def cached_view(self, tenant: str, name: str, version: int | None = None) -> FeatureView:
        """Like :meth:`get_view`; the latest version may be up to ``view_cache_s`` old (a
        pinned version never changes)."""
        key = (tenant, name, version)
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and (version is not None or hit[0] > now):
            return hit[1]
        view = await self.views.get(tenant, name, version)
        if len(self._cache) >= 10_000:
            self._cache.clear()
        self._cache[key] = (now + self._view_cache_s, view)
        return view

    # ------------------------------------------------------------------ values

    async def push(
        self, tenant: str, view_name: str, rows: Sequence[Mapping[str, Any]]
    ) -> WriteResult:
        """Write rows ``{"entity", "values", "event_timestamp"}`` to the latest version of the
        view; an entity's row replaces its previous one unless that one has a newer event."""
        limits = self._limits
        if len(rows) > limits.rows:
            raise PayloadTooLarge(
                f"push at most {limits.rows} rows per call, got {len(rows)} "
                "(MODELPORT_FEATURE_PUSH_MAX_ROWS)"
            )
        view = await self.views.get(tenant, view_name)
        now = time.time()
        checked = [_row(view, i, row, now, limits.string_chars) for i, row in enumerate(rows)]
        values = sum(len(row.values) for row in checked)
        if values > limits.values:
            raise PayloadTooLarge(
                f"push at most {limits.values} feature values per call (rows x features), got "
                f"{values} in {len(checked)} rows (MODELPORT_FEATURE_PUSH_MAX_VALUES); split it "
                "into smaller pushes"
            )
        if not checked:
            return WriteResult(written=0, stale=0)
        return await self.online.write(view, checked)

    async def resolve(
        self,
        tenant: str,
        refs: Sequence[str],
        versions: Mapping[str, int] | None = None,
    ) -> list[FeatureSelection]:
        """The views and features that ``refs`` name, grouped by view in order of first
        mention; ``versions`` pins views to a version (else the latest)."""
        if not refs:
            raise InvalidInput("name at least one feature ('view:feature' or 'view:*')")
        if len(refs) > MAX_REFS:
            raise InvalidInput(f"ask for at most {MAX_REFS} feature references, got {len(refs)}")
        wanted: dict[str, list[str]] = {}
        for ref in refs:
            view, feature = parse_ref(ref)
            wanted.setdefault(view, []).append(feature)
        selections = []
        for name, features in wanted.items():
            found = await self.cached_view(tenant, name, (versions or {}).get(name))
            chosen: dict[str, None] = {}
            for feature in features:
                if feature == "*":
                    chosen.update((s.name, None) for s in found.features)
                elif found.spec(feature) is None:
                    raise InvalidInput(
                        f"feature view '{name}' (version {found.version}) has no feature "
                        f"'{feature}'; it has: {', '.join(s.name for s in found.features)}"
                    )
                else:
                    chosen[feature] = None
            selections.append(FeatureSelection(found, tuple(chosen)))
        return selections

    async def get_features(
        self,
        tenant: str,
        refs: Sequence[str],
        entities: Mapping[str, Sequence[str]],
        now: float | None = None,
    ) -> list[EntityFeatures]:
        """One result per entity key, in request order (entity types in the order given, keys
        in their order), each with the requested features of the views keyed by its type."""
        _check_entities(entities)
        selections = await self.resolve(tenant, refs)
        used = {s.view.entity for s in selections}
        for selection in selections:
            if selection.view.entity not in entities:
                raise InvalidInput(
                    f"feature view '{selection.view.name}' is keyed by entity "
                    f"'{selection.view.entity}': give its keys in entities"
                )
        for entity in entities:
            if entity not in used:
                raise InvalidInput(f"no requested feature view is keyed by entity '{entity}'")
        reads = [ViewRead(s.view, s.features, tuple(entities[s.view.entity])) for s in selections]
        found = await self.online.read(reads, now)
        results: list[EntityFeatures] = []
        for entity, keys in entities.items():
            mine = [
                (f"{s.view.name}:", rows)
                for s, rows in zip(selections, found, strict=True)
                if s.view.entity == entity
            ]
            for i, key in enumerate(keys):
                values: dict[str, FeatureValue] = {}
                for prefix, rows in mine:
                    for feature, value in rows[i].items():
                        values[prefix + feature] = value
                results.append(EntityFeatures(entity, key, values))
        return results


def _check_entities(entities: Mapping[str, Sequence[str]]) -> None:
    if not entities:
        raise InvalidInput('give entity keys, e.g. {"user": ["u1", "u2"]}')
    total = 0
    for entity, keys in entities.items():
        check_name("entity", entity)
        if isinstance(keys, str) or not isinstance(keys, Sequence):
            raise InvalidInput(f"entities.{entity}: expected a list of keys")
        total += len(keys)
        for i, key in enumerate(keys):
            _check_key(key, f"entities.{entity}[{i}]")
    if total > MAX_KEYS:
        raise InvalidInput(f"ask for at most {MAX_KEYS} entity keys per call, got {total}")


def _check_key(key: object, where: str) -> str:
    if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY_CHARS:
        raise InvalidInput(f"{where}: an entity key is a string of 1-{MAX_KEY_CHARS} characters")
    if "\x00" in key:  # PostgreSQL text cannot hold it
        raise InvalidInput(f"{where}: an entity key cannot contain NUL characters")
    return check_unicode(key, where)


def _row(
    view: FeatureView, i: int, row: Mapping[str, Any], now: float, string_chars: int
) -> FeatureRow:
    where = f"rows[{i}]"
    if not isinstance(row, Mapping):
        raise InvalidInput(f"{where}: expected an object with entity, values, event_timestamp")
    unknown = set(row) - {"entity", "values", "event_timestamp"}
    if unknown:
        raise InvalidInput(f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
    entity = _check_key(row.get("entity"), f"{where}.entity")
    raw = row.get("values")
    if not isinstance(raw, Mapping):
        raise InvalidInput(f"{where}.values: expected an object of feature -> value")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        spec = view.spec(name) if isinstance(name, str) else None
        if spec is None:
            raise InvalidInput(
                f"{where}.values: feature view '{view.name}' has no feature {name!r}; "
                f"it has: {', '.join(s.name for s in view.features)}"
            )
        if value is not None:  # null: no value, reads as missing
            values[name] = check_value(spec.dtype, value, f"{where}.values.{name}")
            if spec.dtype == "string" and len(values[name]) > string_chars:
                raise PayloadTooLarge(
                    f"{where}.values.{name}: a string feature value holds at most "
                    f"{string_chars} characters, got {len(values[name])} "
                    "(MODELPORT_FEATURE_MAX_STRING_CHARS)"
                )
    if "event_timestamp" not in row:
        raise InvalidInput(f"{where}.event_timestamp is required")
    ts = parse_event_time(row["event_timestamp"], f"{where}.event_timestamp", now)
    return FeatureRow(entity, values, ts)
