"""The strategy worker around the pure strategy: checkpoints, outputs and bad input."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

from tradebot.broker.checkpoint import ACCOUNT_PARTITION
from tradebot.common.bus import Bus
from tradebot.common.bus.wire import decode_all
from tradebot.common.config import Settings
from tradebot.common.models import ACCOUNT_SCOPE, ControlEvent, Order, Signal, Tick
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
from tradebot.risk.views import held_if_not_active
from tradebot.strategy import service
from tradebot.strategy.book import StrategyBook, StrategySpec
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
    assert await service.ruled_state(bus) == (TradingState.ACTIVE, None)  # no account committed yet
    account = BrokerPartition(settings)
    buy = Order(
        id="b1",
        symbol="AAPL",
        timestamp=START,
        side="buy",
        quantity=1.0,
        reference_price=190.0,
        signal_id="s1",
        strategy="cross",
    )
    account.apply([buy])
    key = checkpoint_parts_key(EXECUTION_ROLE, ACCOUNT_PARTITION)
    await bus.redis.hset(key, mapping=account.parts())
    assert await service.ruled_state(bus) == (TradingState.ACTIVE, None)  # ACTIVE: the book is not touched
    account.risk.engine.impose(TradingState.REDUCING, "daily_loss", "loss 3% since the session opened", START)
    await bus.redis.hset(key, mapping=account.parts())
    # what the strategy worker polls: it then sends no BUY (SENT_SIDES), which the risk stage would deny,
    # and forgets a BUY the account does not show (StrategyBook.forget_unheld)
    ruled = await service.ruled_state(bus)
    assert ruled == (TradingState.REDUCING, {"cross": {"AAPL": 1.0}})
    assert service.SENT_SIDES[TradingState.REDUCING] == frozenset({"sell"})


def test_the_partition_forgets_what_the_account_does_not_show_only_while_not_active() -> None:
    prices = [100.0, 100, 100, 100, 90, 120, 60]  # the crossover: BUY at 120, SELL at 60
    zigzag = [Tick.create("AAPL", p, 100, START + timedelta(seconds=i), trade_id=i) for i, p in enumerate(prices)]
    spec = StrategySpec("x", "ma_crossover", {"short_window": 2, "long_window": 4})

    def sells_at_60(state: TradingState) -> list[Order]:
        partition = service.StrategyPartition(
            lambda: StrategyBook([spec]), 1.0, lambda: TradingState.ACTIVE, account_held=lambda: {}
        )
        assert [o.side for _, o in partition.apply(zigzag[:6]) if isinstance(o, Order)] == ["buy"]
        partition.trading_state = lambda: state  # what the worker polls next: the account holds nothing
        return [o for _, o in partition.apply(zigzag[6:]) if isinstance(o, Order)]

    # ACTIVE: the BUY may still be in flight, so the book keeps it (the holdings are not even read)
    assert [o.side for o in sells_at_60(TradingState.ACTIVE)] == ["sell"]
    # REDUCING: the BUY was denied or will be, so it is dropped and never sold
    assert sells_at_60(TradingState.REDUCING) == []


def test_after_a_flatten_the_book_holds_nothing_the_account_closed(settings: Settings) -> None:
    account = BrokerPartition(settings)
    buy = Order(
        id="b1", symbol="AAPL", timestamp=START, side="buy", quantity=1.0, reference_price=190.0, signal_id="s1"
    )
    account.apply([buy.model_copy(update={"strategy": "x"})])
    flatten = ControlEvent(
        id="control-1",
        symbol=ACCOUNT_SCOPE,
        timestamp=START,
        action="flatten",
        state="REDUCING",
        actor="test",
        reason="end of day",
        version=1,
    )
    account.apply([flatten])
    held = held_if_not_active({"risk": account.risk.snapshot(), "pnl": account.pnl.snapshot()})
    assert held == {"x": {"AAPL": 0.0}}  # REDUCING, and the flatten sold x's share
    book = StrategyBook([StrategySpec("x", "ma_crossover", {"short_window": 2, "long_window": 4})])
    book.positions["x"] = {"AAPL": 1.0, "MSFT": 1.0}  # its BUY of AAPL filled, its BUY of MSFT denied
    assert sorted(book.forget_unheld(held)) == [("x", "AAPL"), ("x", "MSFT")]


def test_a_resting_buy_counts_as_held_and_a_real_brokers_account_is_left_alone(settings: Settings) -> None:
    account = BrokerPartition(settings)
    limit = Order(
        id="b1",
        symbol="AAPL",
        timestamp=START,
        side="buy",
        quantity=2.0,
        reference_price=190.0,
        signal_id="s1",
        strategy="x",
        order_type="limit",
        limit_price=180.0,
        time_in_force="gtc",
    )
    assert [e.status for _, e in account.apply([limit])] == ["accepted"]  # resting below the market
    account.risk.engine.impose(TradingState.REDUCING, "daily_loss", "loss 3% since the session opened", START)
    committed = {**account.broker.snapshot(), "risk": account.risk.snapshot(), "pnl": account.pnl.snapshot()}
    assert held_if_not_active(committed) == {"x": {"AAPL": 2.0}}  # taken before the trip: it may still fill
    assert held_if_not_active({**committed, "resting": []}) == {}
    assert held_if_not_active({**committed, "broker": "alpaca"}) is None  # open orders there are not in the commit


async def test_a_worker_behind_on_every_partition_holds_no_more_entries_read_than_its_bound(
    bus: Bus, settings: Settings
) -> None:
    """Four partitions behind, read in batches of 8 entries (16 ticks each): the worker's readers
    share room for BATCHES_IN_FLIGHT batches read and not yet committed, and every signal is made."""
    symbols = ["AAPL", "MSFT", "AMZN", "META"]  # one on each of the four partitions
    ticks = MockFeed(symbols, 3, clock=stepping_clock(START)).take(4000)
    await bus.publish((tick_stream_for(tick.symbol, 4), tick) for tick in ticks)
    behind = settings.model_copy(update={"symbols": symbols, "tick_partitions": 4, "bus_batch_size": 8, "burst": True})
    counters = await burst(behind)
    bound = service.BATCHES_IN_FLIGHT * behind.bus_batch_size
    assert counters["handled"] == len(ticks)  # (4000 ticks: 250 entries, about 8 reads on each partition)
    assert 0 < counters["entries_in_flight_peak"] <= bound
    strategy = MovingAverageCrossover(behind.short_window, behind.long_window)
    expected = [signal for tick in ticks for signal in strategy.on_tick(tick)]
    signals = await bus.entries_of(signal_streams(4))
    assert sorted(s.id for s in signals) == sorted(s.id for s in expected)
