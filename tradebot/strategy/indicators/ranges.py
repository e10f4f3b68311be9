"""Indicators of bars (high, low, close, volume): ATR, ADX, rolling extremes, stochastic, VWAP."""

from __future__ import annotations

from collections import deque

from tradebot.strategy.indicators.averages import SMA
from tradebot.strategy.indicators.base import Indicator, checked_window


def true_range(high: float, low: float, previous_close: float | None) -> float:
    """The bar's range stretched to the previous close (just high - low for the first bar)."""
    if previous_close is None:
        return high - low
    return max(high - low, abs(high - previous_close), abs(low - previous_close))


class ATR(Indicator):
    """Average true range: the mean of the first ``window`` true ranges, then Wilder smoothing."""

    _state = ("previous_close", "count", "value")

    def __init__(self, window: int = 14):
        self.window = checked_window(window)
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
        self.window = checked_window(window)
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
        n, count, plus_dm, minus_dm, summed = self.window, self.count, self.plus_dm, self.minus_dm, self.tr
        if count < n:
            self.plus_dm, self.minus_dm, self.tr = plus_dm + plus, minus_dm + minus, summed + tr
            return None
        self.plus_dm = plus_dm - plus_dm / n + plus
        self.minus_dm = minus_dm - minus_dm / n + minus
        self.tr = summed - summed / n + tr
        dx = self._dx()
        if count < 2 * n - 1:
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
        self.window = checked_window(window)
        self.largest = largest
        self.count = 0
        self.candidates: deque[list[float]] = deque()  # [index, value], values monotonic

    def update(self, value: float) -> float | None:
        candidates, count, window = self.candidates, self.count, self.window
        if self.largest:
            while candidates and candidates[-1][1] <= value:
                candidates.pop()
        else:
            while candidates and candidates[-1][1] >= value:
                candidates.pop()
        candidates.append([count, value])
        if candidates[0][0] <= count - window:
            candidates.popleft()
        self.count = count = count + 1
        return candidates[0][1] if count >= window else None


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
        self.window = checked_window(window)
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
