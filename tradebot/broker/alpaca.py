"""Alpaca through alpaca-py's TradingClient, behind the BrokerGateway interface.

alpaca-py is synchronous and, by itself, would retry a POST on 429/504 after sleeping 3 s and
would wait forever for an answer. So: every call runs on one worker thread (one requests
session, calls in order), takes a token from the shared bucket first, has a timeout, and the
client's own retries are switched off (``_retry_codes``): what an error means is decided here.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

import requests
from alpaca.common.enums import Sort
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, QueryOrderStatus, TimeInForce
from alpaca.trading.models import Order as AlpacaOrder
from alpaca.trading.models import Position
from alpaca.trading.requests import (
    GetOrdersRequest,
    LimitOrderRequest,
    MarketOrderRequest,
    OrderRequest,
    ReplaceOrderRequest,
    StopLimitOrderRequest,
    StopLossRequest,
    StopOrderRequest,
    TakeProfitRequest,
    TrailingStopOrderRequest,
)

from tradebot.broker.base import BrokerAccount, BrokerFill, BrokerOrder, BrokerPosition, MarketClock, SubmitOutcome
from tradebot.common.config import Settings, SettingsError
from tradebot.common.models import Order, OrderChange, stable_id
from tradebot.common.ratelimit import TokenBucket

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_CLIENT_ORDER_ID = 48
THROTTLE_PAUSE_S = (0.5, 60.0)  # after a 429 nobody calls until the window resets, within these bounds
PAGE = 500


def client_order_id(order: Order) -> str:
    """Our order id when it fits Alpaca's 48 characters, else a stable digest of it."""
    return order.id if len(order.id) <= MAX_CLIENT_ORDER_ID else f"tb-{stable_id('client-order', order.id)}"


def order_request(order: Order, client_id: str) -> OrderRequest:
    """The alpaca-py request for our order: type, time in force, bracket / OTO legs, or an OCO exit pair."""
    common: dict[str, Any] = {
        "symbol": order.symbol,
        **({"notional": order.notional} if order.notional is not None else {"qty": order.quantity}),
        "side": OrderSide(order.side),
        "time_in_force": TimeInForce(order.time_in_force),
        "client_order_id": client_id,
        "extended_hours": order.extended_hours or None,
    }
    if order.take_profit_price is not None or order.stop_loss_price is not None:
        both = order.take_profit_price is not None and order.stop_loss_price is not None
        common["order_class"] = order.order_class or ("bracket" if both else "oto")
        if order.take_profit_price is not None:
            common["take_profit"] = TakeProfitRequest(limit_price=order.take_profit_price)
        if order.stop_loss_price is not None:
            common["stop_loss"] = StopLossRequest(stop_price=order.stop_loss_price)
    kind = order.order_type
    if order.order_class == "oco":  # the exit pair's limit is its take-profit, given once
        return LimitOrderRequest(**common)
    if kind == "limit":
        return LimitOrderRequest(limit_price=order.limit_price, **common)
    if kind == "stop":
        return StopOrderRequest(stop_price=order.stop_price, **common)
    if kind == "stop_limit":
        return StopLimitOrderRequest(limit_price=order.limit_price, stop_price=order.stop_price, **common)
    if kind == "trailing_stop":
        return TrailingStopOrderRequest(trail_percent=order.trail_percent, trail_price=order.trail_price, **common)
    return MarketOrderRequest(**common)


def broker_order(order: AlpacaOrder) -> BrokerOrder:
    status = getattr(order.status, "value", order.status)
    return BrokerOrder(
        client_order_id=order.client_order_id,
        broker_id=str(order.id),
        symbol=order.symbol or "",
        side=getattr(order.side, "value", str(order.side)),
        quantity=float(order.qty or 0),
        filled_quantity=float(order.filled_qty or 0),
        average_price=float(order.filled_avg_price) if order.filled_avg_price else None,
        status=str(status),
        submitted_at=order.submitted_at,
    )


class AlpacaGateway:
    """TradingClient calls, rate-limited, timed out, classified."""

    def __init__(self, settings: Settings, *, paper: bool, bucket: TokenBucket | None = None):
        assert settings.alpaca_key is not None
        assert settings.alpaca_secret is not None
        self.client = TradingClient(
            settings.alpaca_key.get_secret_value(),
            settings.alpaca_secret.get_secret_value(),
            paper=paper,
            url_override=settings.alpaca_trading_url,
        )
        self.client._retry_codes = []  # no hidden re-sends: 429 and 504 come back to us
        session = self.client._session
        session.request = functools.partial(session.request, timeout=settings.alpaca_timeout_s)  # type: ignore[method-assign]
        self.bucket = bucket or TokenBucket(settings.alpaca_requests_per_minute)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alpaca-rest")
        self.calls = 0
        self._fractionable: dict[str, bool] = {}

    async def _call(self, function: Callable[..., T], *args: Any) -> T:
        await self.bucket.take()
        self.calls += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)
        except APIError as error:
            if error.status_code == 429:
                pause = _retry_after(error)
                log.warning("alpaca: 429 rate limited; every trading-API call waits %.1fs", pause)
                self.bucket.pause(pause)
            elif error.status_code == 401:
                raise SettingsError("Alpaca rejected ALPACA_KEY/ALPACA_SECRET (401); set valid trading keys") from None
            raise

    async def _read(self, function: Callable[..., T], *args: Any) -> T:
        """A read changes nothing at the broker, so one that died or timed out is simply tried again."""
        try:
            return await self._call(function, *args)
        except requests.RequestException:
            return await self._call(function, *args)

    async def submit(self, order: Order, client_id: str) -> SubmitOutcome:
        try:
            placed = await self._call(self.client.submit_order, order_request(order, client_id))
        except APIError as error:
            return _classify(error)
        except requests.RequestException as error:  # timeout, refused, reset, dropped mid-answer
            return SubmitOutcome("ambiguous", reason=f"{type(error).__name__}")
        return SubmitOutcome("accepted", broker_order(placed))  # type: ignore[arg-type]

    async def lookup(self, client_id: str) -> BrokerOrder | None:
        try:
            found = await self._read(self.client.get_order_by_client_id, client_id)
        except APIError as error:
            if error.status_code == 404:
                return None
            raise
        return broker_order(found)  # type: ignore[arg-type]

    async def orders_since(self, after: datetime | None, *, open_only: bool) -> list[BrokerOrder]:
        status = QueryOrderStatus.OPEN if open_only else QueryOrderStatus.ALL
        found: dict[str, BrokerOrder] = {}
        while True:
            request = GetOrdersRequest(status=status, after=after, limit=PAGE, direction=Sort.ASC, nested=False)
            listed = await self._read(self.client.get_orders, request)
            page = [broker_order(o) for o in listed if isinstance(o, AlpacaOrder)]
            found.update((o.broker_id, o) for o in page)
            if len(page) < PAGE:
                return list(found.values())
            after = page[-1].submitted_at

    async def fills_since(self, after: datetime) -> list[BrokerFill]:
        params = {"after": after.astimezone(UTC).isoformat(), "direction": "asc", "page_size": 100}
        rows = await self._read(self.client.get, "/account/activities/FILL", params)
        return [
            BrokerFill(row["order_id"], float(row["qty"]), float(row["price"]), float(row["cum_qty"]))
            for row in rows or []
        ]

    async def positions(self) -> dict[str, float]:
        held = await self._read(self.client.get_all_positions)
        return {p.symbol: float(p.qty) for p in held}  # type: ignore[union-attr]

    async def account(self) -> BrokerAccount:
        cash = float((await self._read(self.client.get_account)).cash or 0)  # type: ignore[union-attr]
        held = [p for p in await self._read(self.client.get_all_positions) if isinstance(p, Position)]
        return BrokerAccount(
            cash,
            {
                p.symbol: BrokerPosition(
                    float(p.qty), float(p.avg_entry_price), float(p.current_price) if p.current_price else None
                )
                for p in held
            },
        )

    async def fractionable(self, symbol: str) -> bool:
        """The asset's ``fractionable`` flag (GET /v2/assets/{symbol}), asked once per symbol per process."""
        if symbol not in self._fractionable:
            asset = await self._read(self.client.get_asset, symbol)
            self._fractionable[symbol] = bool(asset.fractionable)  # type: ignore[union-attr]
        return self._fractionable[symbol]

    async def clock(self) -> MarketClock:
        clock = await self._read(self.client.get_clock)
        return MarketClock(clock.is_open, clock.next_open, clock.next_close)  # type: ignore[union-attr]

    async def cancel(self, broker_id: str) -> SubmitOutcome:
        """DELETE /v2/orders/{id}: accepted (the outcome comes as news about the order), or why not."""
        try:
            await self._call(self.client.cancel_order_by_id, broker_id)
        except APIError as error:
            return _classify(error)
        except requests.RequestException as error:
            return SubmitOutcome("ambiguous", reason=f"{type(error).__name__}")
        return SubmitOutcome("accepted")

    async def replace(self, broker_id: str, change: OrderChange, client_id: str) -> SubmitOutcome:
        """PATCH /v2/orders/{id} with what the change names; accepted carries the replacement."""
        if change.quantity is not None and change.quantity != int(change.quantity):
            return SubmitOutcome("rejected", reason="Alpaca replaces only to a whole number of shares")
        request = ReplaceOrderRequest(
            qty=int(change.quantity) if change.quantity is not None else None,
            time_in_force=TimeInForce(change.time_in_force) if change.time_in_force else None,
            limit_price=change.limit_price,
            stop_price=change.stop_price,
            trail=change.trail_percent or change.trail_price,  # Alpaca's one `trail`: the order's own kind
            client_order_id=client_id,
        )
        try:
            placed = await self._call(self.client.replace_order_by_id, broker_id, request)
        except APIError as error:
            return _classify(error)
        except requests.RequestException as error:
            return SubmitOutcome("ambiguous", reason=f"{type(error).__name__}")
        return SubmitOutcome("accepted", broker_order(placed))  # type: ignore[arg-type]

    def ready_in(self) -> float:
        return self.bucket.ready_in()

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)


def _retry_after(error: APIError) -> float:
    """Seconds until Alpaca's rate-limit window resets (X-RateLimit-Reset is a Unix time)."""
    low, high = THROTTLE_PAUSE_S
    reset = error.response.headers.get("X-RateLimit-Reset") if error.response is not None else None
    try:
        return min(high, max(low, float(reset) - time.time())) if reset else low
    except ValueError:
        return low


def _classify(error: APIError) -> SubmitOutcome:
    status = error.status_code or 0
    try:
        message = error.message
    except (ValueError, KeyError, TypeError):
        message = str(error)[:200]
    if status == 422 and "unique" in str(message):
        return SubmitOutcome("duplicate", reason=message)
    if status == 429:
        return SubmitOutcome("throttled", reason=message)
    if 400 <= status < 500:
        return SubmitOutcome("rejected", reason=f"alpaca {status}: {message}")
    return SubmitOutcome("ambiguous", reason=f"alpaca {status}: {message}")
