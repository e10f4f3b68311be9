"""A strategy asks to cancel or replace its own order: the book collects it, the strategy worker
publishes it on orders.new (even while halted), and a replayed tick asks only once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tradebot.common.models import Order, OrderChange, Signal, Tick
from tradebot.common.streams import ORDERS_NEW
from tradebot.risk.state import TradingState
from tradebot.strategy.bars import Candle
from tradebot.strategy.base import BarStrategy, Decision, SymbolState
from tradebot.strategy.book import StrategyBook, StrategySpec
from tradebot.strategy.service import StrategyPartition

START = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)


class BuyThenWithdraw(BarStrategy):
    """Buys on the first tick; on a tick 5% lower it withdraws that buy (a cancel of its order)."""

    default_name = "withdraw"

    def indicators(self) -> dict[str, Any]:
        return {}

    def decide(self, state: SymbolState, bar: Candle) -> Decision | None:
        return ("buy", 1.0) if "bought" not in state.memory else None

    def on_tick(self, tick: Tick) -> list[Signal]:
        state = self._state(tick.symbol)
        signals = super().on_tick(tick)
        if signals:
            state.memory["bought"] = {"signal": signals[0].model_dump(mode="json"), "price": tick.price}
        elif "bought" in state.memory and tick.price < state.memory["bought"]["price"] * 0.95:
            bought = Signal.model_validate(state.memory.pop("bought")["signal"])
            self.change_order("cancel", bought, tick.timestamp, tick.id)
        return signals


def ticks(prices: list[float]) -> list[Tick]:
    return [Tick.create("AAPL", p, 100, START + timedelta(seconds=i), trade_id=i) for i, p in enumerate(prices)]


def book() -> StrategyBook:
    return StrategyBook([StrategySpec("withdraw", "tests.test_strategy_changes:BuyThenWithdraw")])


def test_the_book_hands_over_a_cancel_of_the_strategys_own_order() -> None:
    strategies = book()
    orders = [order for tick in ticks([100.0]) for _, order in strategies.on_tick(tick)]
    assert strategies.take_changes() == []
    for tick in ticks([100.0, 99.0, 94.0])[1:]:
        strategies.on_tick(tick)
    (cancel,) = strategies.take_changes()
    assert (cancel.action, cancel.target, cancel.strategy) == ("cancel", orders[0].id, "withdraw")
    assert cancel.target == Order.id_for(orders[0].signal_id)
    assert strategies.take_changes() == []


def test_the_strategy_worker_publishes_the_cancel_even_while_halted() -> None:
    partition = StrategyPartition(book, order_quantity=1, trading_state=lambda: TradingState.HALTED)
    outputs = partition.apply(list(ticks([100.0, 94.0])))
    published = [(stream, type(event).__name__) for stream, event in outputs if stream == ORDERS_NEW]
    assert published == [(ORDERS_NEW, "OrderChange")]  # the buy's order is held back; the cancel is not


def test_a_replayed_tick_gives_the_same_change_id() -> None:
    first, second = StrategyPartition(book, 1), StrategyPartition(book, 1)
    changes = [
        [event for _, event in partition.apply(list(ticks([100.0, 94.0]))) if isinstance(event, OrderChange)]
        for partition in (first, second)
    ]
    assert changes[0] == changes[1]
    assert len(changes[0]) == 1
