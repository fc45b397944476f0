"""The feature consumers' aggregates as pure functions: recent items, decayed popularity and
session co-occurrence give what the events imply, whatever order the events arrive in."""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import pytest

from modelport.services.event_features import (
    ITEM_COOCCURRENCE,
    ITEM_POPULARITY,
    USER_RECENT,
    EventFeatureConfig,
    add_popularity,
    add_recent,
    add_to_session,
    count_pair,
    project,
)

HOUR = 3600.0


def test_recent_items_keep_the_newest_distinct_items_in_any_arrival_order() -> None:
    events = [("a", 10.0), ("b", 20.0), ("a", 30.0), ("c", 5.0), ("d", 25.0)]
    results = set()
    for order in itertools.permutations(events):
        state: dict[str, Any] = {}
        for item, ts in order:
            add_recent(state, "view", [item], ts, keep=3)
        results.add(json.dumps(state))
    assert len(results) == 1
    values = project(USER_RECENT, json.loads(results.pop()), EventFeatureConfig())
    assert json.loads(values["view"]) == ["a", "d", "b"]
    assert values["click"] == "[]" and values["last_seen"] == 30.0


def test_popularity_halves_per_half_life_and_ignores_arrival_order() -> None:
    events = [("views", 0.0), ("views", HOUR), ("carts", 2 * HOUR), ("purchases", 2 * HOUR)]
    seen = []
    for order in itertools.permutations(events):
        state: dict[str, Any] = {}
        for name, ts in order:
            add_popularity(state, name, ts, half_life_s=HOUR)
        seen.append(project(ITEM_POPULARITY, state, EventFeatureConfig()))
    first = seen[0]
    for other in seen[1:]:
        assert other.keys() == first.keys()
        for key in first:
            assert math.isclose(other[key], first[key], rel_tol=1e-12)
    # As of the newest event (2 h): the 0 h view counts 1/4, the 1 h view 1/2.
    assert first["as_of"] == 2 * HOUR
    assert first["views"] == pytest.approx(0.75)
    assert first["carts"] == pytest.approx(1.0) and first["purchases"] == pytest.approx(1.0)
    assert (first["views_total"], first["carts_total"], first["purchases_total"]) == (2, 1, 1)


def test_a_pair_co_occurs_once_per_session_and_only_within_the_window() -> None:
    session: dict[str, Any] = {}
    assert add_to_session(session, "v", "a", 0.0, window_s=60) == []
    assert add_to_session(session, "v", "b", 30.0, window_s=60) == ["a"]
    assert add_to_session(session, "v", "a", 40.0, window_s=60) == []  # already paired
    assert add_to_session(session, "v", "c", 200.0, window_s=60) == []  # outside the window
    # b (30 s) is 70 s before d: outside; a was seen again at 40 s: inside.
    assert add_to_session(session, "v", "d", 100.0, window_s=60) == ["a"]


def test_cooccurrence_reads_as_the_highest_counts_first() -> None:
    state: dict[str, Any] = {}
    for partner in ["x", "y", "y", "z", "y", "x"]:
        count_pair(state, "v", partner, top=2)
    count_pair(state, "p", "x", top=2)
    values = project(ITEM_COOCCURRENCE, state, EventFeatureConfig(cooccurrence_top=2))
    assert list(json.loads(values["co_view"]).items()) == [("y", 3), ("x", 2)]
    assert json.loads(values["co_purchase"]) == {"x": 1}
