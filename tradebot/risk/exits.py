"""Exits on every tick: stop-loss, take-profit and trailing stop per position (pure, checkpointed).

Run by the strategy role beside the strategy. A trade opens at a buy signal's price and closes at
a sell signal; in between, each tick of the symbol is checked against the stop (entry less
EXIT_STOP_LOSS_PCT), the target (entry plus EXIT_TAKE_PROFIT_PCT) and the trailing stop (the
highest price since entry less EXIT_TRAILING_PCT). The first that is hit gives a sell signal, and
its order goes through the same risk stage as any other: if the buy was never filled, the risk
stage denies the exit as a sell of nothing held.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tradebot.common.models import Signal, Tick, stable_id


@dataclass
class OpenTrade:
    """Where a trade was entered and the best price since."""

    entry: float
    peak: float


class ExitRules:
    """Percentages of the entry price (0 = that exit is off)."""

    def __init__(self, stop_loss_pct: float = 0.0, take_profit_pct: float = 0.0, trailing_pct: float = 0.0):
        self.stop_loss_pct = stop_loss_pct
        self.take_profit_pct = take_profit_pct
        self.trailing_pct = trailing_pct
        self.trades: dict[str, OpenTrade] = {}

    @property
    def enabled(self) -> bool:
        return bool(self.stop_loss_pct or self.take_profit_pct or self.trailing_pct)

    def on_tick(self, tick: Tick, signals: list[Signal]) -> list[Signal]:
        """Follow the strategy's signals for this tick; otherwise check the open trade's exits."""
        for signal in signals:
            if signal.side == "buy":
                self.trades.setdefault(signal.symbol, OpenTrade(signal.price, signal.price))
            else:
                self.trades.pop(signal.symbol, None)
        trade = self.trades.get(tick.symbol)
        if trade is None or signals:
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

    def _hit(self, trade: OpenTrade, price: float) -> str | None:
        if self.stop_loss_pct and price <= trade.entry * (1 - self.stop_loss_pct):
            return "stop_loss"
        if self.take_profit_pct and price >= trade.entry * (1 + self.take_profit_pct):
            return "take_profit"
        if self.trailing_pct and price <= trade.peak * (1 - self.trailing_pct):
            return "trailing_stop"
        return None

    def snapshot(self) -> dict[str, Any]:
        return {symbol: [trade.entry, trade.peak] for symbol, trade in self.trades.items()}

    def restore(self, snapshot: dict[str, Any]) -> None:
        self.trades = {symbol: OpenTrade(entry, peak) for symbol, (entry, peak) in snapshot.items()}
