"""Report statistics against empyrical on the same returns, to 1e-6."""

from __future__ import annotations

import math

import empyrical
import numpy as np
import pandas as pd
import pytest

from tradebot.backtest import stats

TOLERANCE = 1e-6
PERIODS = 252


def equity_curve(seed: int, samples: int = 400) -> list[float]:
    rng = np.random.default_rng(seed)
    returns = rng.normal(0.0004, 0.012, samples)
    return list(100_000 * np.cumprod(np.concatenate([[1.0], 1 + returns])))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_curve_statistics_match_empyrical(seed: int) -> None:
    equity = equity_curve(seed)
    returns = pd.Series(stats.returns_of(equity))
    ours = stats.curve_stats(equity, PERIODS)
    reference = {
        "cagr": empyrical.cagr(returns, annualization=PERIODS),
        "volatility": empyrical.annual_volatility(returns, annualization=PERIODS),
        "sharpe": empyrical.sharpe_ratio(returns, annualization=PERIODS),
        "sortino": empyrical.sortino_ratio(returns, annualization=PERIODS),
        "calmar": empyrical.calmar_ratio(returns, annualization=PERIODS),
        "max_drawdown": empyrical.max_drawdown(returns),
        "total_return": empyrical.cum_returns_final(returns),
    }
    for name, expected in reference.items():
        assert ours[name] == pytest.approx(expected, abs=TOLERANCE, rel=TOLERANCE), name


def test_statistics_at_another_sampling_rate_match_too() -> None:
    equity = equity_curve(9, 1000)
    returns = pd.Series(stats.returns_of(equity))
    minutes = 252 * 390
    assert stats.sharpe(list(returns), minutes) == pytest.approx(
        empyrical.sharpe_ratio(returns, annualization=minutes), rel=TOLERANCE
    )
    assert stats.cagr(list(returns), minutes) == pytest.approx(
        empyrical.cagr(returns, annualization=minutes), rel=TOLERANCE
    )


def test_drawdown_depth_and_duration() -> None:
    equity = [100.0, 110, 99, 104, 108, 110, 121, 60, 70]
    assert stats.max_drawdown(equity) == pytest.approx(60 / 121 - 1)
    # 99, 104, 108 are below the 110 peak until it is regained; 60 and 70 are below 121 to the end
    assert stats.max_drawdown_duration(equity) == 3
    assert stats.max_drawdown_duration([100.0, 90, 80, 100]) == 2


def test_trade_statistics() -> None:
    figures = stats.TradeStats.of([10.0, -5.0, 20.0, -5.0])
    assert figures.trades == 4
    assert figures.win_rate == 0.5
    assert figures.profit_factor == 3.0
    assert figures.expectancy == 5.0
    assert figures.average_win == 15.0
    assert figures.average_loss == -5.0
    assert math.isnan(stats.TradeStats.of([]).win_rate)
    assert stats.TradeStats.of([1.0]).profit_factor == math.inf
