"""A catalog product as the search indexes see it: its texts, its embedded text, its facets.

The product arrives as the catalog stream carries it (``Product.to_json``). Each text field is
indexed on its own by the lexical index (weights apply at query time). The embedding model
reads one string: the fields with a positive weight in descending weight order, so a long
description is what the model's token limit cuts, never the title.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelport.settings import SEARCH_FIELDS, SearchTenantConfig, Settings
from modelport.stores.search_filter import Facets

CATEGORY_SEPARATOR = " > "


@dataclass(frozen=True, slots=True)
class TenantSearch:
    """One tenant's search configuration, the defaults and its overrides merged."""

    embedding_model: str
    fields: dict[str, float]
    rrf_k: float
    rerank_model: str | None
    rerank_depth: int

    def fingerprint(self) -> str:
        """What an index built under this configuration depends on (model and embedded text)."""
        ordered = ",".join(f"{name}:{weight:g}" for name, weight in self.embedded_fields())
        return f"{self.embedding_model}|{ordered}"

    def embedded_fields(self) -> list[tuple[str, float]]:
        return sorted(
            ((n, w) for n, w in self.fields.items() if w > 0), key=lambda item: (-item[1], item[0])
        )


def check_fields(fields: Mapping[str, float]) -> dict[str, float]:
    unknown = sorted(set(fields) - set(SEARCH_FIELDS))
    if unknown:
        raise ValueError(f"search fields are {', '.join(SEARCH_FIELDS)}; not {unknown[0]!r}")
    if any(w < 0 for w in fields.values()) or not any(w > 0 for w in fields.values()):
        raise ValueError("search field weights must be >= 0, one of them > 0")
    return dict(fields)


class SearchConfigs:
    """Every tenant's :class:`TenantSearch`, from the settings (checked once, at start)."""

    def __init__(self, settings: Settings) -> None:
        self._default = TenantSearch(
            embedding_model=settings.search_embedding_model,
            fields=check_fields(settings.search_fields),
            rrf_k=settings.search_rrf_k,
            rerank_model=settings.search_rerank_model,
            rerank_depth=settings.search_rerank_depth,
        )
        self._tenants = {t: self._merge(c) for t, c in settings.search_tenants.items()}

    def _merge(self, c: SearchTenantConfig) -> TenantSearch:
        d = self._default
        return TenantSearch(
            embedding_model=c.embedding_model or d.embedding_model,
            fields=d.fields if c.fields is None else check_fields(c.fields),
            rrf_k=c.rrf_k or d.rrf_k,
            rerank_model=c.rerank_model if c.rerank_model is not None else d.rerank_model,
            rerank_depth=c.rerank_depth or d.rerank_depth,
        )

    def of(self, tenant: str) -> TenantSearch:
        return self._tenants.get(tenant, self._default)


def texts(product: Mapping[str, Any]) -> dict[str, str]:
    """Every search field of ``product`` as text (the lexical index holds them all)."""
    attributes = product.get("attributes") or {}
    return {
        "title": str(product.get("title") or ""),
        "brand": str(product.get("brand") or ""),
        "category": CATEGORY_SEPARATOR.join(product.get("category") or ()),
        "attributes": "; ".join(f"{k}: {_value(v)}" for k, v in sorted(attributes.items())),
        "description": str(product.get("description") or ""),
    }


def embedded_text(fields: Mapping[str, str], config: TenantSearch, max_chars: int) -> str:
    parts = [fields[name] for name, _ in config.embedded_fields() if fields.get(name)]
    return ". ".join(parts)[:max_chars]


def facets(product: Mapping[str, Any]) -> Facets:
    price = product.get("price")
    return Facets(
        category=tuple(product.get("category") or ()),
        brand=product.get("brand"),
        price=None if not price else int(price["amount"]),
        availability=str(product.get("availability") or "in_stock"),
        attributes=dict(product.get("attributes") or {}),
    )


def _value(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(_value(v) for v in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)
