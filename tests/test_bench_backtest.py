"""The backtest section of `tradebot bench` at tiny sizes: every figure has a value and a method."""

from __future__ import annotations

from tradebot.bench.backtest import bench_bars, measure_backtest


def test_the_backtest_section_measures_ticks_bars_and_the_optimiser() -> None:
    figures = measure_backtest(ticks=6_000, bars=200)  # 60 ticks per symbol: a few crosses
    assert [f.name for f in figures][:5] == [
        "backtest ticks/s, crossover 5/20",
        "backtest ticks/s, ensemble",
        "backtest bars/s, crossover 5/20",
        "backtest bars/s, ensemble",
        "optimiser speed-up, 2 processes",
    ]
    assert all(f.value is not None and f.value > 0 and f.method for f in figures)
    # with backtesting.py installed (for the bench only) a sixth figure compares with it
    assert [f.name for f in figures[5:]] in ([], ["backtest bars/s vs backtesting.py"])
    assert figures[0].detail["signals"] > 0


def test_bench_bars_are_whole_minutes_in_time_order() -> None:
    bars = bench_bars(100, symbols=5)
    assert len(bars) == 100
    assert all(b.timestamp.second == 0 for b in bars)
    assert [b.timestamp for b in bars] == sorted(b.timestamp for b in bars)
