"""Bucket boundaries: fixed widths aligned like time_bucket, New York days across DST."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tradebot.storage.buckets import ceil_bucket, floor_bucket, next_bucket


@pytest.mark.parametrize(
    ("moment", "timeframe", "start"),
    [
        (datetime(2024, 3, 8, 14, 37, 12, tzinfo=UTC), "1m", datetime(2024, 3, 8, 14, 37, tzinfo=UTC)),
        (datetime(2024, 3, 8, 14, 37, 12, tzinfo=UTC), "15m", datetime(2024, 3, 8, 14, 30, tzinfo=UTC)),
        (datetime(2024, 3, 8, 14, 37, 12, tzinfo=UTC), "1h", datetime(2024, 3, 8, 14, tzinfo=UTC)),
        # 01:30 UTC on the 9th is 20:30 on the 8th in New York (EST): that day's bucket
        (datetime(2024, 3, 9, 1, 30, tzinfo=UTC), "1d", datetime(2024, 3, 8, 5, tzinfo=UTC)),
        (datetime(2024, 3, 11, 13, tzinfo=UTC), "1d", datetime(2024, 3, 11, 4, tzinfo=UTC)),  # EDT
    ],
)
def test_floor_bucket(moment: datetime, timeframe: str, start: datetime) -> None:
    assert floor_bucket(moment, timeframe) == start


def test_new_york_day_of_the_spring_switch_is_23_hours() -> None:
    sunday = datetime(2024, 3, 10, 5, tzinfo=UTC)
    assert (next_bucket(sunday, "1d") - sunday).total_seconds() == 23 * 3600


def test_ceil_bucket_keeps_a_boundary_and_rounds_up_inside_a_bucket() -> None:
    boundary = datetime(2024, 3, 8, 14, 35, tzinfo=UTC)
    assert ceil_bucket(boundary, "5m") == boundary
    assert ceil_bucket(boundary.replace(second=1), "5m") == datetime(2024, 3, 8, 14, 40, tzinfo=UTC)
