"""Reason codes of risk decisions: stable strings that order events, the API and alerts carry."""

from __future__ import annotations

APPROVED = "approved"
HALTED = "halted"
REDUCING = "reducing"
MARKET_CLOSED = "market_closed"
NO_POSITION = "no_position"  # a sell of a symbol not held: short selling is not supported
SIZE_ZERO = "size_zero"
COOLDOWN = "cooldown"
LOSS_LOCK = "loss_lock"
DUPLICATE_ORDER = "duplicate_order"
PRICE_COLLAR = "price_collar"
RATE_PER_SECOND = "rate_per_second"
RATE_PER_MINUTE = "rate_per_minute"
SYMBOL_RATE_PER_SECOND = "symbol_rate_per_second"
SYMBOL_RATE_PER_MINUTE = "symbol_rate_per_minute"
MAX_ORDER_NOTIONAL = "max_order_notional"
MAX_POSITION = "max_position"
MAX_GROSS_EXPOSURE = "max_gross_exposure"
MAX_OPEN_POSITIONS = "max_open_positions"
BUYING_POWER = "buying_power"
# Rules that change the trading state (they trip on the order that finds them broken).
DAILY_LOSS = "daily_loss"
MAX_DRAWDOWN = "max_drawdown"
# ... and rules found broken outside the order path (RiskEngine.impose).
DATA_GAP = "data_gap"
BROKER_MISMATCH = "broker_mismatch"
