"""The broker interface: what the execution loop needs from any real broker, broker-neutral.

A gateway never raises for an order's fate: ``submit`` says accepted, rejected (definitively not
an order), duplicate (the client order id is taken: an earlier attempt landed), throttled (429:
not accepted, try later) or ambiguous (timeout, 5xx, dropped connection: it may or may not
exist). Only the caller decides what happens next, and for ambiguous it is always a lookup.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from tradebot.common.models import Order, OrderChange

SubmitKind = Literal["accepted", "rejected", "duplicate", "throttled", "ambiguous"]


@dataclass(frozen=True)
class BrokerOrder:
    """An order as the broker reports it (cumulative fills, its own status word)."""

    client_order_id: str
    broker_id: str
    symbol: str
    side: str
    quantity: float
    filled_quantity: float
    average_price: float | None
    status: str  # the broker's: new, partially_filled, filled, canceled, expired, rejected, replaced, ...
    submitted_at: datetime


@dataclass(frozen=True)
class BrokerFill:
    """One execution (a fill activity or a fill trade update)."""

    broker_id: str
    quantity: float
    price: float
    cumulative: float  # the order's filled quantity after this execution


@dataclass(frozen=True)
class Booking:
    """One fill the ledger published (or an order with fills that ended): what the account books."""

    client_order_id: str
    strategy: str | None  # the order's (None for an external order)
    symbol: str
    side: str
    quantity: float  # 0 for the end of an order whose fills were booked before
    price: float
    ends: bool  # the order is done: a sell's realised P&L is a close


@dataclass(frozen=True)
class SubmitOutcome:
    kind: SubmitKind
    order: BrokerOrder | None = None
    reason: str = ""


@dataclass(frozen=True)
class BrokerPosition:
    """One position as the broker holds it (what the risk stage values the account with)."""

    quantity: float
    average_cost: float
    last_price: float | None


@dataclass(frozen=True)
class BrokerAccount:
    """The broker's cash and positions."""

    cash: float
    positions: dict[str, BrokerPosition]


@dataclass(frozen=True)
class MarketClock:
    is_open: bool
    next_open: datetime
    next_close: datetime


class BrokerGateway(Protocol):
    """A real broker's trading API (every call rate-limited by the gateway itself)."""

    async def submit(self, order: Order, client_order_id: str) -> SubmitOutcome: ...

    async def lookup(self, client_order_id: str) -> BrokerOrder | None:
        """The order with this client order id, or None if the broker has none (raises if unsure)."""
        ...

    async def orders_since(self, after: datetime | None, *, open_only: bool) -> list[BrokerOrder]: ...

    async def fills_since(self, after: datetime) -> list[BrokerFill]: ...

    async def positions(self) -> dict[str, float]: ...

    async def account(self) -> BrokerAccount:
        """Cash and positions with their cost and last price (the risk stage's portfolio input)."""
        ...

    async def clock(self) -> MarketClock: ...

    async def fractionable(self, symbol: str) -> bool:
        """Whether the asset takes fractional and notional orders."""
        ...

    async def cancel(self, broker_id: str) -> SubmitOutcome:
        """Ask for a cancel: accepted (the order's end comes as news), rejected, throttled or ambiguous."""
        ...

    async def replace(self, broker_id: str, change: OrderChange, client_id: str) -> SubmitOutcome:
        """Replace an open order; accepted carries the replacement order (client order id ``client_id``)."""
        ...

    def ready_in(self) -> float:
        """Seconds until the rate limit lets the next call through."""
        ...

    def close(self) -> None: ...
