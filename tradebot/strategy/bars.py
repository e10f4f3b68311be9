"""Bars built inside a strategy from ticks (or from finer bars), deterministically.

A bar of a bucket is complete when the first observation of a later bucket arrives: nothing of
the future is needed, and live and backtest runs close the same bars at the same ticks. A late
observation (older than the open bucket) is folded into the open bar rather than reopening a
closed one, so a bar, once emitted, never changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from tradebot.strategy.indicators.ranges import ATR

BarTimeframe = Literal["tick", "1m", "5m", "15m", "1h", "1d"]
TIMEFRAME_SECONDS: dict[str, int] = {"tick": 0, "1m": 60, "5m": 300, "15m": 900, "1h": 3600, "1d": 86_400}


def timeframe_seconds(timeframe: str) -> int:
    """Seconds per bar of a timeframe ("tick" is 0: every tick is its own bar)."""
    try:
        return TIMEFRAME_SECONDS[timeframe]
    except KeyError:
        raise ValueError(f"unknown timeframe {timeframe!r}: use one of {', '.join(TIMEFRAME_SECONDS)}") from None


@dataclass(slots=True)
class Candle:
    """OHLCV of one bucket; ``start`` in epoch seconds."""

    start: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    count: int = 1

    def as_list(self) -> list[Any]:
        return [self.start, self.open, self.high, self.low, self.close, self.volume, self.count]


class BarBuilder:
    """Aggregates observations of one symbol into bars of ``seconds`` each."""

    def __init__(self, seconds: int):
        if seconds <= 0:
            raise ValueError("a bar builder needs a bar length in seconds")
        self.seconds = seconds
        self.current: Candle | None = None

    def add_tick(self, epoch_s: float, price: float, size: float) -> Candle | None:
        """Add one trade; returns the bar it completed, if any."""
        return self._add(int(epoch_s // self.seconds) * self.seconds, price, price, price, price, size, 1)

    def add_bar(self, candle: Candle, seconds: int) -> Candle | None:
        """Add one finer bar of ``seconds``; returns the bar it completed, if any."""
        if seconds == self.seconds:
            return candle  # already a complete bar of this timeframe
        if seconds > self.seconds or self.seconds % seconds:
            raise ValueError(f"cannot build {self.seconds}s bars from {seconds}s bars")
        start = candle.start // self.seconds * self.seconds
        done = self._add(start, candle.open, candle.high, candle.low, candle.close, candle.volume, candle.count)
        if done is None and candle.start + seconds == start + self.seconds:
            done, self.current = self.current, None  # the last sub-bar of the bucket closes it now
        return done

    def _add(
        self, start: int, open_: float, high: float, low: float, close: float, volume: float, count: int
    ) -> Candle | None:
        bar = self.current
        if bar is None or start > bar.start:
            self.current = Candle(start, open_, high, low, close, volume, count)
            return bar
        if high > bar.high:
            bar.high = high
        if low < bar.low:
            bar.low = low
        bar.close = close
        bar.volume += volume
        bar.count += count
        return None

    def snapshot(self) -> list[Any] | None:
        return None if self.current is None else self.current.as_list()

    def restore(self, saved: list[Any] | None) -> None:
        self.current = None if saved is None else Candle(*saved)


class BarATR:
    """The ATR (indicators.ATR) of the bars built from one symbol's ticks: what ATR-multiple exits read.

    ``seconds`` 0 makes every tick its own bar (its true range is the move from the previous tick).
    """

    def __init__(self, window: int, seconds: int):
        self.atr = ATR(window)
        self.builder = BarBuilder(seconds) if seconds else None
        self.value: float | None = None

    def add_tick(self, epoch_s: float, price: float, size: float) -> float | None:
        """Add one trade; the ATR as of the last completed bar (None until ``window`` bars are done)."""
        if self.builder is None:
            self.value = self.atr.update(price, price, price)
        else:
            done = self.builder.add_tick(epoch_s, price, size)
            if done is not None:
                self.value = self.atr.update(done.high, done.low, done.close)
        return self.value

    def snapshot(self) -> list[Any]:
        return [self.atr.snapshot(), self.builder.snapshot() if self.builder else None, self.value]

    def restore(self, saved: list[Any]) -> None:
        atr, bar, self.value = saved
        self.atr.restore(atr)
        if self.builder is not None:
            self.builder.restore(bar)
