"""What the feature service accepts from any transport: event times, feature references and
values against a dtype."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from modelport.errors import InvalidInput
from modelport.services.features import parse_event_time, parse_ref
from modelport.stores.features import check_value

NOW = 1_714_564_800.0  # 2024-05-01T12:00:00Z


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        (NOW, NOW),
        (int(NOW), NOW),
        (0, 0.0),
        ("2024-05-01T12:00:00Z", NOW),
        ("2024-05-01t12:00:00z", NOW),
        ("2024-05-01T12:00:00", NOW),  # no offset: UTC
        ("2024-05-01T14:00:00+02:00", NOW),
        ("2024-05-01T11:59:59.250Z", NOW - 0.75),
        ("2024-05-01", NOW - 12 * 3600),
    ],
)
def test_event_times_are_epoch_seconds_or_iso_8601(raw: Any, seconds: float) -> None:
    assert parse_event_time(raw, "t", now=NOW) == pytest.approx(seconds, abs=1e-6)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (NOW * 1000, "milliseconds"),
        (-1, "before 1970"),
        ("1969-12-31T23:59:59Z", "before 1970"),
        (NOW + 3601, "in the future"),
        ("2024-05-01T13:00:01Z", "in the future"),
        ("yesterday", "not an ISO-8601 time"),
        ("", "not an ISO-8601 time"),
        (True, "got bool"),
        (None, "got NoneType"),
        ([NOW], "got list"),
        (float("nan"), "finite"),
    ],
)
def test_bad_event_times_are_refused_with_the_reason(raw: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_event_time(raw, "rows[0].event_timestamp", now=NOW)


def test_an_event_time_up_to_an_hour_ahead_is_accepted() -> None:
    ahead = dt.datetime.fromtimestamp(NOW + 3599, dt.UTC).isoformat()
    assert parse_event_time(ahead, "t", now=NOW) == NOW + 3599


@pytest.mark.parametrize(
    ("ref", "parsed"),
    [("user_stats:clicks", ("user_stats", "clicks")), ("v1:*", ("v1", "*"))],
)
def test_feature_references(ref: str, parsed: tuple[str, str]) -> None:
    assert parse_ref(ref) == parsed


@pytest.mark.parametrize("ref", ["user_stats", "a:b:c", ":x", "v:", "V:x", "v:X", "v:**", 3])
def test_malformed_feature_references_are_refused(ref: Any) -> None:
    with pytest.raises(InvalidInput):
        parse_ref(ref)


@pytest.mark.parametrize(
    ("dtype", "raw", "value"),
    [
        ("float", 1, 1.0),
        ("float", -2.5, -2.5),
        ("int", 7, 7),
        ("int", 3.0, 3),
        ("int", -(2**63), -(2**63)),
        ("bool", False, False),
        ("string", "héllo", "héllo"),
        ("string", "", ""),
    ],
)
def test_values_are_converted_to_their_dtype(dtype: Any, raw: Any, value: Any) -> None:
    converted = check_value(dtype, raw, "x")
    assert converted == value and type(converted) is type(value)


@pytest.mark.parametrize(
    ("dtype", "raw"),
    [
        ("float", True),
        ("float", "1.0"),
        ("float", float("inf")),
        ("int", 1.5),
        ("int", 2**63),
        ("int", False),
        ("bool", 0),
        ("bool", "true"),
        ("string", 5),
        ("string", "x" * 65_537),
        ("string", "\ud800"),
        ("float", None),
        ("float", [1.0]),
    ],
)
def test_values_of_the_wrong_type_are_refused(dtype: Any, raw: Any) -> None:
    with pytest.raises(InvalidInput, match=r"^f: "):
        check_value(dtype, raw, "f")
