"""UTC helpers. PySpark turns TimestampType values into *naive local* datetimes on collect, so
timestamps cross into Python as epoch microseconds and come out as aware UTC datetimes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pyspark.sql import Column
from pyspark.sql import functions as F

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def as_utc(value: datetime) -> datetime:
    """An aware UTC datetime; a naive one is taken to be UTC already (never the machine's zone)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def parse_utc(text: str) -> datetime:
    """Parse ``YYYY-MM-DD`` or an ISO timestamp (``Z`` or offset allowed) as UTC."""
    return as_utc(datetime.fromisoformat(text.replace("Z", "+00:00")))


def micros(column: str) -> Column:
    return F.unix_micros(F.col(column))


def from_micros(value: int | None) -> datetime | None:
    return None if value is None else EPOCH + timedelta(microseconds=value)


def lit_ts(value: datetime) -> Column:
    """A timestamp literal for an aware datetime, independent of the Python process's time zone."""
    return F.timestamp_micros(F.lit(int((as_utc(value) - EPOCH) / timedelta(microseconds=1))))
