"""Moving-average crossover: BUY when the short SMA crosses above the long one, SELL when below.

Per symbol the strategy keeps the last ``long_window`` prices and which side of the long average
the short one was last seen on. A signal fires only on a change of side, and only once a full long
window has been seen. Averages are recomputed from the stored prices on every tick (no running
sums), so a strategy restored from a snapshot continues bit for bit like one that never stopped.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from tradebot.common.models import Side, Signal, Tick, stable_id

# |short - long| / long at which confidence reaches 1. At a cross the averages have only just met,
# so on ticks a few cents apart the gap is typically a fraction of a basis point: one bp is strong.
FULL_CONFIDENCE_GAP = 0.0001
RECENT_TICK_IDS = 50  # per symbol: enough to catch a redelivered batch without growing forever


def confidence(short_average: float, long_average: float) -> float:
    """How far apart the averages are, relative to the long one, scaled into [0, 1]."""
    gap = abs(short_average - long_average) / long_average
    return round(min(1.0, gap / FULL_CONFIDENCE_GAP), 6)


@dataclass
class SymbolState:
    """What the strategy remembers about one symbol."""

    prices: deque[float]
    relation: int = 0  # +1 short above long, -1 below, 0 not known yet
    recent_tick_ids: deque[str] = field(default_factory=lambda: deque(maxlen=RECENT_TICK_IDS))


class MovingAverageCrossover:
    """The pure crossover strategy (see the module docstring)."""

    def __init__(self, short_window: int = 5, long_window: int = 20):
        if not 1 <= short_window < long_window:
            raise ValueError(f"need 1 <= short_window < long_window, got {short_window} and {long_window}")
        self.short_window = short_window
        self.long_window = long_window
        self.name = f"ma_crossover_{short_window}_{long_window}"
        self._symbols: dict[str, SymbolState] = {}

    def on_tick(self, tick: Tick) -> list[Signal]:
        """Apply one tick; a tick id seen recently is a redelivery and changes nothing."""
        state = self._state(tick.symbol)
        if tick.id in state.recent_tick_ids:
            return []
        state.recent_tick_ids.append(tick.id)
        state.prices.append(tick.price)
        if len(state.prices) < self.long_window:
            return []
        prices = list(state.prices)
        short_average = sum(prices[-self.short_window :]) / self.short_window
        long_average = sum(prices) / self.long_window
        relation = (short_average > long_average) - (short_average < long_average)
        previous, state.relation = state.relation, relation or state.relation
        if previous == 0 or relation in (0, previous):
            return []  # no baseline yet, averages equal, or still on the same side
        side: Side = "buy" if relation > 0 else "sell"
        return [self._signal(tick, side, confidence(short_average, long_average))]

    def _signal(self, tick: Tick, side: Side, score: float) -> Signal:
        return Signal(
            id=stable_id(self.name, tick.id),
            symbol=tick.symbol,
            timestamp=tick.timestamp,
            side=side,
            price=tick.price,
            confidence=score,
            strategy=self.name,
            tick_id=tick.id,
        )

    def _state(self, symbol: str) -> SymbolState:
        state = self._symbols.get(symbol)
        if state is None:
            state = self._symbols[symbol] = SymbolState(deque(maxlen=self.long_window))
        return state

    def snapshot(self) -> dict[str, Any]:
        """Per-symbol prices, last side and recent tick ids, as JSON-ready data."""
        return {
            "symbols": {
                symbol: {"prices": list(s.prices), "relation": s.relation, "recent_tick_ids": list(s.recent_tick_ids)}
                for symbol, s in self._symbols.items()
            }
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Replace the state with a snapshot (a changed LONG_WINDOW keeps the newest prices)."""
        self._symbols = {
            symbol: SymbolState(
                deque(saved["prices"], maxlen=self.long_window),
                saved["relation"],
                deque(saved["recent_tick_ids"], maxlen=RECENT_TICK_IDS),
            )
            for symbol, saved in snapshot.get("symbols", {}).items()
        }
