"""The interface every strategy implements, and the base of the indicator strategies.

A strategy is pure: no I/O, no clock; the same ticks always give the same signals. Indicator
strategies are driven by bars of their ``timeframe``, built inside from ticks (``"tick"``: every
tick is its own bar), so multi-timeframe strategies behave the same live and in a backtest. They
can also be fed stored bars directly (``on_bar``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol

from tradebot.common.models import (
    MAX_PRICE,
    MIN_PRICE,
    SIDES,
    Bar,
    ChangeAction,
    OrderChange,
    Side,
    Signal,
    Tick,
    builder,
    id_maker,
)
from tradebot.common.rounding import rounded
from tradebot.strategy.bars import BarBuilder, Candle, timeframe_seconds
from tradebot.strategy.indicators import Indicator

RECENT_TICK_IDS = 50  # per symbol: enough to catch a redelivered batch without growing forever
Decision = tuple[Side, float]  # side and confidence in [0, 1]
# a strategy's signals (models.built, its layout found once): every field, in field order
_signal_of = builder(Signal, "id", "symbol", "timestamp", "side", "price", "confidence", "strategy", "tick_id")


class Strategy(Protocol):
    """A pure, deterministic strategy: ticks in, signals out, state as plain data."""

    name: str

    def on_tick(self, tick: Tick) -> list[Signal]:
        """Update the state with one tick; return the signals it triggers (usually none)."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """The whole state as JSON-ready data."""
        ...

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Replace the state with one taken by :meth:`snapshot`."""
        ...

    # Optional: ``take_changes() -> list[OrderChange]``, the cancels and replaces of its own orders
    # asked for since the last call (BarStrategy has it; the book collects them after every tick).


class SymbolState:
    """What an indicator strategy remembers about one symbol."""

    def __init__(self, indicators: dict[str, Indicator], seconds: int):
        self.indicators = indicators
        self.builder = BarBuilder(seconds) if seconds else None
        self.holding = False  # long after a buy, flat after a sell (signals alternate)
        self.memory: dict[str, Any] = {}  # small JSON-ready extras a strategy keeps between bars
        self.recent: dict[str, None] = {}  # the last RECENT_TICK_IDS ids, oldest first (an ordered set)

    def first_sight(self, tick_id: str) -> bool:
        """Remember a tick id; False when it was seen recently (a redelivery)."""
        recent = self.recent
        if tick_id in recent:
            return False
        recent[tick_id] = None
        if len(recent) > RECENT_TICK_IDS:
            del recent[next(iter(recent))]
        return True

    def snapshot(self) -> dict[str, Any]:
        return {
            "indicators": {name: indicator.snapshot() for name, indicator in self.indicators.items()},
            "bar": self.builder.snapshot() if self.builder else None,
            "holding": self.holding,
            "memory": self.memory,
            "recent_tick_ids": list(self.recent),
        }

    def restore(self, saved: dict[str, Any]) -> None:
        for name, indicator in self.indicators.items():
            indicator.restore(saved["indicators"][name])
        if self.builder:
            self.builder.restore(saved["bar"])
        self.holding = saved["holding"]
        self.memory = dict(saved["memory"])
        self.recent = dict.fromkeys(saved["recent_tick_ids"][-RECENT_TICK_IDS:])


def trade_taker(strategy: Strategy) -> Callable[[str, str, datetime, float, float], list[Signal]] | None:
    """``strategy.on_trade`` when its ``on_tick`` is BarStrategy's own (on_trade of the tick's values),
    so a backtest may hand it a stored tick's values instead of a Tick; else None (a class that is
    not a BarStrategy, or one that changed on_tick, must see the Tick)."""
    if isinstance(strategy, BarStrategy) and type(strategy).on_tick is BarStrategy.on_tick:
        return strategy.on_trade
    return None


class BarStrategy:
    """Base of the indicator strategies: subclasses say which indicators and how to decide.

    ``decide`` sees each completed bar after its indicators were updated by ``update``; a BUY is
    passed on only when flat and a SELL only when holding, so signals alternate.
    """

    default_name: ClassVar[str] = "strategy"
    alternate: ClassVar[bool] = True  # pass a BUY only when flat, a SELL only when holding

    def __init__(self, *, timeframe: str = "tick", name: str | None = None):
        self.timeframe = timeframe
        self.seconds = timeframe_seconds(timeframe)
        self.name = name or self.default_name  # (and its signals' id maker: the property below)
        self._symbols: dict[str, SymbolState] = {}
        self._changes: list[OrderChange] = []

    @property
    def name(self) -> str:
        return self._name

    @name.setter
    def name(self, name: str) -> None:
        self._name = name
        self._signal_id = id_maker(name)  # stable_id(name, source_id), its prefix hashed once

    # --- what subclasses define ---
    def indicators(self) -> dict[str, Indicator]:
        """Fresh indicators for one symbol."""
        raise NotImplementedError

    def decide(self, state: SymbolState, bar: Candle) -> Decision | None:
        """Update the indicators with a completed bar; a side and confidence, or None."""
        raise NotImplementedError

    # --- driving ---
    def on_tick(self, tick: Tick) -> list[Signal]:
        """Apply one tick: :meth:`on_trade` of its values (subclasses change on_trade, not this)."""
        return self.on_trade(tick.symbol, tick.id, tick.timestamp, tick.price, tick.size)

    def on_trade(self, symbol: str, tick_id: str, at: datetime, price: float, size: float) -> list[Signal]:
        """Apply one tick given by its values (a backtest's stored columns: no Tick made for it); a
        tick id seen recently is a redelivery and changes nothing."""
        state = self._symbols.get(symbol) or self._state(symbol)
        if not state.first_sight(tick_id):
            return []
        if state.builder is None:
            bar: Candle | None = Candle(0, price, price, price, price, size)
        else:
            bar = state.builder.add_tick(at.timestamp(), price, size)
        if bar is None:
            return []
        return self._act(state, bar, symbol, at, price, tick_id)

    def on_bar(self, bar: Bar) -> list[Signal]:
        """Apply one complete stored bar (of this timeframe or a finer one); signalled at its close."""
        seconds = timeframe_seconds(bar.timeframe)
        if seconds > self.seconds > 0:
            raise ValueError(f"{self.name} runs on {self.timeframe} bars and cannot take {bar.timeframe} bars")
        state = self._state(bar.symbol)
        if not state.first_sight(bar.id):
            return []
        start = int(bar.timestamp.timestamp())
        candle = Candle(start, bar.open, bar.high, bar.low, bar.close, bar.volume, bar.trade_count)
        # "tick" strategies take each bar as one observation
        done = state.builder.add_bar(candle, seconds) if state.builder else candle
        if done is None:
            return []
        closed_at = datetime.fromtimestamp(start + seconds, UTC)
        return self._act(state, done, bar.symbol, closed_at, bar.close, bar.id)

    def _act(
        self, state: SymbolState, bar: Candle, symbol: str, at: datetime, price: float, source_id: str
    ) -> list[Signal]:
        decision = self.decide(state, bar)
        if decision is None:
            return []
        side, score = decision
        if self.alternate and (side == "buy") == state.holding:
            return []  # already long (buy) or already flat (sell)
        state.holding = side == "buy"
        return [self.signal(symbol, at, side, price, score, source_id)]

    def signal(self, symbol: str, at: datetime, side: Side, price: float, score: float, source_id: str) -> Signal:
        """The signal for a decision; its id follows from the strategy's name and the triggering tick.

        The symbol, time and price come from a validated tick or bar: the signal is built without
        validating again (``models.built``) when the few values a strategy decides are plainly in
        range, else through the model, which converts them or says what is wrong.
        """
        score = float(score)
        if not 0.0 <= score <= 1.0:
            score = min(1.0, max(0.0, score))
        values = {
            "id": self._signal_id(source_id),
            "symbol": symbol,
            "timestamp": at,
            "side": side,
            "price": price,
            "confidence": rounded(score, 6),
            "strategy": self._name,
            "tick_id": source_id,
        }
        if side in SIDES and type(price) is float and MIN_PRICE <= price <= MAX_PRICE and at.tzinfo is UTC:
            return _signal_of(values)
        return Signal.model_validate(values)

    def change_order(
        self, action: ChangeAction, signal: Signal, at: datetime, source_id: str, **fields: object
    ) -> OrderChange:
        """Ask to cancel or replace the order ``signal`` made (e.g. a limit that no longer makes sense).

        Delivered by :meth:`take_changes`; its id follows from the signal and ``source_id`` (the
        tick or bar it was decided on), so a replayed tick asks once.
        """
        change = OrderChange.for_signal(action, signal, at, source_id, **fields)
        self._changes.append(change)
        return change

    def take_changes(self) -> list[OrderChange]:
        """The changes asked for since the last call."""
        changes, self._changes = self._changes, []
        return changes

    def _state(self, symbol: str) -> SymbolState:
        state = self._symbols.get(symbol)
        if state is None:
            state = self._symbols[symbol] = SymbolState(self.indicators(), self.seconds)
        return state

    def snapshot(self) -> dict[str, Any]:
        """Per-symbol indicators, open bar, position flag and recent tick ids, as JSON-ready data."""
        return {"symbols": {symbol: state.snapshot() for symbol, state in self._symbols.items()}}

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Replace the state with a snapshot taken by a strategy with the same parameters."""
        self._symbols = {}
        for symbol, saved in snapshot.get("symbols", {}).items():
            self._state(symbol).restore(saved)
