"""Demo behavioural events over the demo catalog's products: shoppers browsing in sessions.

Deterministic for a seed: the same event ids, users, sessions, items and order every time
(timestamps are placed in the two days before ``now``, so that they fall in the accepted
window), so loading them again at the next ``modelport demo`` is a no-op (duplicates). A few
products are much more popular than the rest (a Zipf-like draw), shoppers stay within a
category, and sessions run view -> add_to_cart -> purchase with falling probability.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Sequence
from typing import Any

#: Events per ``POST /v1/events`` call when the demo loads them.
BATCH = 1000


def events(
    product_ids: Sequence[str],
    sessions: int = 1500,
    seed: int = 11,
    now: float | None = None,
) -> Iterator[dict[str, Any]]:
    """About 6 events per session over ``product_ids``, oldest first."""
    if not product_ids:
        return
    rng = random.Random(seed)  # noqa: S311 - demo data, deterministic on purpose
    end = time.time() if now is None else now
    span = 2 * 86_400.0
    ranked = list(product_ids)
    rng.shuffle(ranked)
    weights = [1.0 / (rank + 1) ** 0.8 for rank in range(len(ranked))]
    users = [f"user-{n:04d}" for n in range(400)]
    n = 0
    for s in range(sessions):
        # Sessions end an hour before now at the latest: inside the accepted window.
        start = end - 3600 - span + span * s / sessions
        user = rng.choice(users) if rng.random() < 0.7 else None
        session = f"session-{s:05d}"
        first = rng.choices(ranked, weights)[0]
        # Stay near the first product: same SKU prefix (its category), else anything popular.
        prefix = first.split("-")[0]
        near = [p for p in ranked[:400] if p.startswith(prefix)] or ranked[:50]
        at = start
        for item in [first, *rng.sample(near, min(len(near), rng.randint(1, 6)))]:
            at += rng.uniform(5, 90)
            n += 1
            yield _event(n, "view", user, session, item, at)
            if rng.random() < 0.15:
                at += rng.uniform(5, 60)
                n += 1
                yield _event(n, "add_to_cart", user, session, item, at)
                if rng.random() < 0.4:
                    at += rng.uniform(30, 300)
                    n += 1
                    yield _event(n, "purchase", user, session, item, at)


def _event(
    n: int, kind: str, user: str | None, session: str, item: str, at: float
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": f"demo-{n:06d}",
        "type": kind,
        "session_id": session,
        "item_ids": [item],
        "timestamp": round(at, 3),
    }
    if user is not None:
        event["user_id"] = user
    return event
