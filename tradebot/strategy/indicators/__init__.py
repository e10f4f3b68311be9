"""Incremental technical indicators: O(1) per update, state as plain data.

Each indicator takes one observation at a time (``update``) and returns its value, or None until
it has seen enough data. Running sums and smoothed values are part of the snapshot, so an
indicator restored from :meth:`Indicator.snapshot` continues bit for bit like one that never
stopped. Conventions follow the reference libraries the tests compare against to 1e-9 (docs/STRATEGIES.md):
the ``ta`` package for SMA, EMA, RSI, MACD, Bollinger bands, ATR, stochastic and VWAP, TA-Lib for
ADX (Wilder's definition), pandas for the volume z-score.
"""

from __future__ import annotations

from tradebot.strategy.indicators.averages import EMA, MACD, RSI, SMA, Bollinger, RollingStats, VolumeZScore
from tradebot.strategy.indicators.base import Indicator
from tradebot.strategy.indicators.ranges import ADX, ATR, VWAP, RollingExtreme, Stochastic, true_range

__all__ = [
    "ADX",
    "ATR",
    "EMA",
    "MACD",
    "RSI",
    "SMA",
    "VWAP",
    "Bollinger",
    "Indicator",
    "RollingExtreme",
    "RollingStats",
    "Stochastic",
    "VolumeZScore",
    "true_range",
]
