"""Moving-average crossover: BUY when the short average crosses above the long one, SELL when below.

Per symbol the strategy keeps both averages and which side of the long average the short one was
last seen on. A signal fires only on a change of side, and only once a full long window has been
seen. Equal averages are not a cross: the side stays what it was.

Simple averages are decided exactly: prices are whole multiples of $0.0001 (US equities quote in
cents, sub-penny below $1), so they are summed as integers and the short sum times the long window
is compared with the long sum times the short window. No float rounding can make two equal
averages look crossed. Exponential averages (``average="ema"``) are floats by nature; an exact tie
between them does not occur on real prices.
"""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from tradebot.common.models import Side, Signal
from tradebot.strategy.bars import Candle
from tradebot.strategy.base import RECENT_TICK_IDS, BarStrategy, Decision, SymbolState
from tradebot.strategy.indicators import EMA, Indicator

if TYPE_CHECKING:  # numpy only for a backtest's scan: the strategy worker goes tick by tick without it (~11 MiB)
    import numpy as np

    from tradebot.strategy.batch import Batch

Crossing = tuple[Side, float]  # a crossing scan found: the side and score of its signal
PRICE_UNITS_PER_DOLLAR = 10_000  # $0.0001: the finest US equity quote increment
# |short - long| / long at which confidence reaches 1. At a cross the averages have only just met,
# so on ticks a few cents apart the gap is typically a fraction of a basis point: one bp is strong.
FULL_CONFIDENCE_GAP = 0.0001


def price_units(price: float) -> int:
    """A price as a whole number of $0.0001 (exact for any price quoted to four decimals)."""
    return round(price * PRICE_UNITS_PER_DOLLAR)


def confidence(short_average: float, long_average: float) -> float:
    """How far apart the averages are, relative to the long one, scaled into [0, 1]."""
    gap = abs(short_average - long_average) / long_average
    return round(min(1.0, gap / FULL_CONFIDENCE_GAP), 6)


class IntegerSum(Indicator):
    """The exact sum of the last ``window`` integers."""

    _state = ("values", "total")

    def __init__(self, window: int):
        self.window = window
        self.values: deque[int] = deque(maxlen=window)
        self.total = 0

    def update(self, value: int) -> int | None:
        values = self.values
        if len(values) == self.window:
            self.total += value - values[0]
            values.append(value)
            return self.total
        values.append(value)
        self.total += value
        return self.total if len(values) == self.window else None


class MovingAverageCrossover(BarStrategy):
    """The crossover of a short and a long average (see the module docstring).

    Parameters: ``short_window`` (5) and ``long_window`` (20) in bars; ``average`` "sma" (default)
    or "ema"; ``timeframe`` "tick" (default: every tick is a bar) or 1m/5m/15m/1h/1d.
    """

    alternate = False  # crossings alternate by themselves; the first may be either side

    def __init__(
        self,
        short_window: int = 5,
        long_window: int = 20,
        *,
        average: Literal["sma", "ema"] = "sma",
        timeframe: str = "tick",
        name: str | None = None,
    ):
        if not 1 <= short_window < long_window:
            raise ValueError(f"need 1 <= short_window < long_window, got {short_window} and {long_window}")
        if average not in ("sma", "ema"):
            raise ValueError(f"average must be sma or ema, got {average!r}")
        self.short_window, self.long_window, self.average = short_window, long_window, average
        prefix = "ma" if average == "sma" else "ema"
        suffix = "" if timeframe == "tick" else f"_{timeframe}"
        super().__init__(timeframe=timeframe, name=name or f"{prefix}_crossover_{short_window}_{long_window}{suffix}")
        self._per_tick_sma = self.seconds == 0 and average == "sma"

    def on_trade(self, symbol: str, tick_id: str, at: datetime, price: float, size: float) -> list[Signal]:
        """Every tick is a bar for the tick-driven SMA crossover: the hot path, without a Candle."""
        if not self._per_tick_sma:
            return super().on_trade(symbol, tick_id, at, price, size)
        state = self._symbols.get(symbol) or self._state(symbol)
        if not state.first_sight(tick_id):
            return []
        decision = self._decide_units(state, round(price * PRICE_UNITS_PER_DOLLAR))
        if decision is None:
            return []
        return [self.signal(symbol, at, decision[0], price, decision[1], tick_id)]

    def indicators(self) -> dict[str, Indicator]:
        if self.average == "ema":
            return {"short": EMA(self.short_window), "long": EMA(self.long_window)}
        return {"short": IntegerSum(self.short_window), "long": IntegerSum(self.long_window)}

    def decide(self, state: SymbolState, bar: Candle) -> Decision | None:
        if self.average == "sma":
            return self._decide_units(state, price_units(bar.close))
        short_value = state.indicators["short"].update(bar.close)  # type: ignore[attr-defined]
        long_value = state.indicators["long"].update(bar.close)  # type: ignore[attr-defined]
        if long_value is None:
            return None
        relation = (short_value > long_value) - (short_value < long_value)
        return self._turn(state, relation, confidence(short_value, long_value))

    def _decide_units(self, state: SymbolState, units: int) -> Decision | None:
        indicators = state.indicators
        short_sum = indicators["short"].update(units)  # type: ignore[attr-defined]
        long_sum = indicators["long"].update(units)  # type: ignore[attr-defined]
        if long_sum is None:
            return None
        difference = short_sum * self.long_window - long_sum * self.short_window  # exact
        relation = (difference > 0) - (difference < 0)
        if relation == state.memory.get("relation", 0):
            return None  # the common case: still on the same side
        score = min(1.0, abs(difference) / (long_sum * self.short_window) / FULL_CONFIDENCE_GAP)
        return self._turn(state, relation, score)

    def scan(self, batch: Batch, symbol: str, rows: np.ndarray) -> list[tuple[int, Crossing]] | None:
        """Where :meth:`on_tick` (or :meth:`on_bar`) would signal among one symbol's observations (at
        ``rows`` of the batch), decided at once: (row, (side, score)) of each crossing, the state
        updated alike; :meth:`signal_at` makes a crossing's signal.

        The backtester's fast path: most observations emit nothing, so they never become objects
        again. The sums are the per-tick rule's integers, as running totals over the run; None when
        the run must go one by one: EMAs, bars to aggregate, a mixed batch, a repeated id.
        """
        import numpy as np  # (the batch has loaded it already; see the imports)

        if self.average != "sma" or batch.seconds is None or self.seconds not in (0, batch.seconds):
            return None
        state = self._state(symbol)
        if batch.repeats(symbol, state.recent):
            return None  # a redelivery: first_sight decides, one by one
        found = self._crossings(state, np.rint(batch.price_array[rows] * PRICE_UNITS_PER_DOLLAR).astype(np.int64))
        if found is None:
            return None
        recent = [*state.recent, *[batch.ids[row] for row in rows[-RECENT_TICK_IDS:].tolist()]]
        state.recent = dict.fromkeys(recent[-RECENT_TICK_IDS:])
        at, sides, scores = found
        if batch.seconds and sides:  # bars: on_bar's position flag, as its last signal left it
            state.holding = sides[-1] == "buy"
        return list(zip(rows[at].tolist(), zip(sides, scores, strict=True), strict=True))  # their rows in the batch

    def signal_at(self, batch: Batch, row: int, crossing: Crossing) -> Signal:
        """The signal of a ``crossing`` :meth:`scan` found at ``row`` of ``batch``: on_tick's of that
        tick (its time and price), or on_bar's of that bar (at its close)."""
        side, score = crossing
        when = batch.times[row]
        if batch.seconds:  # a bar (all of one timeframe): signalled at its close, as on_bar does
            when = datetime.fromtimestamp(int(when.timestamp()) + batch.seconds, UTC)
        return self.signal(batch.symbols[row], when, side, batch.prices[row], score, batch.ids[row])

    def _crossings(self, state: SymbolState, units: np.ndarray) -> tuple[np.ndarray, list[Side], list[float]] | None:
        """_decide_units over ``units`` in one go: the positions, sides and scores of the crossings."""
        import numpy as np  # (as in scan)

        short, long = state.indicators["short"], state.indicators["long"]
        assert isinstance(short, IntegerSum)
        assert isinstance(long, IntegerSum)
        seen = list(long.values)  # the last long window; the short one is its tail
        values = np.concatenate([np.array(seen, dtype=np.int64), units])
        if int(np.abs(values).max()) * (len(values) + self.long_window**2) >= 2**62:
            return None  # beyond int64: the per-tick rule's Python integers have no bound
        totals = np.concatenate([[0], np.cumsum(values)])
        first = max(self.long_window, len(seen) + 1)  # one past the first full long window not decided yet
        count = max(0, len(values) + 1 - first)
        at_ends = totals[first : first + count]  # (slices of the totals: views, not fancy-indexed copies)
        long_sums = at_ends - totals[first - self.long_window : first - self.long_window + count]
        short_sums = at_ends - totals[first - self.short_window : first - self.short_window + count]
        differences = short_sums * self.long_window - long_sums * self.short_window  # exact, as in _decide_units
        relations = np.sign(differences)
        turns = np.flatnonzero(relations)  # equal averages keep the side: only non-zero relations count
        previous = np.concatenate([[state.memory.get("relation", 0)], relations[turns[:-1]]])
        crossed = turns[(previous != 0) & (relations[turns] != previous)]
        if len(turns):
            state.memory["relation"] = int(relations[turns[-1]])
        long.values = deque(values[-self.long_window :].tolist(), maxlen=self.long_window)
        short.values = deque(values[-self.short_window :].tolist(), maxlen=self.short_window)
        long.total, short.total = sum(long.values), sum(short.values)
        turned, totals_of = differences[crossed], long_sums[crossed] * self.short_window
        if len(crossed) and max(int(np.abs(turned).max()), int(totals_of.max())) < 2**53:
            # both exact as floats, so each quotient is the one of the Python integers (correctly rounded)
            scores = np.minimum(1.0, np.abs(turned) / totals_of / FULL_CONFIDENCE_GAP).tolist()
        else:  # as _decide_units, one by one
            pairs = zip(turned.tolist(), totals_of.tolist(), strict=True)
            scores = [min(1.0, abs(difference) / total / FULL_CONFIDENCE_GAP) for difference, total in pairs]
        sides: list[Side] = ["buy" if relation > 0 else "sell" for relation in relations[crossed].tolist()]
        # crossed counts from the first undecided window's end; that is position len(seen) of values,
        # and units start there
        return crossed + (first - 1 - len(seen)), sides, scores

    @staticmethod
    def _turn(state: SymbolState, relation: int, score: float) -> Decision | None:
        previous = state.memory.get("relation", 0)
        if relation:
            state.memory["relation"] = relation
        if previous == 0 or relation in (0, previous):
            return None  # no baseline yet, averages equal, or still on the same side
        return ("buy" if relation > 0 else "sell"), score

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Also reads checkpoints of the float version (per-symbol "prices" and "relation")."""
        symbols = snapshot.get("symbols", {})
        if any("prices" in saved for saved in symbols.values()):
            snapshot = {"symbols": {symbol: self._upgrade(saved) for symbol, saved in symbols.items()}}
        super().restore(snapshot)

    def _upgrade(self, saved: dict[str, Any]) -> dict[str, Any]:
        state = SymbolState(self.indicators(), self.seconds)
        for price in saved["prices"][-self.long_window :]:
            for indicator in state.indicators.values():
                indicator.update(price_units(price) if self.average == "sma" else price)  # type: ignore[attr-defined]
        state.memory = {"relation": saved["relation"]}
        state.recent = dict.fromkeys(saved["recent_tick_ids"])
        return state.snapshot()
