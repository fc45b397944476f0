"""The routes this replica serves right now: what the request path reads, one dict lookup."""

from __future__ import annotations

from dataclasses import dataclass, field

from modelport.routing.policy import Route


@dataclass(frozen=True, slots=True)
class ModelRouting:
    """One model's installed routing: every version it names is READY in this replica."""

    route: Route | None
    """None: unpinned requests go to the newest READY version."""
    aliases: dict[str, str]


@dataclass(slots=True)
class RouteTable:
    installed: dict[tuple[str, str], ModelRouting] = field(default_factory=dict)
    pending: set[tuple[str, str]] = field(default_factory=set)
    """Models whose routing exists but is not installed yet (its versions are loading)."""
    switching: set[tuple[str, str]] = field(default_factory=set)
    """Models that were served unrouted (newest READY version) when their first routing
    appeared: unpinned traffic keeps going there until that routing is installed."""

    def get(self, tenant: str, model: str) -> ModelRouting | None:
        return self.installed.get((tenant, model))
