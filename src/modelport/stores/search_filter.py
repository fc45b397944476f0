"""What a search filter can ask of an item, and its evaluation to a mask over index slots.

Both retrievers apply the same :class:`SearchFilter` *inside* their search: the vector index
turns it into a boolean mask over its slots (:class:`FacetColumns`) that the graph search checks
at every node; the lexical index turns it into query clauses. The semantics match the catalog's
SQL listing filters (``stores/catalog.py``): a category prefix by whole levels, one of some
brands, a price range in minor units (cents), one of some availabilities, attribute equality
(an attribute holding a list matches when it contains the value).

Columns are dictionary-encoded: a filter costs one ``numpy.isin`` per clause over small integer
codes, about 1 ms per clause at 1M items, whatever the number of distinct values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

Scalar = str | int | float | bool


@dataclass(frozen=True, slots=True)
class Facets:
    """The filterable fields of one item (a catalog product)."""

    category: tuple[str, ...] = ()
    brand: str | None = None
    price: int | None = None
    """Minor units (cents), as the catalog stores it."""
    availability: str = "in_stock"
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SearchFilter:
    """Every clause given must hold (AND); inside a clause, any listed value matches (OR)."""

    category: tuple[str, ...] = ()
    """A category path prefix, by whole levels: ("Home",) matches ("Home", "Kitchen")."""
    brands: tuple[str, ...] = ()
    min_price: int | None = None
    max_price: int | None = None
    availability: tuple[str, ...] = ()
    attributes: tuple[tuple[str, Scalar], ...] = ()
    """(name, value) pairs, each required."""

    @property
    def is_empty(self) -> bool:
        return not (
            self.category
            or self.brands
            or self.min_price is not None
            or self.max_price is not None
            or self.availability
            or self.attributes
        )


def attribute_terms(attributes: dict[str, Any]) -> list[tuple[str, Scalar]]:
    """An item's attributes as (name, value) terms; a list value gives one term per element."""
    terms: list[tuple[str, Scalar]] = []
    for name, value in attributes.items():
        for v in value if isinstance(value, list | tuple) else (value,):
            if isinstance(v, str | int | float | bool):
                terms.append((name, v))
    return terms


def term_key(name: str, value: Scalar) -> str:
    # bool before int: True == 1 must not match an attribute equal to 1.
    kind = "b" if isinstance(value, bool) else "n" if isinstance(value, int | float) else "s"
    if kind == "n":
        value = float(value)
    return f"{name}\x1f{kind}\x1f{value}"


def _term_value(key: str) -> tuple[str, Scalar]:
    """The (name, value) a ``term_key`` was made of."""
    name, kind, raw = key.split("\x1f", 2)
    if kind == "b":
        return name, raw == "True"
    if kind == "n":
        number = float(raw)
        return name, int(number) if number.is_integer() else number
    return name, raw


class _Codes:
    """One dictionary-encoded column: value -> small int code, per slot."""

    def __init__(self) -> None:
        self.values: dict[Any, int] = {}
        self.column = np.zeros(0, dtype=np.int32)
        self._by_code: dict[int, Any] = {}

    def code(self, value: Any) -> int:
        return self.values.setdefault(value, len(self.values))

    def value_of(self, code: int) -> Any:
        if len(self._by_code) != len(self.values):
            self._by_code = {c: v for v, c in self.values.items()}
        return self._by_code.get(code)

    def codes_where(self, predicate: Any) -> list[int]:
        return [c for v, c in self.values.items() if predicate(v)]


class FacetColumns:
    """The facets of every slot of an index, in columns; ``mask(filter)`` gives allowed slots."""

    def __init__(self) -> None:
        self._size = 0
        self._category = _Codes()
        self._brand = _Codes()
        self._availability = _Codes()
        self._price = np.zeros(0, dtype=np.float64)  # NaN: no price
        self._terms: dict[str, set[int]] = {}  # attribute term -> slots
        self._term_arrays: dict[str, np.ndarray] = {}  # the same as arrays, made when asked
        self._slot_terms: dict[int, list[str]] = {}

    def _grow(self, size: int) -> None:
        if size <= self._size:
            return
        capacity = max(size, 2 * self._size, 1024)
        for codes in (self._category, self._brand, self._availability):
            column = np.zeros(capacity, dtype=np.int32)
            column[: len(codes.column)] = codes.column
            codes.column = column
        price = np.full(capacity, np.nan)
        price[: len(self._price)] = self._price
        self._price = price
        self._size = capacity

    def set(self, slot: int, facets: Facets) -> None:
        self._grow(slot + 1)
        self._category.column[slot] = self._category.code(facets.category)
        self._brand.column[slot] = self._brand.code(facets.brand)
        self._availability.column[slot] = self._availability.code(facets.availability)
        self._price[slot] = np.nan if facets.price is None else facets.price
        self.clear_terms(slot)
        keys = [term_key(n, v) for n, v in attribute_terms(facets.attributes)]
        for key in keys:
            self._terms.setdefault(key, set()).add(slot)
            self._term_arrays.pop(key, None)
        self._slot_terms[slot] = keys

    def get(self, slot: int) -> Facets:
        """The facets stored for ``slot`` (attributes as lists of their values)."""
        category = self._category.value_of(int(self._category.column[slot]))
        price = float(self._price[slot])
        attributes: dict[str, Any] = {}
        for key in self._slot_terms.get(slot, ()):
            name, value = _term_value(key)
            attributes.setdefault(name, []).append(value)
        return Facets(
            category=tuple(category or ()),
            brand=self._brand.value_of(int(self._brand.column[slot])),
            price=None if np.isnan(price) else int(price),
            availability=self._availability.value_of(int(self._availability.column[slot])),
            attributes=attributes,
        )

    def clear_terms(self, slot: int) -> None:
        for key in self._slot_terms.pop(slot, ()):
            self._term_arrays.pop(key, None)
            slots = self._terms.get(key)
            if slots is not None:
                slots.discard(slot)
                if not slots:
                    del self._terms[key]

    def mask(self, where: SearchFilter, size: int) -> np.ndarray:
        """Allowed slots among the first ``size`` (liveness is the caller's business)."""
        self._grow(size)
        allowed = np.ones(size, dtype=bool)
        if where.category:
            prefix = where.category
            codes = self._category.codes_where(lambda path: path[: len(prefix)] == prefix)
            allowed &= np.isin(self._category.column[:size], codes)
        if where.brands:
            codes = self._brand.codes_where(lambda b: b in where.brands)
            allowed &= np.isin(self._brand.column[:size], codes)
        if where.availability:
            codes = self._availability.codes_where(lambda a: a in where.availability)
            allowed &= np.isin(self._availability.column[:size], codes)
        price = self._price[:size]
        if where.min_price is not None:
            allowed &= price >= where.min_price
        if where.max_price is not None:
            allowed &= price <= where.max_price
        for name, value in where.attributes:
            ids = self._term_slots(term_key(name, value))
            term = np.zeros(size, dtype=bool)
            term[ids[ids < size]] = True
            allowed &= term
        return allowed

    def _term_slots(self, key: str) -> np.ndarray:
        ids = self._term_arrays.get(key)
        if ids is None:
            slots = self._terms.get(key, set())
            ids = self._term_arrays[key] = np.fromiter(slots, dtype=np.int64, count=len(slots))
        return ids

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Everything a snapshot needs: plain data for its header, and numpy columns."""
        terms = sorted(self._terms)
        code = {t: i for i, t in enumerate(terms)}
        pairs = [(s, code[k]) for s, keys in self._slot_terms.items() for k in keys]
        meta = {
            "category": [list(v) for v in self._category.values],
            "brand": list(self._brand.values),
            "availability": list(self._availability.values),
            "terms": terms,
        }
        arrays: dict[str, np.ndarray] = {
            "category": self._category.column[: self._size],
            "brand": self._brand.column[: self._size],
            "availability": self._availability.column[: self._size],
            "price": self._price[: self._size],
            "term_slot": np.array([p[0] for p in pairs], dtype=np.int64),
            "term_code": np.array([p[1] for p in pairs], dtype=np.int64),
        }
        return meta, arrays

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> FacetColumns:
        columns = cls()
        columns._size = len(arrays["price"])
        for codes, values, name in (
            (columns._category, [tuple(v) for v in meta["category"]], "category"),
            (columns._brand, meta["brand"], "brand"),
            (columns._availability, meta["availability"], "availability"),
        ):
            codes.values = {v: i for i, v in enumerate(values)}
            codes.column = arrays[name].astype(np.int32)
        columns._price = arrays["price"].astype(np.float64)
        terms = meta["terms"]
        for slot, term in zip(
            arrays["term_slot"].tolist(), arrays["term_code"].tolist(), strict=True
        ):
            columns._slot_terms.setdefault(slot, []).append(terms[term])
            columns._terms.setdefault(terms[term], set()).add(slot)
        return columns
