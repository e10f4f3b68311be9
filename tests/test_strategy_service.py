"""The strategy worker around the pure strategy: checkpoints, outputs and bad input."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime

from tradebot.broker.checkpoint import ACCOUNT_PARTITION
from tradebot.common.bus import Bus, decode_all
from tradebot.common.config import Settings
from tradebot.common.models import Signal, Tick
from tradebot.common.streams import (
    EXECUTION_ROLE,
    checkpoint_parts_key,
    dead_letter_stream,
    order_streams,
    signal_streams,
    tick_stream_for,
)
from tradebot.execution.service import BrokerPartition
from tradebot.market_data.mock_feed import MockFeed, stepping_clock
from tradebot.risk.state import TradingState
from tradebot.strategy import service
from tradebot.strategy.moving_average import MovingAverageCrossover

SYMBOLS = ["AAPL", "MSFT", "NVDA"]
START = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)


def burst_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"symbols": SYMBOLS, "tick_partitions": 2, "bus_batch_size": 16, "burst": True})


async def publish(bus: Bus, ticks: list[Tick]) -> None:
    await bus.publish((tick_stream_for(tick.symbol, 2), tick) for tick in ticks)


async def burst(settings: Settings) -> Counter:
    counters: Counter = Counter()
    await asyncio.wait_for(service.run(settings, stop=asyncio.Event(), counters=counters), timeout=60)
    return counters


async def stream(bus: Bus, name: str) -> list:
    return [event for _, fields in await bus.redis.xrange(name) for event in decode_all(fields)]


async def test_a_restarted_worker_continues_from_its_checkpoint(bus: Bus, settings: Settings) -> None:
    ticks = MockFeed(SYMBOLS, 3, clock=stepping_clock(START)).take(1200)
    strategy = MovingAverageCrossover(5, 20)
    expected = [signal for tick in ticks for signal in strategy.on_tick(tick)]
    await publish(bus, ticks[:500])
    await burst(burst_settings(settings))
    await publish(bus, ticks[500:])
    await burst(burst_settings(settings))
    signals = await bus.entries_of(signal_streams(2))
    assert sorted(s.id for s in signals) == sorted(s.id for s in expected)
    orders = await bus.entries_of(order_streams(2))
    book = service.book_factory(settings)()  # long only: a SELL only after the book's own BUY
    sent = [order for tick in ticks for _, order in book.on_tick(tick) if order is not None]
    assert len(sent) < len(expected)  # each symbol's first signal, a SELL, has no order
    assert sorted(o.id for o in orders) == sorted(o.id for o in sent)


async def test_an_event_that_is_not_a_tick_is_dead_lettered_with_the_reason(bus: Bus, settings: Settings) -> None:
    ticks = MockFeed(["AAPL"], 3, clock=stepping_clock(START)).take(300)
    stray = Signal(
        id="stray",
        symbol="AAPL",
        timestamp=START,
        side="buy",
        price=1.0,
        confidence=0.5,
        strategy="manual",
        tick_id="none",
    )
    await publish(bus, ticks[:150])
    await bus.publish([(tick_stream_for("AAPL", 2), stray)])
    await publish(bus, ticks[150:])
    counters = await burst(burst_settings(settings).model_copy(update={"symbols": ["AAPL"]}))
    dead = await bus.redis.xrange(dead_letter_stream(tick_stream_for("AAPL", 2)))
    assert len(dead) == 1
    assert "expected a Tick" in dead[0][1]["reason"]
    strategy = MovingAverageCrossover(5, 20)
    expected = [signal for tick in ticks for signal in strategy.on_tick(tick)]
    assert [s.id for s in await bus.entries_of(signal_streams(2))] == [s.id for s in expected]
    assert counters["published"] == 2 * len(expected)


async def test_the_worker_obeys_a_risk_rule_tripped_in_the_execution_worker(bus: Bus, settings: Settings) -> None:
    assert await service.ruled_state(bus) is TradingState.ACTIVE  # no account committed yet
    account = BrokerPartition(settings)
    account.risk.engine.impose(TradingState.REDUCING, "daily_loss", "loss 3% since the session opened", START)
    await bus.redis.hset(checkpoint_parts_key(EXECUTION_ROLE, ACCOUNT_PARTITION), mapping=account.parts())
    # what the strategy worker polls: it then sends no BUY (SENT_SIDES), which the risk stage would deny
    assert await service.ruled_state(bus) is TradingState.REDUCING
    assert service.SENT_SIDES[TradingState.REDUCING] == frozenset({"sell"})
