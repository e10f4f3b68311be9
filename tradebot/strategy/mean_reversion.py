"""Mean-reversion strategies: buy what fell too far, sell once it has come back."""

from __future__ import annotations

from tradebot.strategy.bars import Candle
from tradebot.strategy.base import BarStrategy, Decision, SymbolState
from tradebot.strategy.indicators import RSI, Bollinger, Indicator


def _thresholds(oversold: float, overbought: float) -> None:
    if not 0 < oversold < overbought < 100:
        raise ValueError(f"need 0 < oversold < overbought < 100, got {oversold} and {overbought}")


class RSIReversion(BarStrategy):
    """BUY when the RSI falls below ``oversold``, SELL when it rises above ``overbought``.

    Parameters: ``window`` (14 bars), ``oversold`` (30), ``overbought`` (70), ``timeframe`` ("1m").
    Confidence: how far past the threshold the RSI is, relative to the threshold's distance from
    the edge of the scale.
    """

    default_name = "rsi_reversion"

    def __init__(
        self,
        window: int = 14,
        oversold: float = 30.0,
        overbought: float = 70.0,
        *,
        timeframe: str = "1m",
        name: str | None = None,
    ):
        _thresholds(oversold, overbought)
        self.window, self.oversold, self.overbought = window, oversold, overbought
        super().__init__(timeframe=timeframe, name=name)

    def indicators(self) -> dict[str, Indicator]:
        return {"rsi": RSI(self.window)}

    def decide(self, state: SymbolState, bar: Candle) -> Decision | None:
        rsi = state.indicators["rsi"].update(bar.close)  # type: ignore[attr-defined]
        if rsi is None:
            return None
        if rsi < self.oversold:
            return "buy", (self.oversold - rsi) / self.oversold
        if rsi > self.overbought:
            return "sell", (rsi - self.overbought) / (100 - self.overbought)
        return None


class BollingerRSIReversion(BarStrategy):
    """BUY when the close is below the lower band and the RSI is oversold; SELL back at the mean.

    Parameters: ``window`` (20 bars) and ``deviations`` (2.0) of the bands, ``rsi_window`` (14),
    ``oversold`` (30), ``timeframe`` ("1m"). The position is closed when the close reaches the
    middle band (the mean it was expected to revert to). Confidence: how far below the lower band
    the close is, in band widths.
    """

    default_name = "bollinger_rsi"

    def __init__(
        self,
        window: int = 20,
        deviations: float = 2.0,
        rsi_window: int = 14,
        oversold: float = 30.0,
        *,
        timeframe: str = "1m",
        name: str | None = None,
    ):
        if deviations <= 0:
            raise ValueError(f"deviations must be positive, got {deviations}")
        if not 0 < oversold < 100:
            raise ValueError(f"need 0 < oversold < 100, got {oversold}")
        self.window, self.deviations, self.rsi_window, self.oversold = window, deviations, rsi_window, oversold
        super().__init__(timeframe=timeframe, name=name)

    def indicators(self) -> dict[str, Indicator]:
        return {"bands": Bollinger(self.window, self.deviations), "rsi": RSI(self.rsi_window)}

    def decide(self, state: SymbolState, bar: Candle) -> Decision | None:
        bands = state.indicators["bands"].update(bar.close)  # type: ignore[attr-defined]
        rsi = state.indicators["rsi"].update(bar.close)  # type: ignore[attr-defined]
        if bands is None or rsi is None:
            return None
        lower, middle, upper = bands
        width = upper - lower
        if bar.close < lower and rsi < self.oversold:
            return "buy", 0.5 + (lower - bar.close) / width if width > 0 else 1.0
        if bar.close >= middle:
            return "sell", (bar.close - middle) / (upper - middle) if upper > middle else 1.0
        return None
