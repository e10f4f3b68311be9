"""Indicators of one series (closes or volumes): averages, RSI, MACD, Bollinger, volume z-score."""

from __future__ import annotations

import math
from collections import deque

from tradebot.strategy.indicators.base import Indicator, checked_window


class SMA(Indicator):
    """Simple moving average of the last ``window`` values."""

    _state = ("values", "total")

    def __init__(self, window: int):
        self.window = checked_window(window)
        self.values: deque[float] = deque(maxlen=window)
        self.total = 0.0

    def update(self, value: float) -> float | None:
        values, window = self.values, self.window
        full = len(values) == window
        total = self.total - values[0] if full else self.total
        values.append(value)
        self.total = total = total + value
        return total / window if full or len(values) == window else None


class RollingStats(Indicator):
    """Mean and population standard deviation of the last ``window`` values.

    Sums are kept relative to the first value seen, which keeps the variance free of the
    cancellation that raw sums of squares of prices near $200 would suffer.
    """

    _state = ("values", "origin", "total", "total_squares")

    def __init__(self, window: int):
        self.window = checked_window(window)
        self.values: deque[float] = deque(maxlen=window)
        self.origin: float | None = None
        self.total = 0.0
        self.total_squares = 0.0

    def update(self, value: float) -> tuple[float, float] | None:
        """(mean, standard deviation) once the window is full."""
        origin, values, window = self.origin, self.values, self.window
        if origin is None:
            self.origin = origin = value
        total, total_squares = self.total, self.total_squares
        if len(values) == window:
            dropped = values[0] - origin
            total -= dropped
            total_squares -= dropped * dropped
        values.append(value)
        shifted = value - origin
        self.total = total = total + shifted
        self.total_squares = total_squares = total_squares + shifted * shifted
        if len(values) < window:
            return None
        mean = total / window
        variance = max(0.0, total_squares / window - mean * mean)
        return origin + mean, math.sqrt(variance)


class EMA(Indicator):
    """Exponential moving average, smoothing 2 / (window + 1), seeded with the first value.

    ``alpha`` overrides the smoothing (Wilder's averages use 1 / window). Values before
    ``window`` observations are None, as in pandas' ``ewm(adjust=False, min_periods=window)``.
    """

    _state = ("value", "count")

    def __init__(self, window: int, alpha: float | None = None):
        self.window = checked_window(window)
        self.alpha = alpha if alpha is not None else 2 / (window + 1)
        self.value: float | None = None
        self.count = 0

    def update(self, value: float) -> float | None:
        previous, alpha = self.value, self.alpha
        self.value = value = value if previous is None else (1 - alpha) * previous + alpha * value
        self.count = count = self.count + 1
        return value if count >= self.window else None


class RSI(Indicator):
    """Relative strength index: Wilder smoothing (1 / window) of gains and losses, 0..100."""

    _state = ("previous", "gains", "losses")

    def __init__(self, window: int = 14):
        self.window = checked_window(window)
        self.previous: float | None = None
        self.gains = EMA(window, alpha=1 / window)
        self.losses = EMA(window, alpha=1 / window)

    def update(self, price: float) -> float | None:
        previous, self.previous = self.previous, price
        rise = 0.0 if previous is None else price - previous
        fall = -rise
        # max(rise, 0.0) and max(fall, 0.0) without the calls: the same floats, a zero's sign included
        gain = self.gains.update(0.0 if rise < 0.0 else rise)
        loss = self.losses.update(0.0 if fall < 0.0 else fall)
        if gain is None or loss is None:
            return None
        return 100.0 if loss == 0 else 100 - 100 / (1 + gain / loss)


class MACD(Indicator):
    """MACD line (fast EMA - slow EMA), its signal EMA and the histogram."""

    _state = ("fast", "slow", "signal")

    def __init__(self, fast: int = 12, slow: int = 26, signal: int = 9):
        if not 1 <= fast < slow:
            raise ValueError(f"need 1 <= fast < slow, got {fast} and {slow}")
        self.fast, self.slow, self.signal = EMA(fast), EMA(slow), EMA(signal)

    def update(self, price: float) -> tuple[float, float, float] | None:
        """(macd, signal, histogram) once the signal line has a full window."""
        fast, slow = self.fast.update(price), self.slow.update(price)
        if fast is None or slow is None:
            return None
        line = fast - slow
        signal = self.signal.update(line)
        return None if signal is None else (line, signal, line - signal)


class Bollinger(Indicator):
    """Bollinger bands: SMA ± ``deviations`` population standard deviations."""

    _state = ("stats",)

    def __init__(self, window: int = 20, deviations: float = 2.0):
        self.stats = RollingStats(window)
        self.deviations = deviations

    def update(self, price: float) -> tuple[float, float, float] | None:
        """(lower, middle, upper)."""
        stats = self.stats.update(price)
        if stats is None:
            return None
        mean, deviation = stats
        return mean - self.deviations * deviation, mean, mean + self.deviations * deviation


class VolumeZScore(Indicator):
    """How unusual this volume is: (volume - mean) / standard deviation over the last ``window``."""

    _state = ("stats",)

    def __init__(self, window: int = 20):
        self.stats = RollingStats(window)

    def update(self, volume: float) -> float | None:
        stats = self.stats.update(volume)
        if stats is None or stats[1] == 0:
            return None
        mean, deviation = stats
        return (volume - mean) / deviation
