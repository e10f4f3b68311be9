"""Trend-following strategies: MACD trend, and momentum breakouts confirmed by RSI and volume."""

from __future__ import annotations

from tradebot.strategy.bars import Candle
from tradebot.strategy.base import BarStrategy, Decision, SymbolState
from tradebot.strategy.indicators import MACD, RSI, Indicator, RollingExtreme, VolumeZScore

# Confidence of a MACD turn reaches 1 when the histogram is this fraction of the price (5 bp).
FULL_CONFIDENCE_HISTOGRAM = 0.0005


class MACDTrend(BarStrategy):
    """BUY when the MACD histogram turns positive (MACD above its signal line), SELL when negative.

    Parameters: ``fast`` (12), ``slow`` (26), ``signal`` (9) bars, ``timeframe`` ("5m").
    Confidence: the histogram relative to 5 bp of the price.
    """

    default_name = "macd_trend"

    def __init__(
        self, fast: int = 12, slow: int = 26, signal: int = 9, *, timeframe: str = "5m", name: str | None = None
    ):
        MACD(fast, slow, signal)  # validates the windows
        self.fast, self.slow, self.signal_window = fast, slow, signal
        super().__init__(timeframe=timeframe, name=name)

    def indicators(self) -> dict[str, Indicator]:
        return {"macd": MACD(self.fast, self.slow, self.signal_window)}

    def decide(self, state: SymbolState, bar: Candle) -> Decision | None:
        values = state.indicators["macd"].update(bar.close)  # type: ignore[attr-defined]
        if values is None:
            return None
        histogram = values[2]
        score = abs(histogram) / (bar.close * FULL_CONFIDENCE_HISTOGRAM)
        if histogram > 0:
            return "buy", score
        if histogram < 0:
            return "sell", score
        return None


class MomentumBreakout(BarStrategy):
    """BUY a close above the highest high of the last ``lookback`` bars, on strong RSI and volume.

    Parameters: ``lookback`` (20 bars), ``rsi_window`` (14), ``entry_rsi`` (60: the RSI must be
    above it), ``volume_window`` (20) and ``volume_z`` (2.0: the bar's volume must be that many
    standard deviations above its mean), ``exit_rsi`` (45: SELL once the RSI falls below it),
    ``timeframe`` ("1m"). Confidence: the volume z-score relative to twice ``volume_z``.
    """

    default_name = "momentum_breakout"

    def __init__(
        self,
        lookback: int = 20,
        rsi_window: int = 14,
        entry_rsi: float = 60.0,
        volume_window: int = 20,
        volume_z: float = 2.0,
        exit_rsi: float = 45.0,
        *,
        timeframe: str = "1m",
        name: str | None = None,
    ):
        if not 0 < exit_rsi < entry_rsi < 100:
            raise ValueError(f"need 0 < exit_rsi < entry_rsi < 100, got {exit_rsi} and {entry_rsi}")
        self.lookback, self.rsi_window, self.entry_rsi, self.exit_rsi = lookback, rsi_window, entry_rsi, exit_rsi
        self.volume_window, self.volume_z = volume_window, volume_z
        super().__init__(timeframe=timeframe, name=name)

    def indicators(self) -> dict[str, Indicator]:
        return {
            "highest": RollingExtreme(self.lookback, largest=True),
            "rsi": RSI(self.rsi_window),
            "volume": VolumeZScore(self.volume_window),
        }

    def decide(self, state: SymbolState, bar: Candle) -> Decision | None:
        previous_high = state.memory.get("highest")  # of the bars before this one
        state.memory["highest"] = state.indicators["highest"].update(bar.high)  # type: ignore[attr-defined]
        rsi = state.indicators["rsi"].update(bar.close)  # type: ignore[attr-defined]
        z = state.indicators["volume"].update(bar.volume)  # type: ignore[attr-defined]
        if rsi is None:
            return None
        if rsi < self.exit_rsi:
            return "sell", (self.exit_rsi - rsi) / self.exit_rsi
        breakout = previous_high is not None and bar.close > previous_high
        if breakout and rsi > self.entry_rsi and z is not None and z >= self.volume_z:
            return "buy", z / (2 * self.volume_z)
        return None
