"""The account on a real broker's path, as the broker loop keeps it, in the paper account's shape.

The broker's cash and positions (average entry, current price) as read (``GET /v2/account`` and
``/v2/positions``: at start, at each batch of new orders and at each full reconciliation), moved
by every fill the ledger publishes between reads with the paper account's arithmetic (Alpaca
charges no commission). A read is taken whole only when its positions equal the ledger's (every
fill it includes has been booked); otherwise only its prices are, so no fill counts twice. Each
sell's realised P&L (against the position's average entry) is added up per order and, once the
order is done, handed out as a close for the risk engine's protections and Kelly statistics; every
fill is also booked to its order's strategy (attribution.py).

Saved in the broker checkpoint as ``account`` (the paper account's snapshot format) and ``pnl``,
so /portfolio, /positions, /pnl, /account and the equity curve read either path alike
(tradebot/broker/checkpoint.py, ``as_paper_snapshot``). ``starting_cash`` is the account's equity
when it was first read whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from tradebot.broker.base import Booking, BrokerAccount
from tradebot.broker.paper import Position
from tradebot.execution.attribution import StrategyPnL

TOLERANCE = 1e-6  # shares: a read whose positions are this close to the ledger's includes no unseen fill


class BrokerBook:
    """Cash, positions, realised P&L and P&L per strategy of a real broker's account; see the module docstring."""

    def __init__(self) -> None:
        self.starting_cash: float | None = None  # equity at the first whole read
        self.cash = 0.0
        self.positions: dict[str, Position] = {}
        self.pnl = StrategyPnL()
        self.closing: dict[str, float] = {}  # a sell's client order id -> its realised P&L so far

    def refresh(self, account: BrokerAccount, ledger_positions: Mapping[str, float]) -> bool:
        """Take in a read of the broker's account; True if taken whole (not only its prices)."""
        for symbol, seen in account.positions.items():
            if seen.last_price is not None and symbol in self.positions:
                self.positions[symbol].last_price = seen.last_price
        symbols = set(account.positions) | {s for s, q in ledger_positions.items() if abs(q) > TOLERANCE}
        theirs = {symbol: p.quantity for symbol, p in account.positions.items()}
        if any(abs(theirs.get(s, 0.0) - ledger_positions.get(s, 0.0)) > TOLERANCE for s in symbols):
            return False  # fills in flight: the next read that agrees is taken
        self.cash = account.cash
        for symbol, seen in account.positions.items():
            held = self.positions.setdefault(symbol, Position())
            held.quantity, held.average_cost = seen.quantity, seen.average_cost
            held.last_price = seen.last_price if seen.last_price is not None else held.last_price
        for symbol, held in self.positions.items():
            if symbol not in account.positions:
                held.quantity = 0.0  # closed; its realised P&L stays
        if self.starting_cash is None:
            self.starting_cash = self.equity()
        return True

    def equity(self) -> float:
        return self.cash + sum(p.quantity * (p.last_price or p.average_cost) for p in self.positions.values())

    def book(self, fill: Booking) -> tuple[str, float] | None:
        """Move the account by one fill; (symbol, realised P&L) when it ends a sell with fills."""
        if fill.quantity > 0:
            held = self.positions.setdefault(fill.symbol, Position())
            held.last_price = fill.price
            if fill.side == "buy":
                total = held.quantity + fill.quantity
                if total > 0:
                    cost_before = max(held.quantity, 0.0) * held.average_cost
                    held.average_cost = (cost_before + fill.quantity * fill.price) / total
                held.quantity, self.cash = total, self.cash - fill.quantity * fill.price
            else:
                realised = fill.quantity * (fill.price - held.average_cost)
                held.realised_pnl += realised
                held.quantity, self.cash = held.quantity - fill.quantity, self.cash + fill.quantity * fill.price
                self.closing[fill.client_order_id] = self.closing.get(fill.client_order_id, 0.0) + realised
            self.pnl.fill(fill.strategy, fill.symbol, fill.side, fill.quantity, fill.price, 0.0)
        if fill.ends and fill.client_order_id in self.closing:
            return fill.symbol, self.closing.pop(fill.client_order_id)
        return None

    def snapshot(self) -> dict[str, Any]:
        """The account in the paper account's snapshot format, plus the sells not done yet."""
        return {
            "starting_cash": self.starting_cash,
            "cash": self.cash,
            "commissions": 0.0,
            "positions": {symbol: asdict(p) for symbol, p in self.positions.items()},
            "seen_order_ids": {},
            "closing": self.closing,
        }

    def restore(self, account: Mapping[str, Any] | None, pnl: Mapping[str, Any] | None) -> None:
        account = account or {}
        self.starting_cash = account.get("starting_cash")
        self.cash = account.get("cash", 0.0)
        self.positions = {symbol: Position(**saved) for symbol, saved in account.get("positions", {}).items()}
        self.closing = dict(account.get("closing", {}))
        self.pnl.restore(pnl)
