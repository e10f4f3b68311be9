"""Bucket boundaries of each timeframe, matching the SQL (date_bin / time_bucket) exactly.

Intraday buckets are fixed widths aligned to 2000-01-03 00:00 UTC, TimescaleDB's default origin
(any UTC midnight gives the same minutes and hours). Daily buckets are America/New_York calendar
days, so a US session is never split at UTC midnight and DST days are 23 or 25 hours long.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import get_args
from zoneinfo import ZoneInfo

from tradebot.common.models import Timeframe

MARKET_TIMEZONE = "America/New_York"
MARKET_TZ = ZoneInfo(MARKET_TIMEZONE)
ORIGIN = datetime(2000, 1, 3, tzinfo=UTC)
TIMEFRAMES: tuple[str, ...] = get_args(Timeframe)
WIDTHS: dict[str, timedelta] = {
    "1m": timedelta(minutes=1),
    "5m": timedelta(minutes=5),
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "1d": timedelta(days=1),  # nominal: a New York day is 23, 24 or 25 hours
}
SQL_INTERVALS = {"1m": "1 minute", "5m": "5 minutes", "15m": "15 minutes", "1h": "1 hour", "1d": "1 day"}


def floor_bucket(moment: datetime, timeframe: str) -> datetime:
    """Start of the bucket containing ``moment`` (UTC)."""
    if timeframe == "1d":
        local = moment.astimezone(MARKET_TZ)
        return datetime(local.year, local.month, local.day, tzinfo=MARKET_TZ).astimezone(UTC)
    width = WIDTHS[timeframe]
    return ORIGIN + ((moment - ORIGIN) // width) * width


def next_bucket(start: datetime, timeframe: str) -> datetime:
    """Start of the bucket after the one starting at ``start``."""
    if timeframe == "1d":
        following = start.astimezone(MARKET_TZ).date() + timedelta(days=1)
        return datetime(following.year, following.month, following.day, tzinfo=MARKET_TZ).astimezone(UTC)
    return start + WIDTHS[timeframe]


def ceil_bucket(moment: datetime, timeframe: str) -> datetime:
    """The first bucket start at or after ``moment``."""
    start = floor_bucket(moment, timeframe)
    return start if start == moment else next_bucket(start, timeframe)


def bucket_sql(column: str, timeframe: str) -> str:
    """SQL for the bucket start of ``column`` in plain PostgreSQL (same result as time_bucket)."""
    if timeframe == "1d":
        return f"date_trunc('day', {column}, '{MARKET_TIMEZONE}')"
    return f"date_bin(INTERVAL '{SQL_INTERVALS[timeframe]}', {column}, TIMESTAMPTZ '2000-01-03 00:00:00+00')"


def bucket_end_sql(column: str, timeframe: str) -> str:
    """SQL for the end of the bucket starting at ``column`` (local-day arithmetic for 1d)."""
    if timeframe == "1d":
        return f"(({column} AT TIME ZONE '{MARKET_TIMEZONE}') + INTERVAL '1 day') AT TIME ZONE '{MARKET_TIMEZONE}'"
    return f"({column} + INTERVAL '{SQL_INTERVALS[timeframe]}')"
