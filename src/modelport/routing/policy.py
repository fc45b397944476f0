"""Routing policies: which version of a model serves a request.

A policy names *targets* (an alias such as ``production`` or a version number) and is compiled
against the model's aliases into a :class:`Route` of concrete versions. Sticky assignment hashes
``(model, routing key)`` with SHA-256, so a key lands in the same bucket in every replica and
every process, and keeps its version for as long as the weights hold.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from modelport.errors import InvalidInput

#: Unpinned traffic follows this alias when a model has no routing policy of its own.
PRODUCTION = "production"


@dataclass(frozen=True, slots=True)
class Split:
    target: str
    weight: float


@dataclass(frozen=True, slots=True)
class ShadowSpec:
    target: str
    percent: float
    """Share of requests (0-100) that are also sent to the shadow target."""
    tolerance: float = 1e-4
    """Outputs within this absolute difference of the primary's count as matching."""


@dataclass(frozen=True, slots=True)
class RoutingPolicy:
    splits: tuple[Split, ...] = ()
    sticky_key: str | None = None
    """Request parameter (or the ``X-Routing-Key`` header) whose value pins a caller's bucket."""
    shadow: ShadowSpec | None = None
    fallback: str | None = None
    """Target that a failed request is retried on, once."""

    def targets(self) -> set[str]:
        found = {s.target for s in self.splits}
        if self.shadow is not None:
            found.add(self.shadow.target)
        if self.fallback is not None:
            found.add(self.fallback)
        return found

    def to_dict(self) -> dict[str, Any]:
        return {
            "splits": [{"target": s.target, "weight": s.weight} for s in self.splits],
            "sticky_key": self.sticky_key,
            "shadow": None
            if self.shadow is None
            else {
                "target": self.shadow.target,
                "percent": self.shadow.percent,
                "tolerance": self.shadow.tolerance,
            },
            "fallback": self.fallback,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> RoutingPolicy:
        shadow = raw.get("shadow")
        return cls(
            splits=tuple(
                Split(str(s["target"]), float(s["weight"])) for s in raw.get("splits", ())
            ),
            sticky_key=raw.get("sticky_key"),
            shadow=None
            if not shadow
            else ShadowSpec(
                str(shadow["target"]),
                float(shadow["percent"]),
                float(shadow.get("tolerance", 1e-4)),
            ),
            fallback=raw.get("fallback"),
        )


def bucket(model: str, key: str) -> float:
    """A stable point in [0, 1) for ``key``: the same in every replica and every run."""
    digest = hashlib.sha256(f"{model}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def resolve_target(target: str, aliases: Mapping[str, str]) -> str | None:
    """The version a target names: an alias's version, or the version number itself."""
    if target.isdigit():
        return target
    return aliases.get(target)


@dataclass(frozen=True, slots=True)
class Route:
    """A policy compiled to concrete versions; what the request path consults."""

    model: str
    versions: tuple[str, ...]
    cumulative: tuple[float, ...]
    """Cumulative weights normalised to end at 1.0, one per version."""
    sticky_key: str | None = None
    shadow_version: str | None = None
    shadow_fraction: float = 0.0
    shadow_tolerance: float = 1e-4
    fallback_version: str | None = None
    aliases: Mapping[str, str] = field(default_factory=dict)

    def choose(self, key: str | None = None, rng: random.Random | None = None) -> str:
        if len(self.versions) == 1:
            return self.versions[0]
        if key is not None:
            point = bucket(self.model, key)
        else:
            point = (rng or _RNG).random()
        index = bisect.bisect_right(self.cumulative, point)
        return self.versions[min(index, len(self.versions) - 1)]

    def needed(self) -> set[str]:
        """Every version this route can send a request to."""
        found = set(self.versions)
        if self.shadow_version is not None:
            found.add(self.shadow_version)
        if self.fallback_version is not None:
            found.add(self.fallback_version)
        return found


_RNG = random.Random()  # noqa: S311 - traffic splitting, not security


def compile_route(
    model: str,
    policy: RoutingPolicy | None,
    aliases: Mapping[str, str],
    *,
    override: Sequence[tuple[str, float]] | None = None,
) -> Route | None:
    """The route for ``policy`` under ``aliases``; ``override`` (concrete versions and weights,
    a rollout's split) replaces the policy's splits. None when nothing routes the model: it then
    falls back to its newest ready version."""
    weighted: list[tuple[str, float]] = []
    if override is not None:
        weighted = [(v, w) for v, w in override if w > 0]
    elif policy is not None and policy.splits:
        for split in policy.splits:
            version = resolve_target(split.target, aliases)
            if version is None:
                raise InvalidInput(
                    f"routing target '{split.target}' of model '{model}' is not an alias "
                    "or a version"
                )
            if split.weight > 0:
                weighted.append((version, split.weight))
    elif PRODUCTION in aliases:
        weighted = [(aliases[PRODUCTION], 1.0)]
    if not weighted:
        return None
    merged: dict[str, float] = {}
    for version, weight in weighted:
        merged[version] = merged.get(version, 0.0) + weight
    versions = tuple(sorted(merged, key=int))
    total = sum(merged.values())
    running = 0.0
    cumulative: list[float] = []
    for version in versions:
        running += merged[version] / total
        cumulative.append(running)
    cumulative[-1] = 1.0
    shadow_version = fallback_version = None
    shadow_fraction, tolerance = 0.0, 1e-4
    if policy is not None and policy.shadow is not None:
        shadow_version = resolve_target(policy.shadow.target, aliases)
        shadow_fraction = policy.shadow.percent / 100.0
        tolerance = policy.shadow.tolerance
    if policy is not None and policy.fallback is not None:
        fallback_version = resolve_target(policy.fallback, aliases)
    return Route(
        model=model,
        versions=versions,
        cumulative=tuple(cumulative),
        sticky_key=policy.sticky_key if policy is not None else None,
        shadow_version=shadow_version,
        shadow_fraction=shadow_fraction if shadow_version is not None else 0.0,
        shadow_tolerance=tolerance,
        fallback_version=fallback_version,
        aliases=dict(aliases),
    )
