"""Incremental technical indicators: O(1) per update, state as plain data.

Each indicator takes one observation at a time (``update``) and returns its value, or None until
it has seen enough data. Running sums and smoothed values are part of the snapshot, so an
indicator restored from :meth:`Indicator.snapshot` continues bit for bit like one that never
stopped. Conventions follow the reference libraries the tests compare against to 1e-9 (docs/STRATEGIES.md):
the ``ta`` package for SMA, EMA, RSI, MACD, Bollinger bands, ATR, stochastic and VWAP, TA-Lib for
ADX (Wilder's definition), pandas for the volume z-score.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any


class Indicator:
    """Base: subclasses list their state attributes in ``_state``; deques snapshot as lists."""

    _state: tuple[str, ...] = ()

    def snapshot(self) -> dict[str, Any]:
        """The state as JSON-ready data."""
        saved: dict[str, Any] = {}
        for name in self._state:
            value = getattr(self, name)
            if isinstance(value, Indicator):
                saved[name] = value.snapshot()
            elif isinstance(value, deque):
                saved[name] = list(value)
            else:
                saved[name] = value
        return saved

    def restore(self, saved: dict[str, Any]) -> None:
        """Replace the state with a snapshot taken from an indicator with the same parameters."""
        for name in self._state:
            current = getattr(self, name)
            if isinstance(current, Indicator):
                current.restore(saved[name])
            elif isinstance(current, deque):
                setattr(self, name, deque(saved[name], maxlen=current.maxlen))
            else:
                setattr(self, name, saved[name])


def _window(window: int) -> int:
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    return window


class SMA(Indicator):
    """Simple moving average of the last ``window`` values."""

    _state = ("values", "total")

    def __init__(self, window: int):
        self.window = _window(window)
        self.values: deque[float] = deque(maxlen=window)
        self.total = 0.0

    def update(self, value: float) -> float | None:
        if len(self.values) == self.window:
            self.total -= self.values[0]
        self.values.append(value)
        self.total += value
        return self.total / self.window if len(self.values) == self.window else None


class RollingStats(Indicator):
    """Mean and population standard deviation of the last ``window`` values.

    Sums are kept relative to the first value seen, which keeps the variance free of the
    cancellation that raw sums of squares of prices near $200 would suffer.
    """

    _state = ("values", "origin", "total", "total_squares")

    def __init__(self, window: int):
        self.window = _window(window)
        self.values: deque[float] = deque(maxlen=window)
        self.origin: float | None = None
        self.total = 0.0
        self.total_squares = 0.0

    def update(self, value: float) -> tuple[float, float] | None:
        """(mean, standard deviation) once the window is full."""
        if self.origin is None:
            self.origin = value
        if len(self.values) == self.window:
            dropped = self.values[0] - self.origin
            self.total -= dropped
            self.total_squares -= dropped * dropped
        self.values.append(value)
        shifted = value - self.origin
        self.total += shifted
        self.total_squares += shifted * shifted
        if len(self.values) < self.window:
            return None
        mean = self.total / self.window
        variance = max(0.0, self.total_squares / self.window - mean * mean)
        return self.origin + mean, math.sqrt(variance)


class EMA(Indicator):
    """Exponential moving average, smoothing 2 / (window + 1), seeded with the first value.

    ``alpha`` overrides the smoothing (Wilder's averages use 1 / window). Values before
    ``window`` observations are None, as in pandas' ``ewm(adjust=False, min_periods=window)``.
    """

    _state = ("value", "count")

    def __init__(self, window: int, alpha: float | None = None):
        self.window = _window(window)
        self.alpha = alpha if alpha is not None else 2 / (window + 1)
        self.value: float | None = None
        self.count = 0

    def update(self, value: float) -> float | None:
        previous = self.value
        self.value = value if previous is None else (1 - self.alpha) * previous + self.alpha * value
        self.count += 1
        return self.value if self.count >= self.window else None


class RSI(Indicator):
    """Relative strength index: Wilder smoothing (1 / window) of gains and losses, 0..100."""

    _state = ("previous", "gains", "losses")

    def __init__(self, window: int = 14):
        self.window = _window(window)
        self.previous: float | None = None
        self.gains = EMA(window, alpha=1 / window)
        self.losses = EMA(window, alpha=1 / window)

    def update(self, price: float) -> float | None:
        change = 0.0 if self.previous is None else price - self.previous
        self.previous = price
        gain = self.gains.update(max(change, 0.0))
        loss = self.losses.update(max(-change, 0.0))
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


def true_range(high: float, low: float, previous_close: float | None) -> float:
    """The bar's range stretched to the previous close (just high - low for the first bar)."""
    if previous_close is None:
        return high - low
    return max(high - low, abs(high - previous_close), abs(low - previous_close))


class ATR(Indicator):
    """Average true range: the mean of the first ``window`` true ranges, then Wilder smoothing."""

    _state = ("previous_close", "count", "value")

    def __init__(self, window: int = 14):
        self.window = _window(window)
        self.previous_close: float | None = None
        self.count = 0
        self.value = 0.0

    def update(self, high: float, low: float, close: float) -> float | None:
        tr = true_range(high, low, self.previous_close)
        self.previous_close = close
        self.count += 1
        if self.count <= self.window:
            self.value += tr / self.window  # the mean of the first window, built as it arrives
            return self.value if self.count == self.window else None
        self.value = (self.value * (self.window - 1) + tr) / self.window
        return self.value


class ADX(Indicator):
    """Average directional index (Wilder; as TA-Lib computes it): trend strength 0..100.

    Directional movement and true range are Wilder-summed over ``window`` bars; the first ADX is
    the mean of the first ``window`` DX values, after which it is Wilder-smoothed.
    """

    _state = ("previous", "count", "plus_dm", "minus_dm", "tr", "dx_total", "value")

    def __init__(self, window: int = 14):
        self.window = _window(window)
        self.previous: list[float] | None = None  # high, low, close of the previous bar
        self.count = 0  # bars after the first
        self.plus_dm = self.minus_dm = self.tr = 0.0
        self.dx_total = 0.0
        self.value: float | None = None

    def update(self, high: float, low: float, close: float) -> float | None:
        previous, self.previous = self.previous, [high, low, close]
        if previous is None:
            return None
        self.count += 1
        up, down = high - previous[0], previous[1] - low
        plus = up if up > 0 and up > down else 0.0
        minus = down if down > 0 and down > up else 0.0
        tr = true_range(high, low, previous[2])
        n = self.window
        if self.count < n:
            self.plus_dm, self.minus_dm, self.tr = self.plus_dm + plus, self.minus_dm + minus, self.tr + tr
            return None
        self.plus_dm = self.plus_dm - self.plus_dm / n + plus
        self.minus_dm = self.minus_dm - self.minus_dm / n + minus
        self.tr = self.tr - self.tr / n + tr
        dx = self._dx()
        if self.count < 2 * n - 1:
            self.dx_total += dx
            return None
        if self.value is None:
            self.value = (self.dx_total + dx) / n
        else:
            self.value = (self.value * (n - 1) + dx) / n
        return self.value

    def _dx(self) -> float:
        if abs(self.tr) < 1e-8:  # TA-Lib's "is zero"
            return 0.0
        plus_di, minus_di = 100 * self.plus_dm / self.tr, 100 * self.minus_dm / self.tr
        total = plus_di + minus_di
        return 0.0 if abs(total) < 1e-8 else 100 * abs(plus_di - minus_di) / total


class RollingExtreme(Indicator):
    """Minimum or maximum of the last ``window`` values in O(1) amortised (a monotonic deque)."""

    _state = ("count", "candidates")

    def __init__(self, window: int, largest: bool):
        self.window = _window(window)
        self.largest = largest
        self.count = 0
        self.candidates: deque[list[float]] = deque()  # [index, value], values monotonic

    def update(self, value: float) -> float | None:
        candidates = self.candidates
        if self.largest:
            while candidates and candidates[-1][1] <= value:
                candidates.pop()
        else:
            while candidates and candidates[-1][1] >= value:
                candidates.pop()
        candidates.append([self.count, value])
        if candidates[0][0] <= self.count - self.window:
            candidates.popleft()
        self.count += 1
        return candidates[0][1] if self.count >= self.window else None


class Stochastic(Indicator):
    """Stochastic oscillator: %K of the close within the window's range, %D its SMA."""

    _state = ("lowest", "highest", "smooth")

    def __init__(self, window: int = 14, smooth: int = 3):
        self.lowest = RollingExtreme(window, largest=False)
        self.highest = RollingExtreme(window, largest=True)
        self.smooth = SMA(smooth)

    def update(self, high: float, low: float, close: float) -> tuple[float, float | None] | None:
        """(%K, %D); %D is None until ``smooth`` values of %K exist; a flat window has no %K."""
        lowest, highest = self.lowest.update(low), self.highest.update(high)
        if lowest is None or highest is None or highest == lowest:
            return None
        k = 100 * (close - lowest) / (highest - lowest)
        return k, self.smooth.update(k)


class VWAP(Indicator):
    """Volume-weighted average of the typical price (high + low + close) / 3 over ``window`` bars."""

    _state = ("entries", "value_total", "volume_total")

    def __init__(self, window: int = 14):
        self.window = _window(window)
        self.entries: deque[list[float]] = deque(maxlen=window)  # [price * volume, volume]
        self.value_total = 0.0
        self.volume_total = 0.0

    def update(self, high: float, low: float, close: float, volume: float) -> float | None:
        if len(self.entries) == self.window:
            old_value, old_volume = self.entries[0]
            self.value_total -= old_value
            self.volume_total -= old_volume
        weighted = (high + low + close) / 3.0 * volume
        self.entries.append([weighted, volume])
        self.value_total += weighted
        self.volume_total += volume
        if len(self.entries) < self.window or self.volume_total <= 0:
            return None
        return self.value_total / self.volume_total


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
