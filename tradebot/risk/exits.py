"""Exits on every tick: stop-loss, take-profit and trailing stop per position (pure, checkpointed).

Run by the strategy role beside the strategy. A trade opens at a buy signal's price and closes at
a sell signal; in between, each tick of the symbol is checked against the stop (entry less
EXIT_STOP_LOSS_PCT), the ATR stop (entry less EXIT_ATR_MULTIPLE times the symbol's ATR when the
trade opened), the target (entry plus EXIT_TAKE_PROFIT_PCT), the ATR target (entry plus
EXIT_TAKE_PROFIT_ATR_MULTIPLE times that ATR) and the trailing stop (the highest price since entry
less EXIT_TRAILING_PCT). The first that is hit gives a sell signal, and its
order goes through the same risk stage as any other: if the buy was never filled, the risk stage
denies the exit as a sell of nothing held.

The ATR is the strategy room's indicator over bars of each symbol's ticks (``Volatility``, made by
the caller: tradebot/strategy/bars.py BarATR), fed with every tick of every symbol so that it is
known when a trade opens; a trade opened before it is known gets its ATR stop and target at the
first tick that knows it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from tradebot.common.models import Signal, Tick, stable_id


class Volatility(Protocol):
    """A symbol's ATR, fed tick by tick (None until known)."""

    value: float | None

    def add_tick(self, epoch_s: float, price: float, size: float) -> float | None: ...
    def snapshot(self) -> list[Any]: ...
    def restore(self, saved: list[Any]) -> None: ...


@dataclass
class OpenTrade:
    """Where a trade was entered, the best price since, and its ATR stop and target (once the ATR is known)."""

    entry: float
    peak: float
    atr_stop: float | None = None
    atr_target: float | None = None


class ExitRules:
    """Percentages of the entry price and a multiple of the ATR (0 = that exit is off)."""

    def __init__(
        self,
        stop_loss_pct: float = 0.0,
        take_profit_pct: float = 0.0,
        trailing_pct: float = 0.0,
        atr_multiple: float = 0.0,
        new_volatility: Callable[[], Volatility] | None = None,
        take_profit_atr_multiple: float = 0.0,
    ):
        self.stop_loss_pct = stop_loss_pct
        self.take_profit_pct = take_profit_pct
        self.trailing_pct = trailing_pct
        self.atr_multiple = atr_multiple if new_volatility is not None else 0.0
        self.take_profit_atr_multiple = take_profit_atr_multiple if new_volatility is not None else 0.0
        self.new_volatility = new_volatility
        self.trades: dict[str, OpenTrade] = {}
        self.volatility: dict[str, Volatility] = {}

    @property
    def enabled(self) -> bool:
        return bool(
            self.stop_loss_pct
            or self.take_profit_pct
            or self.trailing_pct
            or self.atr_multiple
            or self.take_profit_atr_multiple
        )

    def on_tick(self, tick: Tick, signals: list[Signal]) -> list[Signal]:
        """Follow the strategy's signals for this tick; otherwise check the open trade's exits."""
        atr = self._atr(tick)
        for signal in signals:
            if signal.side == "buy":
                self.trades.setdefault(signal.symbol, OpenTrade(signal.price, signal.price))
            else:
                self.trades.pop(signal.symbol, None)
        trade = self.trades.get(tick.symbol)
        if trade is None:
            return []
        if trade.atr_stop is None and trade.atr_target is None and atr is not None:  # fixed once, at the first ATR
            trade.atr_stop = trade.entry - self.atr_multiple * atr if self.atr_multiple else None
            trade.atr_target = (
                trade.entry + self.take_profit_atr_multiple * atr if self.take_profit_atr_multiple else None
            )
        if signals:
            return []
        trade.peak = max(trade.peak, tick.price)
        kind = self._hit(trade, tick.price)
        if kind is None:
            return []
        del self.trades[tick.symbol]
        return [
            Signal(
                id=stable_id("exit", kind, tick.id),
                symbol=tick.symbol,
                timestamp=tick.timestamp,
                side="sell",
                price=tick.price,
                confidence=1.0,
                strategy=f"exit:{kind}",
                tick_id=tick.id,
            )
        ]

    def _atr(self, tick: Tick) -> float | None:
        """The symbol's ATR after this tick (None while unknown or when ATR exits are off)."""
        if not (self.atr_multiple or self.take_profit_atr_multiple) or self.new_volatility is None:
            return None
        tracker = self.volatility.get(tick.symbol)
        if tracker is None:
            tracker = self.volatility[tick.symbol] = self.new_volatility()
        return tracker.add_tick(tick.timestamp.timestamp(), tick.price, tick.size)

    def _hit(self, trade: OpenTrade, price: float) -> str | None:
        if self.stop_loss_pct and price <= trade.entry * (1 - self.stop_loss_pct):
            return "stop_loss"
        if trade.atr_stop is not None and price <= trade.atr_stop:
            return "atr_stop"
        if self.take_profit_pct and price >= trade.entry * (1 + self.take_profit_pct):
            return "take_profit"
        if trade.atr_target is not None and price >= trade.atr_target:
            return "atr_take_profit"
        if self.trailing_pct and price <= trade.peak * (1 - self.trailing_pct):
            return "trailing_stop"
        return None

    def snapshot(self) -> dict[str, Any]:
        saved: dict[str, Any] = {
            symbol: [trade.entry, trade.peak, trade.atr_stop, trade.atr_target] for symbol, trade in self.trades.items()
        }
        if self.volatility:
            saved[ATR_KEY] = {symbol: tracker.snapshot() for symbol, tracker in self.volatility.items()}
        return saved

    def restore(self, snapshot: dict[str, Any]) -> None:
        snapshot = dict(snapshot)
        trackers = snapshot.pop(ATR_KEY, {})
        # [entry, peak(, atr_stop(, atr_target))]: checkpoints from before the ATR exits are shorter
        self.trades = {symbol: OpenTrade(*values) for symbol, values in snapshot.items()}
        self.volatility = {}
        if self.new_volatility is not None:
            for symbol, saved in trackers.items():
                self.volatility[symbol] = tracker = self.new_volatility()
                tracker.restore(saved)


ATR_KEY = "*atr"  # not a symbol: symbols start with a capital letter
