"""Performance statistics of an equity curve and a list of closed trades.

Definitions follow empyrical (the tests compare to 1e-6): simple returns between samples,
no risk-free rate, sample standard deviation, annualised by the samples per year; CAGR over the
number of samples; drawdowns measured from the running peak including the starting equity.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass


def returns_of(equity: Sequence[float]) -> list[float]:
    """Simple returns between consecutive equity samples (the first sample is the start)."""
    return [after / before - 1 for before, after in itertools.pairwise(equity)]


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _std(values: Sequence[float]) -> float:
    if len(values) < 2:
        return math.nan
    mean = _mean(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _ratio(numerator: float, denominator: float) -> float:
    if math.isnan(numerator) or math.isnan(denominator) or denominator == 0:
        return math.nan
    return numerator / denominator


def cagr(returns: Sequence[float], periods_per_year: float) -> float:
    """Compound annual growth: the total growth raised to one over the years the samples span."""
    if not returns:
        return math.nan
    growth = math.prod(1 + r for r in returns)
    return growth ** (periods_per_year / len(returns)) - 1


def volatility(returns: Sequence[float], periods_per_year: float) -> float:
    return _std(returns) * math.sqrt(periods_per_year)


def sharpe(returns: Sequence[float], periods_per_year: float) -> float:
    return _ratio(_mean(returns), _std(returns)) * math.sqrt(periods_per_year)


def sortino(returns: Sequence[float], periods_per_year: float) -> float:
    """Annualised mean return over annualised downside deviation (below 0)."""
    if not returns:
        return math.nan
    downside = math.sqrt(_mean([min(r, 0.0) ** 2 for r in returns])) * math.sqrt(periods_per_year)
    return _ratio(_mean(returns) * periods_per_year, downside)


def drawdowns(equity: Sequence[float]) -> list[float]:
    """Per sample, how far below the running peak the equity is (0 or negative fractions)."""
    peak = -math.inf
    found = []
    for value in equity:
        peak = max(peak, value)
        found.append(value / peak - 1)
    return found


def max_drawdown(equity: Sequence[float]) -> float:
    return min(drawdowns(equity), default=0.0)


def max_drawdown_duration(equity: Sequence[float]) -> int:
    """The most samples spent below a previous peak before regaining it (or until the end)."""
    longest = current = 0
    for depth in drawdowns(equity):
        current = current + 1 if depth < 0 else 0
        longest = max(longest, current)
    return longest


def calmar(returns: Sequence[float], equity: Sequence[float], periods_per_year: float) -> float:
    return _ratio(cagr(returns, periods_per_year), abs(max_drawdown(equity)))


@dataclass(frozen=True)
class TradeStats:
    """Closed round trips: how many, how often they won, and by how much."""

    trades: int
    win_rate: float
    profit_factor: float
    expectancy: float
    average_win: float
    average_loss: float
    gross_profit: float
    gross_loss: float

    @classmethod
    def of(cls, pnls: Sequence[float]) -> TradeStats:
        wins = [p for p in pnls if p > 0]
        losses = [p for p in pnls if p < 0]
        gross_profit, gross_loss = sum(wins), -sum(losses)
        return cls(
            trades=len(pnls),
            win_rate=_ratio(len(wins), len(pnls)),
            profit_factor=math.inf if gross_loss == 0 and gross_profit > 0 else _ratio(gross_profit, gross_loss),
            expectancy=_mean(pnls),
            average_win=_mean(wins),
            average_loss=_mean(losses),
            gross_profit=gross_profit,
            gross_loss=gross_loss,
        )


def curve_stats(equity: Sequence[float], periods_per_year: float) -> dict[str, float]:
    """The return and risk figures of an equity curve whose first value is the starting equity."""
    returns = returns_of(equity)
    return {
        "total_return": equity[-1] / equity[0] - 1 if equity else math.nan,
        "cagr": cagr(returns, periods_per_year),
        "volatility": volatility(returns, periods_per_year),
        "sharpe": sharpe(returns, periods_per_year),
        "sortino": sortino(returns, periods_per_year),
        "calmar": calmar(returns, equity, periods_per_year),
        "max_drawdown": max_drawdown(equity),
        "max_drawdown_samples": float(max_drawdown_duration(equity)),
    }
