"""Response models of the trading endpoints: activity (signals, orders, fills) and the account."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from tradebot.common.models import OrderStatus

Side = Literal["buy", "sell"]


class SignalOut(BaseModel):
    """A strategy's decision, stamped with the tick that triggered it."""

    id: str
    timestamp: datetime
    symbol: str
    side: Side
    price: float = Field(description="the tick's price (to the cent; 4 decimals below $1)")
    confidence: float = Field(description="0..1, how far the averages have moved apart")
    strategy: str
    tick_id: str


class OrderOut(BaseModel):
    """An order sent to the broker; ``id`` is its client order id."""

    id: str
    timestamp: datetime
    symbol: str
    side: Side
    quantity: float
    order_type: str
    signal_id: str
    strategy: str | None = Field(description="the strategy of its signal (null if the signal is not stored)")


class FillOut(BaseModel):
    """What the broker did with an order: filled (with price) or rejected (with the reason)."""

    id: str
    timestamp: datetime
    client_order_id: str
    symbol: str
    status: OrderStatus
    side: Side
    quantity: float
    price: float | None
    commission: float = Field(description="dollars, to the cent")
    reason: str | None
    strategy: str | None


class _Page(BaseModel):
    count: int
    next_cursor: str | None = Field(
        description="pass as ?cursor= for the next (older) page; null on the last page", examples=[None]
    )


class SignalsOut(_Page):
    """Signals, newest first."""

    signals: list[SignalOut]


class OrdersOut(_Page):
    """Orders, newest first."""

    orders: list[OrderOut]


class FillsOut(_Page):
    """Fills and rejections, newest first."""

    fills: list[FillOut]


class PositionOut(BaseModel):
    """Holdings and results in one symbol; money to the cent, prices as quoted."""

    symbol: str
    quantity: float
    average_cost: float = Field(description="per share, opening commissions included")
    last_price: float | None = Field(description="the latest reference price seen (the mark)")
    market_value: float
    realised_pnl: float
    unrealised_pnl: float


class AccountOut(BaseModel):
    """The paper account as of the execution worker's last commit."""

    starting_cash: float
    cash: float
    equity: float
    realised_pnl: float
    unrealised_pnl: float
    commissions: float
    positions: list[PositionOut] = Field(description="open positions (also closed ones with ?closed=true)")
    closed_positions: int = Field(description="symbols traded and now flat")
