from __future__ import annotations

import datetime as dt


def as_utc(value: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes; every timestamp modelport writes is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
