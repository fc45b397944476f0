"""Per-replica request counts and latency histograms of each version, for the rollout guard.

Each replica replaces its own cumulative row per version; readers sum the rows of every
replica. The histogram's buckets are opaque here: they add up position by position.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from modelport.stores.model_rows import now
from modelport.stores.sql.schema import version_stats


@dataclass(frozen=True, slots=True)
class VersionCounts:
    requests: int = 0
    errors: int = 0
    latency: list[int] = field(default_factory=list)

    def add(self, other: VersionCounts) -> VersionCounts:
        size = max(len(self.latency), len(other.latency))
        mine = self.latency + [0] * (size - len(self.latency))
        theirs = other.latency + [0] * (size - len(other.latency))
        return VersionCounts(
            self.requests + other.requests,
            self.errors + other.errors,
            [a + b for a, b in zip(mine, theirs, strict=True)],
        )

    def to_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "errors": self.errors, "latency": list(self.latency)}


class VersionStatsStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def publish(
        self, replica: str, rows: Iterable[tuple[str, str, str, VersionCounts]]
    ) -> None:
        """Write this replica's cumulative counts (one row per version, replaced)."""
        values = [
            {
                "replica": replica,
                "tenant": tenant,
                "model": model,
                "version": int(version),
                "requests": counts.requests,
                "errors": counts.errors,
                "latency": list(counts.latency),
                "updated_at": now(),
            }
            for tenant, model, version, counts in rows
        ]
        if not values:
            return
        async with self._engine.begin() as conn:
            dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
            stmt = dialect.insert(version_stats).values(values)
            stmt = stmt.on_conflict_do_update(
                index_elements=["replica", "tenant", "model", "version"],
                set_={
                    "requests": stmt.excluded.requests,
                    "errors": stmt.excluded.errors,
                    "latency": stmt.excluded.latency,
                    "updated_at": stmt.excluded.updated_at,
                },
            )
            await conn.execute(stmt)

    async def summed(
        self, tenant: str, model: str, versions: Sequence[str]
    ) -> dict[str, VersionCounts]:
        """Each version's counts summed over every replica that ever served it."""
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(version_stats).where(
                        version_stats.c.tenant == tenant,
                        version_stats.c.model == model,
                        version_stats.c.version.in_([int(v) for v in versions]),
                    )
                )
            ).all()
        out = {v: VersionCounts() for v in versions}
        for row in rows:
            key = str(row.version)
            found = VersionCounts(int(row.requests), int(row.errors), [int(c) for c in row.latency])
            out[key] = out[key].add(found)
        return out

    async def prune(self, older_than: dt.timedelta) -> int:
        """Forget rows of replicas that stopped writing long ago and serve no rollout."""
        cutoff = now() - older_than
        async with self._engine.begin() as conn:
            result = await conn.execute(
                delete(version_stats).where(version_stats.c.updated_at < cutoff)
            )
        return int(result.rowcount or 0)
