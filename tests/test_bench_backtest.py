"""The backtest section of `tradebot bench` at tiny sizes: every figure has a value and a method."""

from __future__ import annotations

import sys

import pytest

from tradebot.bench.backtest import CROSSOVER_BARS, _rate, bench_bars, measure_backtest
from tradebot.bench.backtest_compare import backtesting_py_ratio, vectorbt_ratio


def test_the_backtest_section_measures_ticks_bars_and_the_optimiser() -> None:
    figures = measure_backtest(ticks=6_000, bars=200)  # 60 ticks per symbol: a few crosses
    assert [f.name for f in figures][:7] == [
        "backtest ticks/s, crossover 5/20",
        "backtest ticks/s, crossover 5/20, Tick objects",
        "backtest ticks/s, crossover 50/200",
        "backtest ticks/s, ensemble",
        "backtest bars/s, crossover 5/20",
        "backtest bars/s, ensemble",
        "optimiser speed-up, 2 processes",
    ]
    assert all(f.value is not None and f.value > 0 and f.method for f in figures[:7])
    # backtesting.py and vectorbt are installed for the bench only: without one its ratio says how to install it
    assert [f.name for f in figures[7:]] == ["backtest bars/s vs backtesting.py", "backtest bars/s vs vectorbt"]
    for comparison in figures[7:]:
        assert (comparison.value is None) == ("install" in comparison.detail)
    assert figures[0].detail["signals"] > 0
    assert figures[0].detail == figures[1].detail  # columns or objects: the same run
    assert "% of them" in figures[0].method  # the signal rate, which sets the speed, is stated


def test_the_vectorbt_comparison_checks_its_trades_are_ours() -> None:
    pytest.importorskip("vectorbt")  # for the bench only
    bars = bench_bars(2_000, symbols=1)
    ours, result = _rate(CROSSOVER_BARS, bars)
    figure = vectorbt_ratio(bars, ours, result)
    assert figure.detail["trades"] > 10
    assert figure.detail["same_trades"], figure.detail
    assert figure.value is not None
    assert figure.value > 0


def test_a_missing_library_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vectorbt", None)  # import fails as if it were not installed
    monkeypatch.setitem(sys.modules, "backtesting", None)
    bars = bench_bars(300, symbols=1)
    ours, result = _rate(CROSSOVER_BARS, bars)
    for figure in (backtesting_py_ratio(bars, ours), vectorbt_ratio(bars, ours, result)):
        assert figure.value is None
        assert "pip install backtesting vectorbt" in figure.method


def test_bench_bars_are_whole_minutes_in_time_order() -> None:
    bars = bench_bars(100, symbols=5)
    assert len(bars) == 100
    assert all(b.timestamp.second == 0 for b in bars)
    assert [b.timestamp for b in bars] == sorted(b.timestamp for b in bars)
