"""Retention follows the consumers: trimming never eats unread work, and memory is held by a budget."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from datetime import UTC, datetime

import asyncpg
import pytest

from tests.helpers import tick_count, wait_until
from tradebot.common.bus import Bus
from tradebot.common.bus.connection import connect
from tradebot.common.bus.wire import encode_entries
from tradebot.common.config import Settings
from tradebot.common.embedded import EmbeddedRedis
from tradebot.common.models import Tick
from tradebot.common.streams import (
    EXECUTION_ROLE,
    ORDERS_NEW,
    STORAGE_GROUP,
    STRATEGY_ROLE,
    storage_streams,
    tick_stream_for,
    tick_streams,
)
from tradebot.execution import service as execution_service
from tradebot.market_data import service as feed_service
from tradebot.market_data.mock_feed import MockFeed, stepping_clock
from tradebot.storage import timeseries_service as storage_service
from tradebot.strategy import service as strategy_service
from tradebot.strategy.moving_average import MovingAverageCrossover

STREAM = "test.retained"
START = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
SYMBOLS = ["AAPL", "MSFT", "NVDA", "JPM"]
HEADROOM = 1 << 20  # the budget leaves this much room above an empty Redis
TICKS = 45_000


@pytest.fixture
def redis_url(versioned_redis_url: str) -> str:
    """Every test here runs on Redis 6.2 and on Redis 7."""
    return versioned_redis_url


@pytest.fixture
def private_redis(versioned_private_redis: EmbeddedRedis) -> EmbeddedRedis:
    """A Redis of the test's own, of each version."""
    return versioned_private_redis


def one_per_entry(bus: Bus) -> Bus:
    """A bus on the same Redis that puts one tick in an entry (these tests count entries)."""
    return Bus(bus.redis, ticks_per_entry=1)


def ticks(count: int) -> list[Tick]:
    return [Tick.create("AAPL", 100.0, 1, START, trade_id=i) for i in range(count)]


async def test_trimming_keeps_everything_the_slowest_group_still_needs(bus: Bus) -> None:
    for group in ("fast", "slow"):
        await bus.ensure_group(STREAM, group)
    ids = await one_per_entry(bus).publish((STREAM, t) for t in ticks(3000))
    fast = await bus.read([STREAM], "fast", "c", count=3000, block_ms=None)
    await bus.ack("fast", fast)
    slow = await bus.read([STREAM], "slow", "c", count=2000, block_ms=None)
    await bus.ack("slow", slow[1000:])  # the slow group still holds its first 1000 as pending
    await bus.trim_consumed(STREAM, ["fast", "slow"])
    first_kept = (await bus.redis.xrange(STREAM, count=1))[0][0]
    assert first_kept <= ids[0] or first_kept <= slow[0].entry_id
    await bus.ack("slow", slow[:1000])
    await bus.trim_consumed(STREAM, ["fast", "slow"])
    remaining = [entry_id for entry_id, _ in await bus.redis.xrange(STREAM)]
    assert ids[2000] in remaining  # never delivered to "slow": kept
    assert len(remaining) < 3000  # what both finished went (whole nodes at a time)
    assert set(ids[2000:]) <= set(remaining)


async def test_a_stream_is_not_trimmed_while_a_group_that_must_read_it_is_missing(bus: Bus) -> None:
    await bus.ensure_group(STREAM, "fast")
    await one_per_entry(bus).publish((STREAM, t) for t in ticks(2000))
    await bus.ack("fast", await bus.read([STREAM], "fast", "c", count=2000, block_ms=None))
    assert await bus.trim_consumed(STREAM, ["fast", "slow"]) == 0
    assert await bus.redis.xlen(STREAM) == 2000
    assert await bus.trim_consumed(STREAM, ["fast"]) > 0


async def test_publishing_never_trims_unread_entries(bus: Bus) -> None:
    await bus.ensure_group(STREAM, "slow")
    await bus.publish((STREAM, t) for t in ticks(5000))
    assert await tick_count(bus.redis, [STREAM]) == 5000


@pytest.mark.timeout(600)
async def test_storage_and_strategy_down_while_three_budgets_are_published_lose_nothing(
    private_redis: EmbeddedRedis, clean_database: str, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """The feed waits at the budget; once storage, strategy and execution run, every tick is stored
    once and every signal is made, and the streams were trimmed behind them."""
    sample = MockFeed(SYMBOLS, 7, clock=stepping_clock(START)).take(TICKS)
    entries = encode_entries((tick_stream_for(t.symbol, 2), t) for t in sample)
    assert sum(len("".join(fields.values())) for _, fields in entries) >= 3 * HEADROOM  # 3 budgets of entries
    setup = Bus(connect(private_redis.url))
    for stream in storage_streams(2):
        await setup.ensure_group(stream, STORAGE_GROUP)  # the workers ran before: their groups exist
    for stream in tick_streams(2):
        await setup.ensure_group(stream, STRATEGY_ROLE)
    await setup.ensure_group(ORDERS_NEW, EXECUTION_ROLE)
    budget_mb = (await setup.memory_used() + HEADROOM) / 2**20
    run_settings = settings.model_copy(
        update={
            "redis_url": private_redis.url,
            "database_url": clean_database,
            "symbols": SYMBOLS,
            "tick_partitions": 2,
            "mock_seed": 7,
            "mock_max_ticks": TICKS,
            "redis_memory_budget_mb": budget_mb,
            "bus_batch_size": 500,
        }
    )
    feed_bus = Bus.from_settings(run_settings)
    stop = asyncio.Event()
    caplog.set_level(logging.INFO, logger="tradebot")
    feed = asyncio.create_task(
        feed_service.produce(
            feed_bus, run_settings, SYMBOLS, stop=stop, counters=Counter(), clock=stepping_clock(START), pace=False
        )
    )
    workers: list[asyncio.Task] = []
    try:
        await wait_until(lambda: feed_bus.stats["waits_for_room"] >= 1, timeout=120, what="the feed to wait")
        waiting_at = await tick_count(setup.redis, tick_streams(2))
        assert waiting_at < TICKS
        assert not feed.done()
        for worker in (storage_service, strategy_service, execution_service):
            workers.append(asyncio.create_task(worker.run(run_settings, stop=stop, counters=Counter())))

        conn = await asyncpg.connect(clean_database)
        try:

            async def all_stored() -> bool:
                return feed.done() and await conn.fetchval("SELECT count(*) FROM ticks") == TICKS

            await wait_until(all_stored, timeout=480, what="every tick to be stored")
            expected = single_strategy_ids(sample)

            async def all_signals() -> bool:
                return await conn.fetchval("SELECT count(*) FROM signals") >= len(expected)

            await wait_until(all_signals, timeout=120, what="every signal to be stored")
            assert await conn.fetchval("SELECT count(DISTINCT id) FROM ticks") == TICKS
            stored_signals = Counter(row["id"] for row in await conn.fetch("SELECT id FROM signals"))
        finally:
            await conn.close()
        assert stored_signals == Counter(expected)
        assert feed.exception() is None
        assert [r.message for r in caplog.records if "mock feed waits" in r.message][:1]
    finally:
        stop.set()
        await asyncio.gather(feed, *workers, return_exceptions=True)
        await feed_bus.close()
        await setup.close()


def single_strategy_ids(sample: list[Tick]) -> list[str]:
    strategy = MovingAverageCrossover(5, 20)
    return [signal.id for tick in sample for signal in strategy.on_tick(tick)]
