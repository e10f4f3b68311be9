"""Backtest speed per core: ticks/s and bars/s through the whole backtest loop, the optimiser's
speed-up on two processes, and the ratios to backtesting.py and vectorbt (backtest_compare.py).

Each figure runs the real loop (StrategyBook + PaperBroker + equity sampling) in this one process
and is timed in CPU seconds of the process (``time.process_time``), so it is a per-core number that
other load on the machine does not shrink; the optimiser's speed-up is wall time. Ticks are
mock-feed ticks of 100 symbols, fed as ``load_ticks`` gives stored ticks (columns, TickColumns;
also once as Tick objects); bars are 1-minute bars of 20 symbols built from the same feed (four
ticks a minute each), fed to the strategies as stored bars.

How many observations signal sets the rate: each signal becomes a Signal, an Order and a fill
through the live book and paper broker (tens of µs), while one that emits nothing costs well under
a microsecond. On the mock feed (a random walk, like real prices at this scale) a crossover signals
about once per 0.8 long windows: 6.2 % of ticks for 5/20, 0.58 % for 50/200; both are reported.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from tradebot.backtest.engine import BacktestResult, run_backtest
from tradebot.backtest.optimize import optimize
from tradebot.backtest.run import BacktestRequest
from tradebot.bench.backtest_compare import backtesting_py_ratio, vectorbt_ratio
from tradebot.bench.report import Figure
from tradebot.broker.paper import PaperBroker
from tradebot.common.models import Bar, Tick
from tradebot.market_data.mock_feed import MockFeed
from tradebot.strategy.bars import BarBuilder
from tradebot.strategy.batch import TickColumns
from tradebot.strategy.book import StrategyBook, StrategySpec
from tradebot.universe.resolver import curated_symbols

SECTION = "backtest"
START = datetime(2025, 1, 2, 14, 30, tzinfo=UTC)
CROSSOVER = StrategySpec("crossover", "ma_crossover", {"short_window": 5, "long_window": 20})
ENSEMBLE_TICKS = StrategySpec("ensemble", "ensemble", {"timeframe": "tick"})
ENSEMBLE_BARS = StrategySpec("ensemble", "ensemble", {"timeframe": "1m"})
CROSSOVER_BARS = StrategySpec("crossover", "ma_crossover", {"short_window": 5, "long_window": 20, "timeframe": "1m"})
SLOW_CROSSOVER = StrategySpec("crossover", "ma_crossover", {"short_window": 50, "long_window": 200})


def bench_ticks(count: int, symbols: int = 100, every: timedelta = timedelta(seconds=1)) -> list[Tick]:
    """Mock ticks, one per symbol ``every``."""
    names = curated_symbols("popular")[:symbols]
    return MockFeed(names, 42, clock=lambda: START, step=every / len(names)).take(count)


def bench_bars(count: int, symbols: int = 20) -> list[Bar]:
    """``count`` 1-minute bars built from mock ticks (4 per bar), in time order."""
    ticks = bench_ticks((count + symbols) * 4, symbols, timedelta(seconds=15))  # the extra minute closes the last
    builders: dict[str, BarBuilder] = {}
    bars: list[Bar] = []
    for tick in ticks:
        done = builders.setdefault(tick.symbol, BarBuilder(60)).add_tick(
            tick.timestamp.timestamp(), tick.price, tick.size
        )
        if done is not None:
            at = datetime.fromtimestamp(done.start, UTC)
            bars.append(Bar(id=Bar.bar_id("bench", tick.symbol, "1m", at), symbol=tick.symbol, timestamp=at,
                            timeframe="1m", open=done.open, high=done.high, low=done.low, close=done.close,
                            volume=done.volume, trade_count=done.count, vwap=None, version=0))  # fmt: skip
    return bars[:count]


def _rate(spec: StrategySpec, observations: Sequence[Any]) -> tuple[float, BacktestResult]:
    began = time.process_time()
    result = run_backtest(StrategyBook([spec]), observations, PaperBroker(10_000_000.0, 1.0, 0.005))
    return len(observations) / (time.process_time() - began), result


def _figure(name: str, unit: str, spec: StrategySpec, observations: Sequence[Any], what: str) -> Figure:
    rate, result = _rate(spec, observations)
    signals = len(result.signals)
    method = (
        f"run_backtest (StrategyBook + PaperBroker + 1-minute equity samples) of {spec.cls} {spec.parameters} over "
        f"{len(observations):,} {what} in one process, per CPU second ({signals:,} signals, "
        f"{signals / len(observations):.2%} of them, each an order and a fill)"
    )
    return Figure(SECTION, name, rate, unit, method, {"signals": signals})


def optimizer_speedup(ticks: Sequence[Tick]) -> Figure:
    """Wall time of the same 8-candidate, 2-fold search in one process over two."""
    request = BacktestRequest(("X",), START, START + timedelta(days=1), (CROSSOVER,))
    grid = {"short_window": [3, 5, 8, 10], "long_window": [20, 40]}
    timings = []
    for processes in (1, 2):
        began = time.perf_counter()
        optimize(request, ticks, grid, folds=2, processes=processes)
        timings.append(time.perf_counter() - began)
    method = f"tradebot optimize's search (8 candidates x 2 folds + out-of-sample runs) over {len(ticks):,} ticks"
    return Figure(SECTION, "optimiser speed-up, 2 processes", timings[0] / timings[1], "x", method,
                  {"one_process_s": round(timings[0], 3), "two_processes_s": round(timings[1], 3)})  # fmt: skip


def measure_backtest(ticks: int, bars: int) -> list[Figure]:
    """Ticks/s and bars/s for the crossover and the ensemble, and the optimiser's speed-up."""
    tick_sample, bar_sample = bench_ticks(ticks), bench_bars(bars)
    stored = TickColumns.of(tick_sample)  # what load_ticks returns
    figures = [
        _figure("backtest ticks/s, crossover 5/20", "ticks/s", CROSSOVER, stored, "stored mock ticks of 100 symbols"),
        _figure(
            "backtest ticks/s, crossover 5/20, Tick objects",
            "ticks/s",
            CROSSOVER,
            tick_sample,
            "mock ticks of 100 symbols as Tick objects",
        ),
        _figure(
            "backtest ticks/s, crossover 50/200", "ticks/s", SLOW_CROSSOVER, stored, "stored mock ticks of 100 symbols"
        ),
        _figure("backtest ticks/s, ensemble", "ticks/s", ENSEMBLE_TICKS, stored, "stored mock ticks of 100 symbols"),
        _figure("backtest bars/s, crossover 5/20", "bars/s", CROSSOVER_BARS, bar_sample, "1-minute bars of 20 symbols"),
        _figure("backtest bars/s, ensemble", "bars/s", ENSEMBLE_BARS, bar_sample, "1-minute bars of 20 symbols"),
        optimizer_speedup(stored[: ticks // 2]),
    ]
    one_symbol = bench_bars(bars, symbols=1)
    ours, result = _rate(CROSSOVER_BARS, one_symbol)
    return [*figures, backtesting_py_ratio(one_symbol, ours), vectorbt_ratio(one_symbol, ours, result)]
