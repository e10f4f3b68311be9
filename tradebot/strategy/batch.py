"""A backtest's observations as columns, read once in order, for the strategies that scan.

The backtester holds a whole run of observations before it starts; a strategy with a ``scan``
method (see MovingAverageCrossover.scan) decides a symbol's part of it at once from these columns,
and only the observations it signals on are read as objects again. The columns are built in one
pass in observation order: reading the same objects symbol by symbol, scattered through memory,
costs several times more.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import overload

import numpy as np

from tradebot.common.codec import built_tick
from tradebot.common.models import Bar, Tick
from tradebot.strategy.bars import timeframe_seconds


class TickColumns(Sequence[Tick]):
    """Ticks kept as columns, the way ``load_ticks`` reads them from storage; an item is a Tick.

    Stored ticks were validated when they arrived, so indexing builds the Tick from its columns
    without validating again (``models.built``). The backtester reads the columns themselves and
    builds only the ticks it needs: those a strategy signals on, or every one for a strategy that
    takes them one by one. A slice is columns again; anything else sees a sequence of Ticks.
    """

    __slots__ = ("ids", "prices", "sizes", "sources", "symbols", "timestamps")

    def __init__(
        self,
        ids: list[str],
        symbols: list[str],
        timestamps: list[datetime],
        prices: list[float],
        sizes: list[float],
        sources: list[str],
    ):
        if not len(ids) == len(symbols) == len(timestamps) == len(prices) == len(sizes) == len(sources):
            raise ValueError("tick columns must have the same length")
        self.ids, self.symbols, self.timestamps = ids, symbols, timestamps
        self.prices, self.sizes, self.sources = prices, sizes, sources

    @classmethod
    def of(cls, ticks: Iterable[Tick]) -> TickColumns:
        """The columns of (valid) ticks."""
        rows = [(t.id, t.symbol, t.timestamp, t.price, t.size, t.source) for t in ticks]
        if not rows:
            return cls([], [], [], [], [], [])
        ids, symbols, timestamps, prices, sizes, sources = map(list, zip(*rows, strict=True))
        return cls(ids, symbols, timestamps, prices, sizes, sources)

    def __len__(self) -> int:
        return len(self.ids)

    @overload
    def __getitem__(self, index: int) -> Tick: ...

    @overload
    def __getitem__(self, index: slice) -> TickColumns: ...

    def __getitem__(self, index: int | slice) -> Tick | TickColumns:
        if isinstance(index, slice):
            return TickColumns(self.ids[index], self.symbols[index], self.timestamps[index], self.prices[index],
                               self.sizes[index], self.sources[index])  # fmt: skip
        return built_tick(self.ids[index], self.symbols[index], self.timestamps[index], self.prices[index],
                          self.sizes[index], self.sources[index])  # fmt: skip

    def __iter__(self) -> Iterator[Tick]:
        columns = (self.ids, self.symbols, self.timestamps, self.prices, self.sizes, self.sources)
        return map(built_tick, *columns)


class Batch:
    """Observations in time order, and their symbols, ids, times and prices (a bar's close) as columns."""

    __slots__ = (
        "_ids", "_lists", "_repeated", "_repeats", "ids", "observations", "price_array", "prices", "rows", "seconds",
        "sizes", "symbols", "times",
    )  # fmt: skip

    def __init__(self, observations: Sequence[Tick | Bar]):
        self.observations = observations
        # 0: all ticks; a bar length: all bars of one timeframe; None: a mix
        self.seconds: int | None
        self.prices: list[float]
        # stored ticks' sizes: with the other columns, a tick's values without a Tick (BarStrategy.on_trade)
        self.sizes: list[float] | None = None
        if isinstance(observations, TickColumns):  # read once already
            self.symbols, self.ids, self.times = observations.symbols, observations.ids, observations.timestamps
            self.prices, self.sizes, self.seconds = observations.prices, observations.sizes, 0
            self._finish()
            return
        self.symbols = [o.symbol for o in observations]
        self.ids = [o.id for o in observations]
        self.times = [o.timestamp for o in observations]
        try:  # a Bar has no price and a Tick no timeframe: a mixed batch fails here
            self.prices = [o.price for o in observations]  # type: ignore[union-attr]
            self.seconds = 0
        except AttributeError:
            try:
                timeframes = {o.timeframe for o in observations}  # type: ignore[union-attr]
                self.prices = [o.close for o in observations]  # type: ignore[union-attr]
                self.seconds = timeframe_seconds(timeframes.pop()) if len(timeframes) == 1 else None
            except AttributeError:
                self.prices = [o.price if isinstance(o, Tick) else o.close for o in observations]
                self.seconds = None
        self._finish()

    def _finish(self) -> None:
        self._ids = set(self.ids)
        self._repeated = len(self._ids) < len(self.ids)  # an id twice in the batch (of one symbol or two)
        self.price_array = np.fromiter(self.prices, dtype=np.float64, count=len(self.prices))  # sooner than np.array
        self.rows = self._rows()
        self._lists: dict[str, list[int]] = {}
        self._repeats: dict[str, set[str] | None] = {}

    def row_lists(self, symbol: str) -> list[int]:
        """``rows[symbol]`` as a list (made once; [] for a symbol not in the batch), for bisecting."""
        found = self._lists.get(symbol)
        if found is None:
            rows = self.rows.get(symbol)
            found = self._lists[symbol] = [] if rows is None else rows.tolist()
        return found

    def lasts_before(self, symbol: str, positions: np.ndarray) -> list[int]:
        """For each of ``positions`` (ascending), ``symbol``'s last row before it, or -1 (none before,
        or a symbol not in the batch)."""
        rows = self.rows.get(symbol)
        if rows is None:
            return [-1] * len(positions)
        counts = np.searchsorted(rows, positions)  # rows before each position (bisect_left's)
        lasts: list[int] = np.where(counts > 0, rows[np.maximum(counts - 1, 0)], -1).tolist()
        return lasts

    def _rows(self) -> dict[str, np.ndarray]:
        """Each symbol's positions, in order; symbols in order of first appearance."""
        if not self.symbols:
            return {}
        # numbered in a set's order (a set of them is sooner than dict.fromkeys), put in order of first appearance below
        names = list(set(self.symbols))
        codes = {symbol: number for number, symbol in enumerate(names)}
        # one itemgetter call looks every symbol up in C (sooner than a map of __getitem__); of one item it
        # gives the item itself, not a tuple
        looked_up = operator.itemgetter(*self.symbols)(codes) if len(self.symbols) > 1 else (codes[self.symbols[0]],)
        # up to 256 symbols as bytes (made in one C loop, taken by numpy as they are: ~3x sooner than
        # np.fromiter), up to 2**15 as int16: numpy's stable sort of 8- or 16-bit integers is a radix
        # sort (~15x sooner)
        if len(codes) <= 256:
            numbered = np.frombuffer(bytes(looked_up), dtype=np.uint8)
        else:
            small = len(codes) <= 2**15
            numbered = np.fromiter(looked_up, dtype=np.int16 if small else np.int64, count=len(self.symbols))
        order = np.argsort(numbered, kind="stable")
        counts = np.bincount(numbered, minlength=len(codes))
        ends = np.cumsum(counts)
        positions = np.split(order, ends[:-1])
        firsts = order[ends - counts]  # each symbol's first position (every one comes at least once)
        return {names[code]: positions[code] for code in np.argsort(firsts).tolist()}

    def repeats(self, symbol: str, recent: Iterable[str]) -> bool:
        """Whether an id of ``symbol``'s observations comes twice in this batch, or is one of ``recent``
        (a strategy's last ids of that symbol): a redelivery. Ids are remembered per symbol, so an id
        of another symbol's is none; with no id twice in the whole batch and none of ``recent`` in it
        (the usual case) that is all there is to look at."""
        if not self._repeated and not any(tick_id in self._ids for tick_id in recent):
            return False
        if symbol not in self._repeats:
            rows = self.row_lists(symbol)
            distinct = set(map(self.ids.__getitem__, rows))
            self._repeats[symbol] = None if len(distinct) < len(rows) else distinct
        ids = self._repeats[symbol]
        return ids is None or any(tick_id in ids for tick_id in recent)

    def __len__(self) -> int:
        return len(self.observations)
