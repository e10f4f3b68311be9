"""Exits on ticks: stop-loss, take-profit and trailing stop, and their place in the strategy role."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from tradebot.common.models import Order, OrderChange, Signal, Tick
from tradebot.common.streams import ORDERS_NEW, signal_stream
from tradebot.risk.exits import ExitRules
from tradebot.strategy.bars import BarATR
from tradebot.strategy.service import StrategyPartition

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
_n = iter(range(1_000_000))


def tick(price: float, symbol: str = "AAPL") -> Tick:
    n = next(_n)
    return Tick.create(symbol, price, 1, T0 + timedelta(seconds=n), trade_id=n)


def entry(price: float, symbol: str = "AAPL") -> tuple[Tick, list[Signal]]:
    t = tick(price, symbol)
    signal = Signal(
        id=f"s{t.id}",
        symbol=symbol,
        timestamp=t.timestamp,
        side="buy",
        price=price,
        confidence=1,
        strategy="x",
        tick_id=t.id,
    )
    return t, [signal]


def run(rules: ExitRules, prices: list[float]) -> list[tuple[float, str]]:
    rules.on_tick(*entry(100.0))
    fired = []
    for price in prices:
        fired += [(price, s.strategy) for s in rules.on_tick(tick(price), [])]
    return fired


@pytest.mark.parametrize(
    ("rules", "prices", "fired"),
    [
        (ExitRules(stop_loss_pct=0.02), [99.0, 98.01, 98.0, 97.0], [(98.0, "exit:stop_loss")]),
        (ExitRules(take_profit_pct=0.05), [104.99, 105.0, 106.0], [(105.0, "exit:take_profit")]),
        (ExitRules(trailing_pct=0.1), [110.0, 120.0, 108.01, 108.0], [(108.0, "exit:trailing_stop")]),
        (ExitRules(stop_loss_pct=0.5, take_profit_pct=0.5), [60.0, 140.0], []),
    ],
)
def test_each_exit_fires_once_at_its_threshold(rules: ExitRules, prices: list[float], fired: list) -> None:
    assert run(rules, prices) == fired


def test_a_sell_signal_closes_the_trade_and_other_symbols_are_left_alone() -> None:
    rules = ExitRules(stop_loss_pct=0.01)
    rules.on_tick(*entry(100.0))
    assert rules.on_tick(tick(50.0, "MSFT"), []) == []
    closing = tick(100.0)
    sell = Signal(
        id="s-sell",
        symbol="AAPL",
        timestamp=closing.timestamp,
        side="sell",
        price=100.0,
        confidence=1,
        strategy="x",
        tick_id=closing.id,
    )
    rules.on_tick(closing, [sell])
    assert rules.on_tick(tick(10.0), []) == []


def test_exits_go_out_as_orders_and_survive_a_checkpoint() -> None:
    class Buys:
        """A stand-in strategy book: buys on the first tick of a symbol, then nothing."""

        def __init__(self) -> None:
            self.seen: set[str] = set()

        def on_tick(self, t: Tick, sides: frozenset[str]) -> list[tuple[Signal, Order]]:
            if t.symbol in self.seen:
                return []
            self.seen.add(t.symbol)
            signal = entry(t.price, t.symbol)[1][0]
            return [(signal, Order.from_signal(signal, 5))]

        def take_changes(self) -> list[OrderChange]:
            return []  # it never cancels or replaces

        def snapshot(self) -> dict[str, object]:
            return {"seen": sorted(self.seen)}

        def restore(self, snapshot: dict[str, object]) -> None:
            self.seen = set(snapshot.get("seen", []))  # type: ignore[call-overload]

    def stop_loss() -> ExitRules:
        return ExitRules(stop_loss_pct=0.02)

    state = StrategyPartition(Buys, order_quantity=5, exits=stop_loss)  # type: ignore[arg-type]
    assert [stream for stream, _ in state.apply([tick(100.0)])] == [signal_stream(0), ORDERS_NEW]
    restored = StrategyPartition(Buys, order_quantity=5, exits=stop_loss)  # type: ignore[arg-type]
    restored.restore(state.checkpoint())
    outputs = restored.apply([tick(97.0)])
    orders = [event for stream, event in outputs if stream == ORDERS_NEW]
    assert len(orders) == 1
    assert isinstance(orders[0], Order)
    assert (orders[0].side, orders[0].quantity, orders[0].reference_price) == ("sell", 5, 97.0)


def tick_atr_rules(multiple: float, window: int = 2) -> ExitRules:
    """ATR over bars of one tick each: a bar's true range is the move from the previous tick."""
    return ExitRules(atr_multiple=multiple, new_volatility=lambda: BarATR(window, 0))


def warm(rules: ExitRules) -> None:
    """Moves of 0 and 4 then 4: the ATR of a 2-bar window is 2.0, then 3.0 (Wilder smoothing)."""
    for price in (100.0, 104.0):
        rules.on_tick(tick(price), [])


@pytest.mark.parametrize(("above_the_stop", "fires"), [(0.0, True), (0.0001, False)])
def test_the_atr_stop_fires_exactly_at_entry_less_k_atrs(above_the_stop: float, fires: bool) -> None:
    rules = tick_atr_rules(1.5)
    warm(rules)
    rules.on_tick(*entry(100.0))  # its move of 4 makes the ATR (2 x 1 + 4) / 2 = 3.0
    (trade,) = rules.trades.values()
    assert trade.atr_stop == 100.0 - 1.5 * 3.0 == 95.5
    fired = rules.on_tick(tick(95.5 + above_the_stop), [])
    assert [s.strategy for s in fired] == (["exit:atr_stop"] if fires else [])


def test_a_trade_opened_before_the_atr_is_known_gets_its_stop_when_it_is() -> None:
    rules = tick_atr_rules(2.0)
    rules.on_tick(*entry(100.0))  # the first bar: a 2-bar ATR is not known yet
    (trade,) = rules.trades.values()
    assert trade.atr_stop is None
    assert rules.on_tick(tick(101.0), []) == []  # moves 0 and 1: ATR 0.5, the stop 100 - 2 x 0.5
    assert trade.atr_stop == 99.0
    assert rules.on_tick(tick(99.01), []) == []  # the stop stays where the trade's first ATR put it
    assert [s.strategy for s in rules.on_tick(tick(99.0), [])] == ["exit:atr_stop"]


def test_the_atr_and_the_stop_survive_a_snapshot_and_a_json_round_trip() -> None:
    rules = tick_atr_rules(1.0, window=3)
    for price in (100.0, 101.0, 99.0, 102.0):
        rules.on_tick(tick(price), [])
    rules.on_tick(*entry(101.0))
    restored = tick_atr_rules(1.0, window=3)
    restored.restore(json.loads(json.dumps(rules.snapshot())))
    assert restored.snapshot() == rules.snapshot()
    after = [tick(price) for price in (100.0, 99.0, 98.0, 97.0)]
    assert [[s.id for s in rules.on_tick(t, [])] for t in after] == [
        [s.id for s in restored.on_tick(t, [])] for t in after
    ]


def test_atr_exits_are_off_at_multiple_zero_and_read_an_old_checkpoint() -> None:
    rules = tick_atr_rules(0.0)
    assert not rules.enabled
    rules.restore({"AAPL": [100.0, 101.0]})  # before ATR stops: [entry, peak]
    assert rules.trades["AAPL"].atr_stop is None


@pytest.mark.parametrize(("below_the_target", "fires"), [(0.0, True), (0.0001, False)])
def test_the_atr_target_fires_exactly_at_entry_plus_m_atrs(below_the_target: float, fires: bool) -> None:
    rules = ExitRules(take_profit_atr_multiple=2.0, new_volatility=lambda: BarATR(2, 0))
    assert rules.enabled
    warm(rules)
    rules.on_tick(*entry(100.0))  # the ATR is 3.0 (see warm)
    (trade,) = rules.trades.values()
    assert (trade.atr_stop, trade.atr_target) == (None, 106.0)
    assert rules.on_tick(tick(105.0), []) == []  # the target stays where the trade's first ATR put it
    assert trade.atr_target == 106.0
    fired = rules.on_tick(tick(106.0 - below_the_target), [])
    assert [s.strategy for s in fired] == (["exit:atr_take_profit"] if fires else [])
    restored = ExitRules(take_profit_atr_multiple=2.0, new_volatility=lambda: BarATR(2, 0))
    restored.restore(json.loads(json.dumps(rules.snapshot())))
    assert restored.snapshot() == rules.snapshot()
