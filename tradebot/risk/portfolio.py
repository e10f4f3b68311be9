"""What the engine sees of the account and the market: read-only views, no copies needed.

A broker's positions fit ``Holding`` as they are (quantity, average cost, last price), so the
execution role hands its account to the engine without building anything per order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


class Holding(Protocol):
    """One position as the engine reads it."""

    quantity: float
    average_cost: float
    last_price: float | None


@dataclass(frozen=True, slots=True)
class Portfolio:
    """Cash and positions; equity and exposure are valued at each position's last price."""

    cash: float
    positions: Mapping[str, Holding] = field(default_factory=dict)

    def quantity(self, symbol: str) -> float:
        held = self.positions.get(symbol)
        return held.quantity if held is not None else 0.0

    def mark(self, symbol: str) -> float | None:
        held = self.positions.get(symbol)
        return None if held is None else held.last_price

    def market_value(self) -> float:
        return sum(p.quantity * (p.last_price or p.average_cost) for p in self.positions.values())

    def gross_exposure(self) -> float:
        return sum(abs(p.quantity) * (p.last_price or p.average_cost) for p in self.positions.values())

    def equity(self) -> float:
        return self.cash + self.market_value()

    def open_positions(self) -> int:
        return sum(1 for p in self.positions.values() if p.quantity != 0)


@dataclass(frozen=True, slots=True)
class MarketState:
    """Market facts beyond the order itself: the last trade and the ATR per symbol, when known."""

    last_prices: Mapping[str, float] = field(default_factory=dict)
    atr: Mapping[str, float] = field(default_factory=dict)
