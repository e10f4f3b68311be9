"""P&L per strategy: every fill booked to the strategy whose order it was (pure, checkpointed).

Each strategy keeps its own holding of each symbol, priced like the paper broker's positions:
the average cost includes the commissions paid to open it, realised P&L is net of the commission
to close, unrealised is the open quantity at the account's mark. A buy is booked to its order's
strategy. A sell closes its strategy's own holding first; what it sells beyond that (an exit
order, ``exit:stop_loss`` …, a flatten, an order without a strategy) closes the other strategies'
holdings of the symbol in proportion to their size, so the strategies' holdings always add up to
the account's position, and their total P&L (realised + unrealised) to the account's.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

UNATTRIBUTED = "unattributed"  # a buy whose order names no strategy (a webhook without one, by hand)
EPSILON = 1e-9


@dataclass
class Holding:
    """One strategy's holding of one symbol."""

    quantity: float = 0.0
    average_cost: float = 0.0
    realised_pnl: float = 0.0


class StrategyPnL:
    """Holdings and realised P&L per strategy and symbol; see the module docstring."""

    def __init__(self) -> None:
        self.books: dict[str, dict[str, Holding]] = {}

    def fill(
        self, strategy: str | None, symbol: str, side: str, quantity: float, price: float, commission: float
    ) -> None:
        """Book one fill."""
        if side == "buy":
            held = self.books.setdefault(strategy or UNATTRIBUTED, {}).setdefault(symbol, Holding())
            total = held.quantity + quantity
            held.average_cost = (held.quantity * held.average_cost + quantity * price + commission) / total
            held.quantity = total
            return
        for held, share in self._closing(strategy, symbol, quantity):
            held.realised_pnl += share * (price - held.average_cost) - commission * share / quantity
            held.quantity -= share
            if held.quantity <= EPSILON:
                held.quantity = 0.0

    def _closing(self, strategy: str | None, symbol: str, quantity: float) -> list[tuple[Holding, float]]:
        """Which holdings a sell of ``quantity`` closes, and how much of each."""
        own = self.books.get(strategy or UNATTRIBUTED, {}).get(symbol)
        parts = []
        left = quantity
        if own is not None and own.quantity > EPSILON:
            parts.append((own, min(own.quantity, left)))
            left -= parts[0][1]
        others = [book[symbol] for book in self.books.values() if symbol in book and book[symbol] is not own]
        others = [held for held in others if held.quantity > EPSILON]
        held_by_others = sum(held.quantity for held in others)
        if left > EPSILON and held_by_others > EPSILON:
            ratio = min(1.0, left / held_by_others)
            parts += [(held, held.quantity * ratio) for held in others]
        return parts

    def report(self, marks: Mapping[str, float | None]) -> dict[str, dict[str, Any]]:
        """Per strategy: realised and unrealised P&L in total and per symbol (marks: the last price per symbol)."""
        shown: dict[str, dict[str, Any]] = {}
        for strategy, book in sorted(self.books.items()):
            symbols = {}
            for symbol, held in sorted(book.items()):
                mark = marks.get(symbol)
                unrealised = held.quantity * (mark - held.average_cost) if mark is not None and held.quantity else 0.0
                symbols[symbol] = {
                    "quantity": held.quantity,
                    "average_cost": held.average_cost,
                    "realised": held.realised_pnl,
                    "unrealised": unrealised,
                }
            shown[strategy] = {
                "realised_pnl": sum(row["realised"] for row in symbols.values()),
                "unrealised_pnl": sum(row["unrealised"] for row in symbols.values()),
                "open_positions": sum(1 for row in symbols.values() if abs(row["quantity"]) > EPSILON),
                "symbols": symbols,
            }
        return shown

    def snapshot(self) -> dict[str, dict[str, list[float]]]:
        """The strategies in their order (it orders the sums of ``_closing``), each one's symbols
        sorted (the checkpoint keeps them in parts per symbol: restored, they come back in that order)."""
        return {
            strategy: {symbol: list(vars(book[symbol]).values()) for symbol in sorted(book)}  # plain floats: no asdict
            for strategy, book in self.books.items()
        }

    def snapshot_of(self, symbols: Collection[str]) -> dict[str, dict[str, list[float] | None]]:
        """:meth:`snapshot` for a checkpoint split of only these symbols (tradebot/broker/checkpoint.py
        ``split_touched``): every strategy and each one's symbols in their order, the holdings of
        ``symbols`` only (the others None)."""
        books: dict[str, dict[str, list[float] | None]] = {}
        for strategy, book in self.books.items():
            books[strategy] = shown = dict.fromkeys(sorted(book))
            for symbol in shown.keys() & symbols:
                shown[symbol] = list(vars(book[symbol]).values())
        return books

    def restore(self, saved: Mapping[str, Mapping[str, list[float]]] | None) -> None:
        self.books = {
            strategy: {symbol: Holding(*values) for symbol, values in book.items()}
            for strategy, book in (saved or {}).items()
        }
