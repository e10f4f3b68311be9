"""The stateless pre-trade checks of an order that grows exposure: each returns (code, reason) or None.

Limits are inclusive: an order that lands exactly on a limit passes, the smallest step beyond it is
denied. A relative tolerance keeps float rounding (0.15 * equity) from deciding either way.
"""

from __future__ import annotations

from tradebot.common.models import Order
from tradebot.risk import reasons
from tradebot.risk.limits import RiskLimits
from tradebot.risk.portfolio import MarketState, Portfolio, Totals

TOLERANCE = 1e-9
Denial = tuple[str, str]


def beyond(value: float, limit: float) -> bool:
    """True when ``value`` exceeds ``limit`` by more than float noise."""
    return value > limit + abs(limit) * TOLERANCE


def price_collar(order: Order, market: MarketState, limits: RiskLimits) -> Denial | None:
    """The order's price must lie within RISK_PRICE_COLLAR_PCT of the last trade known for its symbol."""
    last = market.last_prices.get(order.symbol)
    if not limits.price_collar_pct or not last:
        return None
    moved = abs(order.reference_price - last) / last
    if beyond(moved, limits.price_collar_pct):
        return reasons.PRICE_COLLAR, (
            f"price {order.reference_price:g} is {moved:.2%} from the last trade {last:g}; "
            f"RISK_PRICE_COLLAR_PCT is {limits.price_collar_pct:.2%}"
        )
    return None


def exposure(order: Order, quantity: float, portfolio: Portfolio, totals: Totals, limits: RiskLimits) -> Denial | None:
    """Order notional, position share, gross exposure, open positions and buying power of a buy."""
    price, equity = order.reference_price, totals.equity
    notional = quantity * price
    if limits.max_order_notional and beyond(notional, limits.max_order_notional):
        return reasons.MAX_ORDER_NOTIONAL, (
            f"order notional ${notional:,.2f} exceeds RISK_MAX_ORDER_NOTIONAL ${limits.max_order_notional:,.2f}"
        )
    held = portfolio.quantity(order.symbol)
    if limits.max_position_pct:
        after, cap = (held + quantity) * price, equity * limits.max_position_pct
        if beyond(after, cap):
            return reasons.MAX_POSITION, (
                f"{order.symbol} would be ${after:,.2f}, over RISK_MAX_POSITION_PCT "
                f"{limits.max_position_pct:.2%} of equity ${equity:,.2f} (${cap:,.2f})"
            )
    if limits.max_gross_exposure_pct:
        after, cap = totals.gross_exposure + notional, equity * limits.max_gross_exposure_pct
        if beyond(after, cap):
            return reasons.MAX_GROSS_EXPOSURE, (
                f"gross exposure would be ${after:,.2f}, over RISK_MAX_GROSS_EXPOSURE_PCT "
                f"{limits.max_gross_exposure_pct:.2%} of equity (${cap:,.2f})"
            )
    if limits.max_open_positions and held == 0 and totals.open_positions >= limits.max_open_positions:
        return reasons.MAX_OPEN_POSITIONS, (
            f"{totals.open_positions} positions are open; RISK_MAX_OPEN_POSITIONS is {limits.max_open_positions}"
        )
    cost = notional * (1 + limits.slippage_bps / 10_000) + quantity * limits.commission_per_share
    if beyond(cost, portfolio.cash):
        return (
            reasons.BUYING_POWER,
            f"buying {quantity:g} {order.symbol} costs about ${cost:,.2f}; cash is ${portfolio.cash:,.2f}",
        )
    return None


def grows_exposure(target: Order, replacement: Order) -> bool:
    """A buy that would cost more at its worst price than the order it replaces (a sell never does: long only)."""
    if replacement.side == "sell":
        return False

    def worst(order: Order) -> float:
        return order.quantity * (order.limit_price or order.stop_price or order.reference_price)

    return worst(replacement) > worst(target) + 1e-9
