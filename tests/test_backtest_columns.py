"""Stored ticks as columns (TickColumns, what load_ticks returns) are the same ticks, and a backtest
over them is the same backtest: signals, orders, fills, equity and account, for every kind of strategy.
And a run pauses the cyclic garbage collector, then leaves it as it found it."""

from __future__ import annotations

import gc

import pytest

from tests.backtest_helpers import crossover_specs, mock_ticks
from tradebot.backtest.engine import Backtest, run_backtest
from tradebot.broker.paper import PaperBroker
from tradebot.common.models import Signal, Tick
from tradebot.strategy.base import trade_taker
from tradebot.strategy.batch import Batch, TickColumns
from tradebot.strategy.book import StrategyBook, StrategySpec
from tradebot.strategy.mean_reversion import RSIReversion

TICKS = mock_ticks()
SPECS = (
    *crossover_specs((5, 20)),  # scanned at once
    StrategySpec("ema", "ma_crossover", {"average": "ema", "timeframe": "1m"}),  # one by one, bars from ticks
    StrategySpec("reversion", "rsi_reversion", {}),
)


def test_columns_are_a_sequence_of_the_same_ticks() -> None:
    columns = TickColumns.of(TICKS)
    assert len(columns) == len(TICKS)
    assert list(columns) == TICKS
    assert columns[17] == TICKS[17]
    assert columns[-1] == TICKS[-1]
    assert list(columns[100:250]) == TICKS[100:250]
    assert isinstance(columns[100:250], TickColumns)
    assert [t.model_dump_json() for t in columns[:50]] == [t.model_dump_json() for t in TICKS[:50]]
    with pytest.raises(IndexError):
        columns[len(TICKS)]
    with pytest.raises(ValueError, match="same length"):
        TickColumns(["a"], [], [], [], [], [])


def test_a_backtest_over_columns_is_the_backtest_over_the_ticks() -> None:
    over_ticks = run_backtest(StrategyBook(SPECS), TICKS, PaperBroker(100_000.0, 1.0, 0.005))
    over_columns = run_backtest(StrategyBook(SPECS), TickColumns.of(TICKS), PaperBroker(100_000.0, 1.0, 0.005))
    assert {s.strategy for s in over_ticks.signals} == {"cross_5_20", "ema", "reversion"}
    assert over_columns.signals == over_ticks.signals
    assert over_columns.orders == over_ticks.orders
    assert over_columns.events == over_ticks.events
    assert over_columns.equity == over_ticks.equity
    assert over_columns.account == over_ticks.account
    assert over_columns.first_price == over_ticks.first_price
    assert over_columns.last_price == over_ticks.last_price


def test_columns_fed_in_slices_give_what_one_feed_gives() -> None:
    whole = run_backtest(StrategyBook(SPECS), TICKS, PaperBroker(100_000.0, 1.0, 0.005))
    run = Backtest(StrategyBook(SPECS), PaperBroker(100_000.0, 1.0, 0.005))
    columns = TickColumns.of(TICKS)
    for start in range(0, len(columns), 1234):
        run.feed(columns[start : start + 1234])
    sliced = run.finish()
    assert sliced.events == whole.events
    assert sliced.equity == whole.equity
    assert sliced.last_price == whole.last_price


def test_a_run_pauses_the_collector_and_restores_it_as_it_was() -> None:
    seen: list[bool] = []

    def check(order: object, broker: object) -> None:
        seen.append(gc.isenabled())  # asked during the run, for every order

    assert gc.isenabled()
    run_backtest(StrategyBook(SPECS), TICKS, PaperBroker(100_000.0, 1.0, 0.005), check=check)  # type: ignore[arg-type]
    assert seen
    assert not any(seen)
    assert gc.isenabled()
    gc.disable()
    try:
        run_backtest(StrategyBook(SPECS), TICKS[:500], PaperBroker(100_000.0, 1.0, 0.005))
        assert not gc.isenabled()  # left as it was
    finally:
        gc.enable()


def test_columns_fed_one_tick_at_a_time_give_what_one_feed_gives() -> None:
    # batches of one (Batch's symbol lookup of a single item; the time-order check of one time)
    ticks = TickColumns.of(TICKS[:600])
    whole = run_backtest(StrategyBook(SPECS), ticks, PaperBroker(100_000.0, 1.0, 0.005))
    run = Backtest(StrategyBook(SPECS), PaperBroker(100_000.0, 1.0, 0.005))
    for start in range(len(ticks)):
        run.feed(ticks[start : start + 1])
    single = run.finish()
    assert single.signals
    assert single.signals == whole.signals
    assert single.events == whole.events
    assert single.equity == whole.equity
    assert Batch(ticks[:1]).rows.keys() == {ticks[0].symbol}


class TickCountingReversion(RSIReversion):
    """A strategy that changes on_tick: a backtest over columns must still hand it every Tick."""

    def __init__(self, **parameters: object) -> None:
        super().__init__(**parameters)  # type: ignore[arg-type]
        self.ticks: list[Tick] = []

    def on_tick(self, tick: Tick) -> list[Signal]:
        self.ticks.append(tick)
        return super().on_tick(tick)


def test_a_bar_strategy_takes_stored_ticks_values_unless_it_changed_on_tick() -> None:
    some = tuple(sorted({t.symbol for t in TICKS})[:2])
    specs = (
        StrategySpec("counted", f"{__name__}:TickCountingReversion", {}),
        StrategySpec("some", "rsi_reversion", {}, symbols=some),  # one by one over a part of the batch
        StrategySpec("ensemble", "ensemble", {"timeframe": "tick"}),
    )
    columns, ticks = StrategyBook(specs), StrategyBook(specs)
    over_columns = run_backtest(columns, TickColumns.of(TICKS), PaperBroker(100_000.0, 1.0, 0.005))
    over_ticks = run_backtest(ticks, TICKS, PaperBroker(100_000.0, 1.0, 0.005))
    assert {s.strategy for s in over_ticks.signals} == {"counted", "some", "ensemble"}
    assert over_columns.signals == over_ticks.signals
    assert over_columns.events == over_ticks.events
    assert columns.entries[0].strategy.ticks == TICKS  # type: ignore[attr-defined]
    assert trade_taker(columns.entries[0].strategy) is None
    assert trade_taker(columns.entries[2].strategy) is not None
