"""The live publisher publishes each batch exactly once, also when a commit is retried."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from tradebot.common.bus import Bus, Commit
from tradebot.common.models import Tick
from tradebot.market_data.live_publisher import LivePublisher

NOW = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)


async def test_a_batch_retried_after_a_lost_reply_is_published_once(bus: Bus) -> None:
    publisher = LivePublisher(bus, source="test", partitions=1, counters=Counter())
    batch = Commit(publish=[("test.out", Tick.create("AAPL", 1.0, 1, NOW, source="test", trade_id=1))])
    assert await publisher._commit_once(batch)
    publisher._last_sequence = ""  # the reply was lost: the publisher does not know the batch landed
    assert await publisher._commit_once(batch)
    assert await bus.redis.xlen("test.out") == 1


async def test_two_publishers_of_one_source_both_get_their_batches_out(bus: Bus) -> None:
    first = LivePublisher(bus, source="test", partitions=1, counters=Counter())
    second = LivePublisher(bus, source="test", partitions=1, counters=Counter())
    for i, publisher in enumerate((first, second, first)):
        tick = Tick.create("AAPL", 1.0, 1, NOW, source="test", trade_id=i)
        assert await publisher._commit_once(Commit(publish=[("test.out", tick)]))
    assert await bus.redis.xlen("test.out") == 3
