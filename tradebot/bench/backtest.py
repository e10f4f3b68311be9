"""Backtest speed per core: ticks/s and bars/s through the whole backtest loop, and the optimiser's
speed-up on two processes.

Each figure runs the real loop (StrategyBook + PaperBroker + equity sampling) in this one process
and is timed in CPU seconds of the process (``time.process_time``), so it is a per-core number that
other load on the machine does not shrink; the optimiser's speed-up is wall time. Ticks are
mock-feed ticks of 100 symbols; bars are 1-minute bars of 20 symbols built from the same feed
(four ticks a minute each), fed to the strategies as stored bars.
"""

from __future__ import annotations

import time
import warnings
from datetime import UTC, datetime, timedelta

from tradebot.backtest.engine import run_backtest
from tradebot.backtest.optimize import optimize
from tradebot.backtest.run import BacktestRequest
from tradebot.bench.report import Figure
from tradebot.broker.paper import PaperBroker
from tradebot.common.models import Bar, Tick
from tradebot.market_data.mock_feed import MockFeed
from tradebot.strategy.bars import BarBuilder
from tradebot.strategy.book import StrategyBook, StrategySpec
from tradebot.universe.resolver import curated_symbols

SECTION = "backtest"
START = datetime(2025, 1, 2, 14, 30, tzinfo=UTC)
CROSSOVER = StrategySpec("crossover", "ma_crossover", {"short_window": 5, "long_window": 20})
ENSEMBLE_TICKS = StrategySpec("ensemble", "ensemble", {"timeframe": "tick"})
ENSEMBLE_BARS = StrategySpec("ensemble", "ensemble", {"timeframe": "1m"})
CROSSOVER_BARS = StrategySpec("crossover", "ma_crossover", {"short_window": 5, "long_window": 20, "timeframe": "1m"})


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


def _rate(spec: StrategySpec, observations: list) -> tuple[float, int]:
    began = time.process_time()
    result = run_backtest(StrategyBook([spec]), observations, PaperBroker(10_000_000.0, 1.0, 0.005))
    return len(observations) / (time.process_time() - began), len(result.signals)


def _figure(name: str, unit: str, spec: StrategySpec, observations: list, what: str) -> Figure:
    rate, signals = _rate(spec, observations)
    method = (
        f"run_backtest (StrategyBook + PaperBroker + 1-minute equity samples) of {spec.cls} {spec.parameters} over "
        f"{len(observations):,} {what} in one process, per CPU second ({signals:,} signals, each an order and a fill)"
    )
    return Figure(SECTION, name, rate, unit, method, {"signals": signals})


def optimizer_speedup(ticks: list[Tick]) -> Figure:
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


def backtesting_py_ratio(bars: list[Bar]) -> Figure | None:
    """Our crossover on one symbol's bars against backtesting.py's on the same bars, if it is installed."""
    try:
        import pandas
        from backtesting import Backtest, Strategy
        from backtesting.lib import crossover
    except ImportError:
        return None  # installed for the bench only (pip install backtesting)

    def sma(values, window):  # type: ignore[no-untyped-def]
        return pandas.Series(values).rolling(window).mean()

    class SmaCross(Strategy):  # type: ignore[misc]  # long only, like ours: buy on the cross up, close on the cross down
        def init(self) -> None:
            self.short = self.I(sma, self.data.Close, 5)
            self.long = self.I(sma, self.data.Close, 20)

        def next(self) -> None:
            if crossover(self.short, self.long):
                self.buy()
            elif crossover(self.long, self.short):
                self.position.close()

    frame = pandas.DataFrame(
        {"Open": [b.open for b in bars], "High": [b.high for b in bars], "Low": [b.low for b in bars],
         "Close": [b.close for b in bars], "Volume": [b.volume for b in bars]},
        index=pandas.DatetimeIndex([b.timestamp for b in bars]),
    )  # fmt: skip
    began = time.process_time()
    with warnings.catch_warnings():  # it warns on every buy it cannot afford while already long
        warnings.simplefilter("ignore")
        Backtest(frame, SmaCross, cash=10_000_000, finalize_trades=True).run()
    theirs = len(bars) / (time.process_time() - began)
    ours, _ = _rate(CROSSOVER_BARS, bars)
    method = (
        f"crossover 5/20 on the same {len(bars):,} 1-minute bars of one symbol: our bars/s (run_backtest) over "
        "backtesting.py's (Backtest(...).run(), SMA via pandas, long only), both in CPU seconds"
    )
    return Figure(SECTION, "backtest bars/s vs backtesting.py", ours / theirs, "x", method,
                  {"ours_bars_per_s": round(ours), "backtesting_py_bars_per_s": round(theirs)})  # fmt: skip


def measure_backtest(ticks: int, bars: int) -> list[Figure]:
    """Ticks/s and bars/s for the crossover and the ensemble, and the optimiser's speed-up."""
    tick_sample, bar_sample = bench_ticks(ticks), bench_bars(bars)
    figures = [
        _figure("backtest ticks/s, crossover 5/20", "ticks/s", CROSSOVER, tick_sample, "mock ticks of 100 symbols"),
        _figure("backtest ticks/s, ensemble", "ticks/s", ENSEMBLE_TICKS, tick_sample, "mock ticks of 100 symbols"),
        _figure("backtest bars/s, crossover 5/20", "bars/s", CROSSOVER_BARS, bar_sample, "1-minute bars of 20 symbols"),
        _figure("backtest bars/s, ensemble", "bars/s", ENSEMBLE_BARS, bar_sample, "1-minute bars of 20 symbols"),
        optimizer_speedup(tick_sample[: ticks // 2]),
    ]
    comparison = backtesting_py_ratio(bench_bars(bars, symbols=1))
    return figures if comparison is None else [*figures, comparison]
