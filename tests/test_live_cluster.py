"""The live feeds (Alpaca and Polygon, through their official clients against the emulators) on a
real local Redis Cluster: a batch is committed slot by slot (tradebot/market_data/live_publisher.py),
so ticks, bars, watermarks and a reconnect's gap repair work there as on one Redis.

The tests are the single-Redis ones, collected again here with ``redis_url`` naming the cluster.
"""

from __future__ import annotations

import pytest

from tests.redis_cluster import LocalCluster
from tests.test_alpaca_service import (
    test_reconnects_and_resubscribes_after_a_dropped_connection as test_alpaca_reconnects,
)
from tests.test_alpaca_service import (
    test_trades_and_minute_bars_become_ticks_and_bars_field_by_field as test_alpaca_ticks_and_bars,
)
from tests.test_polygon_service import (
    test_reconnects_after_a_normal_close_and_after_a_drop as test_polygon_reconnects,
)
from tests.test_polygon_service import (
    test_trades_and_minute_aggregates_become_ticks_and_bars_field_by_field as test_polygon_ticks_and_bars,
)

__all__ = [
    "test_alpaca_reconnects",
    "test_alpaca_ticks_and_bars",
    "test_polygon_reconnects",
    "test_polygon_ticks_and_bars",
]


@pytest.fixture
def redis_url(redis_cluster: LocalCluster) -> str:
    return redis_cluster.url
