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
    known_totals: Totals | None = None  # kept up to date by the caller, to skip the pass over positions

    def quantity(self, symbol: str) -> float:
        held = self.positions.get(symbol)
        return held.quantity if held is not None else 0.0

    def mark(self, symbol: str) -> float | None:
        held = self.positions.get(symbol)
        return None if held is None else held.last_price

    def totals(self) -> Totals:
        """Equity, gross exposure and open positions, in one pass over the positions."""
        if self.known_totals is not None:
            return self.known_totals
        value = gross = 0
        open_positions = 0
        for held in self.positions.values():
            quantity = held.quantity
            if quantity:
                units = to_units(quantity * (held.last_price or held.average_cost))
                value += units
                gross += units if units > 0 else -units
                open_positions += 1
        return Totals(self.cash, value, gross, open_positions)

    def equity(self) -> float:
        return self.totals().equity

    def gross_exposure(self) -> float:
        return self.totals().gross_exposure

    def open_positions(self) -> int:
        return self.totals().open_positions


UNITS_PER_DOLLAR = 1_000_000


def to_units(dollars: float) -> int:
    """Whole micro-dollars: integer sums are exact, so totals moved order by order equal a fresh sum."""
    return round(dollars * UNITS_PER_DOLLAR)


@dataclass(frozen=True, slots=True)
class Totals:
    """What the account-level checks need: cash, and the positions' value and gross in micro-dollars."""

    cash: float
    value_units: int
    gross_units: int
    open_positions: int

    @property
    def equity(self) -> float:
        return self.cash + self.value_units / UNITS_PER_DOLLAR

    @property
    def gross_exposure(self) -> float:
        return self.gross_units / UNITS_PER_DOLLAR

    def moved(self, cash: float, worth_before: float, worth_after: float) -> Totals:
        """The totals after one position's worth changed and the cash became ``cash``."""
        before, after = to_units(worth_before), to_units(worth_after)
        return Totals(
            cash,
            self.value_units + after - before,
            self.gross_units + abs(after) - abs(before),
            self.open_positions + (worth_after != 0) - (worth_before != 0),
        )


@dataclass(frozen=True, slots=True)
class MarketState:
    """Market facts beyond the order itself: the last trade and the ATR per symbol, when known."""

    last_prices: Mapping[str, float] = field(default_factory=dict)
    atr: Mapping[str, float] = field(default_factory=dict)
