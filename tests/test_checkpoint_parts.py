"""Checkpoints that scale: a partition kept in parts (the strategy: one per symbol) is committed part
by part, so a commit rewrites only the symbols its batch touched, with the same atomicity."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime

from tradebot.common.bus import Bus
from tradebot.common.config import Settings
from tradebot.common.models import Tick
from tradebot.common.streams import (
    STRATEGY_ROLE,
    checkpoint_key,
    checkpoint_parts_key,
    partition_for,
    signal_streams,
    tick_stream_for,
)
from tradebot.market_data.mock_feed import MockFeed, stepping_clock
from tradebot.strategy import service
from tradebot.strategy.book import StrategyBook, StrategySpec
from tradebot.strategy.moving_average import MovingAverageCrossover

START = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
PARTITIONS = 1
SYMBOLS = ["AAPL", "MSFT"]


def burst_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"symbols": SYMBOLS, "tick_partitions": PARTITIONS, "bus_batch_size": 16, "burst": True}
    )


async def run_burst(settings: Settings) -> None:
    await asyncio.wait_for(service.run(settings, stop=asyncio.Event(), counters=Counter()), timeout=60)


async def publish(bus: Bus, ticks: list[Tick]) -> None:
    await bus.publish((tick_stream_for(tick.symbol, PARTITIONS), tick) for tick in ticks)


async def test_a_commit_rewrites_only_the_symbols_its_batch_touched(bus: Bus, settings: Settings) -> None:
    ticks = MockFeed(SYMBOLS, 5, clock=stepping_clock(START)).take(400)
    await publish(bus, ticks[:200])
    await run_burst(burst_settings(settings))
    key = checkpoint_parts_key(STRATEGY_ROLE, partition_for("AAPL", PARTITIONS))
    parts = await bus.redis.hgetall(key)
    aapl, msft = part_of("AAPL", parts), part_of("MSFT", parts)  # one part per (symbol, strategy)
    assert {"_v", "_rest"} <= set(parts)
    untouched = parts[msft]
    await publish(bus, [tick for tick in ticks[200:] if tick.symbol == "AAPL"])
    await bus.redis.hset(key, msft, untouched.replace("{", "{ ", 1))  # a marker: same state, other bytes
    await run_burst(burst_settings(settings))
    after = await bus.redis.hgetall(key)
    assert after[msft] == untouched.replace("{", "{ ", 1)  # not rewritten: no MSFT tick in those batches
    assert after[aapl] != parts[aapl]


async def test_a_whole_string_checkpoint_of_an_older_version_is_taken_over(bus: Bus, settings: Settings) -> None:
    ticks = MockFeed(SYMBOLS, 9, clock=stepping_clock(START)).take(300)
    strategy = MovingAverageCrossover(settings.short_window, settings.long_window)
    expected = [signal for tick in ticks for signal in strategy.on_tick(tick)]
    old = MovingAverageCrossover(settings.short_window, settings.long_window)
    for tick in ticks[:150]:
        old.on_tick(tick)
    partition = partition_for("AAPL", PARTITIONS)
    await bus.redis.set(checkpoint_key(STRATEGY_ROLE, partition), json.dumps(old.snapshot()))
    await bus.ensure_group(tick_stream_for("AAPL", PARTITIONS), STRATEGY_ROLE)
    await bus.redis.xgroup_setid(tick_stream_for("AAPL", PARTITIONS), STRATEGY_ROLE, "$")  # the old run read these
    await publish(bus, ticks[150:])
    await run_burst(burst_settings(settings))
    signals = await bus.entries_of(signal_streams(PARTITIONS))
    assert sorted(s.id for s in signals) == sorted(s.id for s in expected if s.tick_id in {t.id for t in ticks[150:]})
    assert await bus.redis.hget(checkpoint_parts_key(STRATEGY_ROLE, partition), "_v") == "1"


def part_of(symbol: str, parts: dict[str, str]) -> str:
    """The name of the one part holding ``symbol`` (the default book has one strategy)."""
    [name] = [name for name in parts if name.startswith(f"{symbol}@")]
    return name


def crossover_book() -> StrategyBook:
    return StrategyBook([StrategySpec(None, "ma_crossover", {"short_window": 5, "long_window": 20})])


def test_a_symbol_part_keeps_its_recent_tick_ids_compactly_and_exactly() -> None:
    partition = service.StrategyPartition(crossover_book, 10.0)
    consecutive = MockFeed(["AAPL"], 1, clock=stepping_clock(START)).take(80)
    odd = [Tick.create("MSFT", 10.0, 1, START, source="alpaca", trade_id=trade) for trade in (7, 3, 9)]
    partition.apply(consecutive + odd)
    parts = partition.parts()
    packed = json.loads(parts[part_of("AAPL", parts)])["recent_tick_ids"]
    assert packed == {"prefix": "mock:AAPL:", "first": 30, "count": 50}  # fifty ids as a range, not fifty strings
    restored = service.StrategyPartition(crossover_book, 10.0)
    restored.restore_parts(parts)
    assert json.loads(restored.checkpoint()) == json.loads(partition.checkpoint())  # the same state
