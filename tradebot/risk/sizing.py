"""Position sizing: how many shares an order should be, given the account (pure functions).

Buys are sized by the configured mode (POSITION_SIZING, or the order's strategy's own
``position_sizing``); sells close what is held (fixed_quantity: at most what is held), because the
account is long only. Whole shares unless FRACTIONAL_SHARES is set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tradebot.common.models import Order
from tradebot.risk.limits import RiskLimits
from tradebot.risk.portfolio import MarketState, Portfolio

KELLY_MIN_TRADES = 10  # below this the win rate means little: size by SIZING_RISK_PCT instead
FRACTIONAL_STEP = 1e-6


@dataclass(slots=True)
class TradeStats:
    """Closed trades so far, for Kelly sizing."""

    wins: int = 0
    losses: int = 0
    won: float = 0.0
    lost: float = 0.0

    def record(self, pnl: float) -> None:
        if pnl > 0:
            self.wins, self.won = self.wins + 1, self.won + pnl
        elif pnl < 0:
            self.losses, self.lost = self.losses + 1, self.lost - pnl

    def kelly(self) -> float | None:
        """The Kelly fraction W - (1 - W) / R, or None with too few trades to say."""
        trades = self.wins + self.losses
        if trades < KELLY_MIN_TRADES:
            return None
        if self.losses == 0:
            return 1.0
        if self.wins == 0:
            return 0.0
        win_rate = self.wins / trades
        payoff = (self.won / self.wins) / (self.lost / self.losses)
        return win_rate - (1 - win_rate) / payoff


def sizing_mode(order: Order, limits: RiskLimits) -> str:
    """The order's strategy's own sizing mode, else POSITION_SIZING."""
    return limits.sizing_by_strategy.get(order.strategy or "", limits.sizing)


def buy_notional(
    order: Order, portfolio: Portfolio, market: MarketState, limits: RiskLimits, stats: TradeStats
) -> float:
    """Dollars to put into one buy under the configured sizing mode."""
    equity, price = portfolio.equity(), order.reference_price
    mode = sizing_mode(order, limits)
    if mode == "fixed_quantity":
        return order.quantity * price
    if mode == "fixed_notional":
        return limits.sizing_notional
    if mode == "atr" and market.atr.get(order.symbol):
        return equity * limits.sizing_risk_pct / (limits.sizing_atr_multiple * market.atr[order.symbol]) * price
    if mode == "kelly":
        kelly = stats.kelly()
        share = limits.sizing_risk_pct if kelly is None else max(0.0, kelly * limits.sizing_kelly_fraction)
        return equity * min(share, limits.sizing_kelly_cap)
    if mode == "equal_risk":
        slots = limits.max_open_positions or max(1, round(1 / (limits.max_position_pct or 1)))
        return equity * (limits.max_gross_exposure_pct or 1.0) / slots
    # fixed_fractional, and atr before an ATR is known: lose SIZING_RISK_PCT of equity at the stop
    return equity * limits.sizing_risk_pct / limits.sizing_stop_pct


def round_quantity(quantity: float, fractional: bool) -> float:
    """Down to whole shares (or to the fractional step): sizing never rounds risk up."""
    step = FRACTIONAL_STEP if fractional else 1.0
    return math.floor(quantity / step + 1e-9) * step


def size(order: Order, portfolio: Portfolio, market: MarketState, limits: RiskLimits, stats: TradeStats) -> float:
    """The quantity to send: sized buys, sells capped at (or, when sizing, closing) the position."""
    held = portfolio.quantity(order.symbol)
    mode = sizing_mode(order, limits)
    if order.side == "sell":
        quantity = min(order.quantity, held) if mode == "fixed_quantity" else held
        legs = order.take_profit_price is not None or order.stop_loss_price is not None
        if quantity == order.quantity or (order.time_in_force == "day" and not legs):
            return quantity
        # Capped at a position holding a part of a share (a partial fill at the broker): only a day
        # order without legs may carry a fraction, so any other sells whole shares, or nothing.
        return round_quantity(quantity, fractional=False)
    if mode == "fixed_quantity":
        return order.quantity
    return round_quantity(
        buy_notional(order, portfolio, market, limits, stats) / order.reference_price, limits.fractional_shares
    )
