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
from typing import Literal

from tradebot.common.models import Signal, Tick
from tradebot.strategy.bars import Candle
from tradebot.strategy.base import BarStrategy, Decision, SymbolState
from tradebot.strategy.indicators import EMA, Indicator

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

    def on_tick(self, tick: Tick) -> list[Signal]:
        """Every tick is a bar for the tick-driven SMA crossover: the hot path, without a Candle."""
        if not self._per_tick_sma:
            return super().on_tick(tick)
        state = self._symbols.get(tick.symbol) or self._state(tick.symbol)
        if not state.first_sight(tick.id):
            return []
        decision = self._decide_units(state, round(tick.price * PRICE_UNITS_PER_DOLLAR))
        if decision is None:
            return []
        return [self.signal(tick.symbol, tick.timestamp, decision[0], tick.price, decision[1], tick.id)]

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

    @staticmethod
    def _turn(state: SymbolState, relation: int, score: float) -> Decision | None:
        previous = state.memory.get("relation", 0)
        if relation:
            state.memory["relation"] = relation
        if previous == 0 or relation in (0, previous):
            return None  # no baseline yet, averages equal, or still on the same side
        return ("buy" if relation > 0 else "sell"), score

    def restore(self, snapshot: dict) -> None:
        """Also reads checkpoints of the float version (per-symbol "prices" and "relation")."""
        symbols = snapshot.get("symbols", {})
        if any("prices" in saved for saved in symbols.values()):
            snapshot = {"symbols": {symbol: self._upgrade(saved) for symbol, saved in symbols.items()}}
        super().restore(snapshot)

    def _upgrade(self, saved: dict) -> dict:
        state = SymbolState(self.indicators(), self.seconds)
        for price in saved["prices"][-self.long_window :]:
            for indicator in state.indicators.values():
                indicator.update(price_units(price) if self.average == "sma" else price)  # type: ignore[attr-defined]
        state.memory = {"relation": saved["relation"]}
        state.recent = dict.fromkeys(saved["recent_tick_ids"])
        return state.snapshot()
