"""The live publisher publishes each batch exactly once, also when a commit is retried."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from tests.helpers import wait_until
from tradebot.common.bus import Bus, Commit, connect, decode
from tradebot.common.embedded import EmbeddedRedis
from tradebot.common.models import Tick
from tradebot.common.streams import GAPS, gap_key, tick_stream
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


@pytest.fixture
async def private_bus(private_redis: EmbeddedRedis) -> AsyncIterator[Bus]:
    bus = Bus(connect(private_redis.url))
    yield bus
    await bus.close()


async def test_a_full_buffer_while_redis_refuses_writes_becomes_a_recorded_gap_then_a_repair(
    private_bus: Bus,
) -> None:
    bus, counters, repairs = private_bus, Counter(), []
    publisher = LivePublisher(bus, source="test", partitions=1, counters=counters, batch_size=50, buffer_size=100)
    publisher.on_gap = lambda symbols, first: repairs.append((symbols, first)) or 7
    sent = [
        Tick.create("AAPL" if i % 2 else "MSFT", 1.0, 1, NOW + timedelta(seconds=i), source="test", trade_id=i)
        for i in range(1000)
    ]
    stop = asyncio.Event()
    flusher = asyncio.create_task(publisher.run(stop))
    try:
        await bus.redis.config_set("maxmemory", 1)  # OOM: every XADD refused
        for tick in sent:
            await publisher.offer(lambda record: record, tick)  # never blocks for good: a live feed cannot wait
        assert counters["gap_events"] > 0
        assert not flusher.done()
        await bus.redis.config_set("maxmemory", 0)
        await wait_until(
            lambda: bus.redis.exists(gap_key("test", _first_dropped(sent, counters))), what="the gap record"
        )
    finally:
        stop.set()
        await flusher
    published = [decode(fields) for _, fields in await bus.redis.xrange(tick_stream(0))]
    assert len(published) == len({t.id for t in published}) == counters["ticks"]
    dropped = [t for t in sent if t.id not in {p.id for p in published}]
    assert len(published) + len(dropped) == len(sent)
    assert len(dropped) == counters["gap_events"]
    record = json.loads(await bus.redis.get(gap_key("test", dropped[0].timestamp.isoformat())))
    assert record == {
        "source": "test",
        "symbols": ["AAPL", "MSFT"],
        "first": dropped[0].timestamp.isoformat(),
        "last": dropped[-1].timestamp.isoformat(),
        "dropped": len(dropped),
        "repair": 7,
        "repaired": False,
    }
    gaps = [decode(fields) for _, fields in await bus.redis.xrange(GAPS)]
    assert {(g.symbol, g.timestamp, g.last, g.dropped) for g in gaps} == {  # type: ignore[attr-defined]
        (symbol, dropped[0].timestamp, dropped[-1].timestamp, len(dropped)) for symbol in ("AAPL", "MSFT")
    }
    assert repairs == [(["AAPL", "MSFT"], dropped[0].timestamp)]


def _first_dropped(sent: list[Tick], counters: Counter) -> str:
    """The first tick past what was published: where the gap began (the buffer kept the ones before)."""
    return sent[counters["ticks"]].timestamp.isoformat() if counters["ticks"] < len(sent) else ""
