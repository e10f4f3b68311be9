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

    def votes(self, state: SymbolState, bar: Candle) -> dict[str, tuple[int, float]]:
        """Each voter's (vote, weight) on this bar; voters still warming up are left out."""
        found = {name: indicator.update(*self._inputs(name, bar)) for name, indicator in state.indicators.items()}  # type: ignore[attr-defined]
        votes: dict[str, int] = {}
        if found["rsi"] is not None:
            votes["rsi"] = 1 if found["rsi"] < 30 else -1 if found["rsi"] > 70 else 0
        if found["macd"] is not None:
            votes["macd"] = _sign(found["macd"][2])
        if found["bollinger"] is not None:
            lower, _, upper = found["bollinger"]
            votes["bollinger"] = 1 if bar.close < lower else -1 if bar.close > upper else 0
        if found["stochastic"] is not None:
            k = found["stochastic"][0]
            votes["stochastic"] = 1 if k < 20 else -1 if k > 80 else 0
        if found["trend"] is not None:
            votes["trend"] = _sign(bar.close - found["trend"])
        trending = found["adx"] is not None and found["adx"] > TRENDING_ADX
        weighted = {name: (vote, self.weights.get(name, 0.0)) for name, vote in votes.items()}
        if trending and "trend" in weighted:
            weighted["trend"] = (weighted["trend"][0], 2 * weighted["trend"][1])
        return weighted

    @staticmethod
    def _inputs(name: str, bar: Candle) -> tuple[float, ...]:
        return (bar.high, bar.low, bar.close) if name in ("stochastic", "adx") else (bar.close,)

    def decide(self, state: SymbolState, bar: Candle) -> Decision | None:
        weighted = self.votes(state, bar)
        total_weight = sum(weight for _, weight in weighted.values())
        if len(weighted) < len(DEFAULT_WEIGHTS) or total_weight == 0:
            return None  # every voter must be warm: a partial vote is not the configured ensemble
        score = sum(vote * weight for vote, weight in weighted.values()) / total_weight
        if score >= self.threshold:
            return "buy", score
        if score <= -self.threshold:
            return "sell", -score
        return None
