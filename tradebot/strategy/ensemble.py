"""A weighted vote of indicator signals, with the vote's strength as the confidence.

Each voter says +1 (buy), -1 (sell) or 0 (no opinion) on every bar:

- ``rsi``: +1 below 30, -1 above 70 (oversold / overbought);
- ``macd``: the sign of the MACD histogram (12/26/9);
- ``bollinger``: +1 below the lower band, -1 above the upper band (20 bars, 2 deviations);
- ``stochastic``: +1 when %K is below 20, -1 above 80 (14/3);
- ``trend``: +1 when the close is above its 50-bar SMA, -1 below; its weight doubles while the
  ADX (14) says the market is trending (above 25).

The score is the weighted mean of the votes, in [-1, 1]. A BUY fires when it reaches
``threshold`` while flat, a SELL when it reaches ``-threshold`` while holding; the confidence is
the score's size.
"""

from __future__ import annotations

import operator

from tradebot.strategy.bars import Candle
from tradebot.strategy.base import BarStrategy, Decision, SymbolState
from tradebot.strategy.indicators import ADX, MACD, RSI, SMA, Bollinger, Indicator, Stochastic

DEFAULT_WEIGHTS = {"rsi": 1.0, "macd": 1.0, "bollinger": 1.0, "stochastic": 1.0, "trend": 1.0}
TRENDING_ADX = 25.0


def _sign(value: float) -> int:
    return (value > 0) - (value < 0)


class WeightedEnsemble(BarStrategy):
    """The weighted-voting ensemble (see the module docstring).

    Parameters: ``weights`` (voter name → weight ≥ 0; the default weighs all five equally),
    ``threshold`` (0.5), ``trend_window`` (50), ``timeframe`` ("5m").
    """

    default_name = "ensemble"

    def __init__(
        self,
        weights: dict[str, float] | None = None,
        threshold: float = 0.5,
        trend_window: int = 50,
        *,
        timeframe: str = "5m",
        name: str | None = None,
    ):
        weights = dict(DEFAULT_WEIGHTS if weights is None else weights)
        unknown = set(weights) - set(DEFAULT_WEIGHTS)
        if unknown:
            raise ValueError(f"unknown voters {sorted(unknown)}: use {', '.join(DEFAULT_WEIGHTS)}")
        if any(w < 0 for w in weights.values()) or not any(weights.values()):
            raise ValueError("weights must be >= 0 and not all 0")
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.weights, self.threshold, self.trend_window = weights, threshold, trend_window
        # each voter's weight in DEFAULT_WEIGHTS's order (votes' order), and the same while trending
        self._weights = tuple(weights.get(name, 0.0) for name in DEFAULT_WEIGHTS)
        self._trending_weights = (*self._weights[:-1], 2 * self._weights[-1])
        super().__init__(timeframe=timeframe, name=name)

    def indicators(self) -> dict[str, Indicator]:
        return {
            "rsi": RSI(14),
            "macd": MACD(12, 26, 9),
            "bollinger": Bollinger(20, 2.0),
            "stochastic": Stochastic(14, 3),
            "trend": SMA(self.trend_window),
            "adx": ADX(14),
        }

    def votes(self, state: SymbolState, bar: Candle) -> tuple[tuple[int, ...], tuple[float, ...]] | None:
        """Update every indicator with this bar; each voter's vote and weight, in DEFAULT_WEIGHTS's
        order, or None while a voter is still warming up (a partial vote is not the configured ensemble).

        Per bar of a tick-driven backtest this is most of the strategy's time, so it reads each
        indicator once and builds no per-voter dicts.
        """
        indicators, close, high, low = state.indicators, bar.close, bar.high, bar.low
        rsi = indicators["rsi"].update(close)  # type: ignore[attr-defined]
        macd = indicators["macd"].update(close)  # type: ignore[attr-defined]
        bands = indicators["bollinger"].update(close)  # type: ignore[attr-defined]
        stochastic = indicators["stochastic"].update(high, low, close)  # type: ignore[attr-defined]
        trend = indicators["trend"].update(close)  # type: ignore[attr-defined]
        adx = indicators["adx"].update(high, low, close)  # type: ignore[attr-defined]
        if rsi is None or macd is None or bands is None or stochastic is None or trend is None:
            return None
        k = stochastic[0]
        votes = (
            1 if rsi < 30 else -1 if rsi > 70 else 0,
            _sign(macd[2]),
            1 if close < bands[0] else -1 if close > bands[2] else 0,
            1 if k < 20 else -1 if k > 80 else 0,
            _sign(close - trend),
        )
        if adx is not None and adx > TRENDING_ADX:  # the trend voter's weight doubles while trending
            return votes, self._trending_weights
        return votes, self._weights

    def decide(self, state: SymbolState, bar: Candle) -> Decision | None:
        found = self.votes(state, bar)
        if found is None:
            return None
        votes, weights = found
        total_weight = sum(weights)
        if total_weight == 0:
            return None
        score = sum(map(operator.mul, votes, weights)) / total_weight  # each vote times its weight
        if score >= self.threshold:
            return "buy", score
        if score <= -self.threshold:
            return "sell", -score
        return None
