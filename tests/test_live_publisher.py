"""The live publisher publishes each batch exactly once, also when a commit is retried (on Redis 6.2,
Redis 7 and a Redis Cluster, where a batch is committed slot by slot)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from redis.crc import key_slot

from tests.helpers import wait_until
from tradebot.common.bus import Bus
from tradebot.common.bus.connection import connect
from tradebot.common.bus.publishing import Commit
from tradebot.common.bus.wire import decode, decode_all
from tradebot.common.embedded import EmbeddedRedis
from tradebot.common.models import Tick
from tradebot.common.streams import GAPS, gap_key, tick_stream
from tradebot.market_data.gap_repair import repair_key, watermark_key
from tradebot.market_data.live_publisher import LivePublisher, slot_commits

NOW = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)


@pytest.fixture
def redis_version(redis_target: str) -> str:
    return redis_target


@pytest.fixture
def redis_url(versioned_redis_url: str) -> str:
    return versioned_redis_url


async def test_a_batch_retried_after_a_lost_reply_is_published_once(bus: Bus) -> None:
    publisher = LivePublisher(bus, source="test", partitions=1, counters=Counter())
    ticks = [Tick.create(symbol, 1.0, 1, NOW, source="test", trade_id=1) for symbol in ("AAPL", "MSFT")]
    batch = Commit(
        publish=[(tick_stream(0), ticks[0]), (tick_stream(1), ticks[1])],
        state={watermark_key("test", "AAPL"): NOW.isoformat(), watermark_key("test", "MSFT"): NOW.isoformat()},
    )
    assert await publisher._commit_once(batch, set())
    # The replies were lost: the publisher does not know the batch (or, on a cluster, its parts) landed.
    publisher._sequences = dict.fromkeys(publisher._sequences, "")
    assert await publisher._commit_once(batch, set())
    assert [await bus.redis.xlen(tick_stream(p)) for p in (0, 1)] == [1, 1]


def test_on_a_cluster_a_batch_goes_slot_by_slot_events_before_markers_before_watermarks() -> None:
    tick = Tick.create("AAPL", 1.0, 1, NOW, source="test", trade_id=1)
    mark, marker = watermark_key("test", "AAPL"), repair_key("test", "AAPL")
    parts = slot_commits(
        Commit(publish=[(tick_stream(0), tick), (tick_stream(1), tick)], state={mark: "m", marker: "r"})
    )
    assert [(part.publish, part.state) for part in parts] == [
        ([(tick_stream(0), tick)], {}),
        ([(tick_stream(1), tick)], {}),
        ([], {marker: "r"}),
        ([], {mark: "m"}),
    ]
    for part in parts:  # each part is one slot: a cluster takes it as one script
        keys = [stream for stream, _ in part.publish] + list(part.state)
        assert len({key_slot(key.encode()) for key in keys}) == 1


async def test_two_publishers_of_one_source_both_get_their_batches_out(bus: Bus) -> None:
    first = LivePublisher(bus, source="test", partitions=1, counters=Counter())
    second = LivePublisher(bus, source="test", partitions=1, counters=Counter())
    for i, publisher in enumerate((first, second, first)):
        tick = Tick.create("AAPL", 1.0, 1, NOW, source="test", trade_id=i)
        assert await publisher._commit_once(Commit(publish=[(tick_stream(0), tick)]), set())
    assert await bus.redis.xlen(tick_stream(0)) == 3


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
    published = [t for _, fields in await bus.redis.xrange(tick_stream(0)) for t in decode_all(fields)]
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
