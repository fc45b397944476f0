"""What ``POST /v1/events`` accepts and the reasons it gives for what it rejects, event by
event (the checks are plain functions: no database needed)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from modelport.services.events import MAX_ITEMS, MAX_PROPERTIES_BYTES, Rejected, _check

NOW = 1_800_000_000.0
OLDEST, NEWEST = NOW - 7 * 86_400, NOW + 600


def event(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": "e1",
        "type": "view",
        "user_id": "u1",
        "item_ids": ["i1"],
        "timestamp": NOW - 5,
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not ...}


def reason(raw: Any) -> str:
    with pytest.raises(Rejected) as caught:
        _check(raw, OLDEST, NEWEST)
    return str(caught.value)


def test_a_valid_event_becomes_a_row_and_a_small_stream_payload() -> None:
    row, payload = _check(
        event(session_id="s1", request_id="r9", properties={"page": "home"}), OLDEST, NEWEST
    )
    assert row["occurred_at"] == dt.datetime.fromtimestamp(NOW - 5, dt.UTC)
    assert row["properties"] == {"page": "home"} and row["request_id"] == "r9"
    assert payload == {
        "type": "view",
        "user": "u1",
        "session": "s1",
        "items": ["i1"],
        "ts": NOW - 5,
    }


def test_iso_timestamps_are_utc_unless_they_name_an_offset() -> None:
    at = dt.datetime.fromtimestamp(NOW - 60, dt.UTC)
    naive = at.replace(tzinfo=None).isoformat()
    assert _check(event(timestamp=naive), OLDEST, NEWEST)[1]["ts"] == NOW - 60
    shifted = at.astimezone(dt.timezone(dt.timedelta(hours=2))).isoformat()
    assert _check(event(timestamp=shifted), OLDEST, NEWEST)[1]["ts"] == NOW - 60
    assert _check(event(timestamp=naive.lower() + "z"), OLDEST, NEWEST)[1]["ts"] == NOW - 60


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("view", "an event is an object"),
        (event(event_id=...), "event_id must be a string"),
        (event(event_id=""), "event_id must be a string of 1-128"),
        (event(event_id="x" * 129), "1-128 characters"),
        (event(type="like"), "type must be one of view, click, add_to_cart, purchase"),
        (event(user_id=...), "give user_id or session_id"),
        (event(user_id=7), "user_id must be a string"),
        (event(item_ids="i1"), "item_ids must be a list"),
        (event(item_ids=["i"] * (MAX_ITEMS + 1)), f"at most {MAX_ITEMS} ids"),
        (event(item_ids=[]), "a view event names the item(s)"),
        (event(item_ids=["ok", 3]), "item_ids[] must be a string"),
        (event(timestamp=...), "timestamp is required"),
        (event(timestamp="yesterday"), "is not an ISO-8601 time"),
        (event(timestamp=NOW * 1000), "milliseconds? divide by 1000"),
        (event(timestamp=True), "ISO-8601 time or epoch seconds"),
        (event(timestamp=OLDEST - 1), "older than the accepted window"),
        (event(timestamp=NEWEST + 1), "too far in the future"),
        (event(properties=[1]), "properties must be an object"),
        (event(properties={str(i): i for i in range(51)}), "at most 50 keys"),
        (event(properties={"x": "y" * MAX_PROPERTIES_BYTES}), "4096 bytes as JSON"),
        (event(colour="red"), "unknown field(s) colour"),
        (event(session_id="a\x00b"), "cannot contain NUL"),
    ],
)
def test_each_rejection_names_what_is_wrong(raw: Any, says: str) -> None:
    assert says in reason(raw)


def test_search_and_impression_events_may_name_no_items() -> None:
    for kind in ("search", "impression"):
        row, _ = _check(event(type=kind, item_ids=[], session_id="s", user_id=...), OLDEST, NEWEST)
        assert row["item_ids"] == [] and row["user_id"] is None
