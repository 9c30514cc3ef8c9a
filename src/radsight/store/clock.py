"""Time in the store: naive UTC datetimes, the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def seconds_from_now(seconds: float) -> datetime:
    return utcnow() + timedelta(seconds=seconds)
