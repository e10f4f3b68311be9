"""A backtest's observations as columns, read once in order, for the strategies that scan.

The backtester holds a whole run of observations before it starts; a strategy with a ``scan``
method (see MovingAverageCrossover.scan) decides a symbol's part of it at once from these columns,
and only the observations it signals on are read as objects again. The columns are built in one
pass in observation order: reading the same objects symbol by symbol, scattered through memory,
costs several times more.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from tradebot.common.models import Bar, Tick
from tradebot.strategy.bars import timeframe_seconds


class Batch:
    """Observations in time order, and their symbols, ids and prices (a bar's close) as columns."""

    __slots__ = ("_ids", "ids", "observations", "price_array", "prices", "repeated_ids", "rows", "seconds", "symbols")

    def __init__(self, observations: Sequence[Tick | Bar]):
        self.observations = observations
        self.symbols = [o.symbol for o in observations]
        self.ids = [o.id for o in observations]
        self._ids = set(self.ids)
        self.repeated_ids = len(self._ids) < len(self.ids)  # a redelivery inside the batch
        # 0: all ticks; a bar length: all bars of one timeframe; None: a mix
        self.seconds: int | None
        try:  # a Bar has no price and a Tick no timeframe: a mixed batch fails here
            self.prices: list[float] = [o.price for o in observations]  # type: ignore[union-attr]
            self.seconds = 0
        except AttributeError:
            try:
                timeframes = {o.timeframe for o in observations}  # type: ignore[union-attr]
                self.prices = [o.close for o in observations]  # type: ignore[union-attr]
                self.seconds = timeframe_seconds(timeframes.pop()) if len(timeframes) == 1 else None
            except AttributeError:
                self.prices = [o.price if isinstance(o, Tick) else o.close for o in observations]
                self.seconds = None
        self.price_array = np.array(self.prices, dtype=np.float64)
        self.rows = self._rows()

    def _rows(self) -> dict[str, np.ndarray]:
        """Each symbol's positions, in order; symbols in order of first appearance."""
        if not self.symbols:
            return {}
        codes = {symbol: number for number, symbol in enumerate(dict.fromkeys(self.symbols))}
        numbered = np.array(list(map(codes.__getitem__, self.symbols)), dtype=np.int64)
        order = np.argsort(numbered, kind="stable")
        ends = np.cumsum(np.bincount(numbered, minlength=len(codes)))
        return dict(zip(codes, np.split(order, ends[:-1]), strict=True))

    def seen(self, ids: Iterable[str]) -> bool:
        """Whether any of ``ids`` (a strategy's recent ones) comes again in this batch."""
        return any(tick_id in self._ids for tick_id in ids)

    def __len__(self) -> int:
        return len(self.observations)
