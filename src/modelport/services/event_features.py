"""Online features from behavioural events: recent items, decayed popularity, co-occurrence.

Three feature views are defined in each tenant the first time its events arrive (applying an
unchanged definition again changes nothing):

    user_recent        entity user (user_id, else session_id)
        view, click, add_to_cart, purchase   the last N item ids of that type, newest first,
                                             as a JSON array in a string
        last_seen                            the newest event time seen (epoch seconds)
    item_popularity    entity item
        views, carts, purchases              counts decayed with MODELPORT_EVENT_POPULARITY_
                                             HALF_LIFE_S, as of ``as_of`` (the item's newest
                                             event); to compare items at time t, multiply by
                                             2 ** (-(t - as_of) / half_life)
        views_total, carts_total, purchases_total   plain counts
        as_of
    item_cooccurrence  entity item
        co_view, co_purchase                 the items most often seen (bought) in the same
                                             session within MODELPORT_EVENT_SESSION_WINDOW_S,
                                             a JSON object item -> sessions, highest first

Exactly once: the aggregates live in SQL (``event_feature_state``) and change in the transaction
that records the batch's message keys in ``processed_messages`` (``stores.event_features``); a
redelivered message finds its key and changes nothing. After the commit, the changed
aggregates are written to the online store as whole rows whose event time is the aggregate's
version (it only grows), so the newest aggregate wins whichever worker writes last, and writing
again is harmless. A redelivery therefore writes its entities' current aggregates again: a
worker that died between the commit and that write leaves nothing missing.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from modelport.services.features import FeatureService
from modelport.stores.event_features import FeatureStateStore, State, StateKey
from modelport.stores.online import FeatureRow, FeatureSpec, FeatureView
from modelport.stores.streams import Message

USER_RECENT = "user_recent"
ITEM_POPULARITY = "item_popularity"
ITEM_COOCCURRENCE = "item_cooccurrence"
_SESSION = "session"
"""Internal: the items a session saw recently (not projected)."""
RECENT_TYPES = ("view", "click", "add_to_cart", "purchase")
_POPULAR = {"view": "views", "add_to_cart": "carts", "purchase": "purchases"}
_COOCCURRING = {"view": "v", "purchase": "p"}
#: Distinct items a session remembers per kind (views, purchases) for co-occurrence.
SESSION_ITEMS = 50
VIEW_TTL_S = 30 * 86_400.0
SESSION_PURGE_EVERY_S = 60.0
SESSION_PURGE_CHUNK = 5000
#: How long a processed message key is remembered.
PROCESSED_KEEP_S = 7 * 86_400.0
ACTOR = "modelport:events"

VIEWS: dict[str, tuple[str, tuple[FeatureSpec, ...]]] = {
    USER_RECENT: (
        "user",
        (
            *(FeatureSpec(kind, "string", "[]") for kind in RECENT_TYPES),
            FeatureSpec("last_seen", "float", None),
        ),
    ),
    ITEM_POPULARITY: (
        "item",
        (
            FeatureSpec("views", "float", 0.0),
            FeatureSpec("carts", "float", 0.0),
            FeatureSpec("purchases", "float", 0.0),
            FeatureSpec("views_total", "int", 0),
            FeatureSpec("carts_total", "int", 0),
            FeatureSpec("purchases_total", "int", 0),
            FeatureSpec("as_of", "float", None),
        ),
    ),
    ITEM_COOCCURRENCE: (
        "item",
        (FeatureSpec("co_view", "string", "{}"), FeatureSpec("co_purchase", "string", "{}")),
    ),
}


@dataclass(frozen=True, slots=True)
class EventFeatureConfig:
    recent_items: int = 20
    half_life_s: float = 86_400.0
    session_window_s: float = 1800.0
    cooccurrence_top: int = 50


class EventFeatures:
    """Applies batches of the ``events`` topic to the aggregates and the online store."""

    def __init__(
        self,
        states: FeatureStateStore,
        features: FeatureService,
        config: EventFeatureConfig | None = None,
    ) -> None:
        self._states = states
        self._features = features
        self._config = config or EventFeatureConfig()
        self._views: dict[tuple[str, str], FeatureView] = {}
        self._next_purge = 0.0

    async def apply(self, group: str, messages: list[Message]) -> None:
        if not messages:
            return
        async with self._states.transaction() as tx:
            fresh = await tx.claim(group, (m.tenant for m in messages), [m.key for m in messages])
            new, old = [], []
            for message in messages:
                if message.key in fresh:
                    new.append(message)
                    fresh.discard(message.key)  # a key twice in one batch applies once
                else:
                    old.append(message)
            states = await tx.load(_first_keys(messages))
            states.update(await tx.load(_partner_keys(messages, states)))
            changed = self._apply(new, states)
            await tx.save(changed)
        # Redeliveries write their entities' aggregates again (see the module docstring).
        again = set(_first_keys(old)) | set(_partner_keys(old, states))
        await self._project({k: s for k, s in states.items() if k in changed or k in again})
        if time.monotonic() >= self._next_purge:
            self._next_purge = time.monotonic() + SESSION_PURGE_EVERY_S
            await self.purge_sessions()
            await self.purge_processed(group)

    async def purge_processed(self, group: str, now: float | None = None) -> int:
        """Forget (at most 5,000) processed keys older than ``PROCESSED_KEEP_S``: a message is
        redelivered within minutes of its publication (a dead worker's pending messages, a
        relay that died between publishing and deleting), and intake refuses a repeated
        event id for the whole retention, so no key that old can come back."""
        at = time.time() if now is None else now
        before = dt.datetime.fromtimestamp(at - PROCESSED_KEEP_S, dt.UTC)
        return await self._states.purge_processed(group, before, SESSION_PURGE_CHUNK)

    async def purge_sessions(self, now: float | None = None) -> int:
        """Forget (at most 5,000) sessions without events for twice the session window: they
        can pair no new item. Run by the consumer itself once a minute."""
        at = time.time() if now is None else now
        idle = 2 * self._config.session_window_s
        return await self._states.purge(_SESSION, at - idle, SESSION_PURGE_CHUNK)

    def _apply(
        self, messages: list[Message], states: dict[StateKey, State]
    ) -> dict[StateKey, State]:
        config = self._config
        changed: dict[StateKey, State] = {}

        def touch(key: StateKey) -> dict[str, Any]:
            changed[key] = states[key]
            return states[key].data

        for message in messages:
            tenant, event = message.tenant, message.payload
            kind, ts, items = event["type"], float(event["ts"]), event["items"]
            who = event.get("user") or event.get("session")
            session = event.get("session") or event.get("user")
            if kind in RECENT_TYPES and who and items:
                add_recent(touch((tenant, USER_RECENT, who)), kind, items, ts, config.recent_items)
            if kind in _POPULAR:
                for item in dict.fromkeys(items):
                    add_popularity(
                        touch((tenant, ITEM_POPULARITY, item)),
                        _POPULAR[kind],
                        ts,
                        config.half_life_s,
                    )
            short = _COOCCURRING.get(kind)
            if short and session:
                seen = touch((tenant, _SESSION, session))
                for item in dict.fromkeys(items):
                    for partner in add_to_session(seen, short, item, ts, config.session_window_s):
                        top = config.cooccurrence_top
                        count_pair(touch((tenant, ITEM_COOCCURRENCE, item)), short, partner, top)
                        count_pair(touch((tenant, ITEM_COOCCURRENCE, partner)), short, item, top)
        now = time.time()
        for state in changed.values():
            state.version = max(now, state.version + 1e-6)
        return changed

    async def _project(self, states: dict[StateKey, State]) -> None:
        rows: dict[tuple[str, str], list[FeatureRow]] = {}
        for (tenant, kind, entity), state in states.items():
            if kind == _SESSION or not state.data:
                continue
            rows.setdefault((tenant, kind), []).append(
                FeatureRow(entity, project(kind, state.data, self._config), state.version)
            )
        for (tenant, kind), found in sorted(rows.items()):
            view = await self._view(tenant, kind)
            await self._features.online.write(view, found)

    async def _view(self, tenant: str, name: str) -> FeatureView:
        view = self._views.get((tenant, name))
        if view is None:
            entity, specs = VIEWS[name]
            applied = await self._features.apply_view(
                tenant, name, entity, list(specs), VIEW_TTL_S, ACTOR
            )
            view = self._views[(tenant, name)] = applied.view
        return view


def _first_keys(messages: Iterable[Message]) -> list[StateKey]:
    """The aggregates an event names directly."""
    keys: list[StateKey] = []
    for message in messages:
        tenant, event = message.tenant, message.payload
        kind, items = event["type"], event["items"]
        who = event.get("user") or event.get("session")
        if kind in RECENT_TYPES and who and items:
            keys.append((tenant, USER_RECENT, who))
        if kind in _POPULAR:
            keys += [(tenant, ITEM_POPULARITY, item) for item in items]
        session = event.get("session") or event.get("user")
        if kind in _COOCCURRING and session:
            keys.append((tenant, _SESSION, session))
            keys += [(tenant, ITEM_COOCCURRENCE, item) for item in items]
    return keys


def _partner_keys(messages: Iterable[Message], states: dict[StateKey, State]) -> list[StateKey]:
    """The co-occurrence aggregates of the items the events' sessions saw (their partners)."""
    keys: list[StateKey] = []
    for message in messages:
        event = message.payload
        session = event.get("session") or event.get("user")
        if event["type"] not in _COOCCURRING or not session:
            continue
        seen = states.get((message.tenant, _SESSION, session))
        if seen is None:
            continue
        for items in seen.data.values():
            keys += [(message.tenant, ITEM_COOCCURRENCE, item) for item in items]
    return keys


# --------------------------------------------------------------------------- aggregates
# Pure functions on one aggregate (a JSON-able dict), so the unit tests need no database.


def add_recent(state: dict[str, Any], kind: str, items: list[str], ts: float, keep: int) -> None:
    """The newest ``keep`` distinct items of ``kind`` by event time; the order events arrive
    in does not matter."""
    latest = {item: t for t, item in state.get(kind, [])}
    for item in items:
        if ts > latest.get(item, -math.inf):
            latest[item] = ts
    ordered = sorted(latest.items(), key=lambda pair: (-pair[1], pair[0]))[:keep]
    state[kind] = [[t, item] for item, t in ordered]
    state["last_seen"] = max(ts, state.get("last_seen", ts))


def add_popularity(state: dict[str, Any], name: str, ts: float, half_life_s: float) -> None:
    """Add one event to the decayed counts, kept as of the newest event time (``as_of``):
    the same events give the same counts in any order."""
    ref = state.get("as_of")
    if ref is None:
        state["as_of"] = ref = ts
    elif ts > ref:
        factor = 2.0 ** (-(ts - ref) / half_life_s)
        for counted in _POPULAR.values():
            state[counted] = state.get(counted, 0.0) * factor
        state["as_of"] = ref = ts
    state[name] = state.get(name, 0.0) + 2.0 ** (-(ref - ts) / half_life_s)
    state[name + "_total"] = state.get(name + "_total", 0) + 1


def add_to_session(
    session: dict[str, Any], kind: str, item: str, ts: float, window_s: float
) -> list[str]:
    """Note that the session saw ``item``; the items it pairs with for the first time (seen
    within ``window_s`` of it). A pair counts once per session."""
    seen: dict[str, float] = session.setdefault(kind, {})
    if item in seen:
        seen[item] = max(seen[item], ts)
        return []
    partners = sorted(other for other, at in seen.items() if abs(ts - at) <= window_s)
    seen[item] = ts
    if len(seen) > SESSION_ITEMS:
        oldest = min(seen.items(), key=lambda pair: (pair[1], pair[0]))[0]
        del seen[oldest]
    return partners


def count_pair(state: dict[str, Any], kind: str, partner: str, top: int) -> None:
    counts: dict[str, int] = state.setdefault(kind, {})
    counts[partner] = counts.get(partner, 0) + 1
    if len(counts) > 4 * top:  # keep a margin, so a rising pair is not forgotten at once
        kept = sorted(counts.items(), key=lambda pair: (-pair[1], pair[0]))[: 2 * top]
        state[kind] = dict(kept)


def project(kind: str, state: dict[str, Any], config: EventFeatureConfig) -> dict[str, Any]:
    """The online row of one aggregate."""
    if kind == USER_RECENT:
        values: dict[str, Any] = {
            name: orjson.dumps([item for _, item in state.get(name, [])]).decode()
            for name in RECENT_TYPES
        }
        values["last_seen"] = state.get("last_seen")
        return values
    if kind == ITEM_POPULARITY:
        values = {"as_of": state.get("as_of")}
        for counted in _POPULAR.values():
            values[counted] = float(state.get(counted, 0.0))
            values[counted + "_total"] = int(state.get(counted + "_total", 0))
        return values
    top = config.cooccurrence_top
    return {
        name: orjson.dumps(
            dict(sorted(state.get(short, {}).items(), key=lambda p: (-p[1], p[0]))[:top])
        ).decode()
        for name, short in (("co_view", "v"), ("co_purchase", "p"))
    }
