"""The order engine behind the Alpaca trading emulator: orders, fills against a price source,
positions, fill activities, and the `trade_updates` each change produces.

Thread-safe (one lock, an Observable): the REST server mutates it from its loop, tests read and
script it from theirs. Every change calls `publish(update)` with the `trade_updates` payload;
the stream emulator turns it into a frame. Orders are JSON-ready dicts shaped exactly like the
Trading API's Order object (alpaca-py's `Order` model validates them).

Facts reproduced: `client_order_id` at most 48 characters and unique for ever (cancelled or not);
qty XOR notional; extended hours only for limit + day; bracket needs take_profit and stop_loss,
oto one of them; a market order fills in `partial_fills` executions; limit/stop/stop-limit/
trailing-stop orders rest until the price crosses; ioc/fok that cannot fill are canceled.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from .background import Observable
from .events import parse_time

Update = dict[str, Any]
OPEN_STATUSES = {"new", "accepted", "pending_new", "partially_filled", "pending_cancel", "pending_replace"}


class OrderError(Exception):
    """A request the Trading API would refuse: `status` and its JSON body."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.body = status, {"code": code, "message": message}


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _num(value: float) -> str:
    return f"{value:.9g}"


class TradingBook(Observable):
    """One account at the emulated broker."""

    def __init__(
        self, *, prices: dict[str, float] | None = None, partial_fills: int = 1, drift: float = 0.0, cash: float = 1e9
    ) -> None:
        super().__init__()
        self.drift = drift  # the price moves by this much after every execution (fills at several prices)
        self.prices = dict(prices or {})
        self.partial_fills = partial_fills
        self.cash = cash
        self.orders: dict[str, dict[str, Any]] = {}  # broker order id -> order
        self.by_client_id: dict[str, str] = {}
        self.positions: dict[str, float] = {}
        self.cost: dict[str, float] = {}
        self.activities: list[dict[str, Any]] = []
        self.updates: list[Update] = []  # every trade update ever published, oldest first
        self.submissions = 0  # POST /v2/orders that created an order
        self.duplicate_submissions = 0  # POSTs refused because the client order id was taken
        self.market_open = True
        self.not_fractionable: set[str] = set()  # symbols whose asset says fractionable: false
        self._oco_pairs: dict[str, str] = {}  # an OCO leg's id -> the other leg's
        self._working: dict[str, None] = {}  # ids of orders the matcher still has to look at, in order
        self.publish: Callable[[Update], None] = lambda update: None

    # ----- requests -------------------------------------------------------------------------------

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create an order from a POST /v2/orders body (raises OrderError like the API's 4xx)."""
        client_id = body.get("client_order_id") or str(uuid.uuid4())
        self._validate(body, client_id)
        with self.changing():
            if client_id in self.by_client_id:
                self.duplicate_submissions += 1
                raise OrderError(422, 40010001, "client_order_id must be unique")
            order = self._new_order(body, client_id)
            self.orders[order["id"]] = order
            self.by_client_id[client_id] = order["id"]
            self._working[order["id"]] = None
            self.submissions += 1
            self._emit("new", order)
            for leg in order["legs"] or []:
                self.orders[leg["id"]] = leg
        return dict(order)

    def _validate(self, body: dict[str, Any], client_id: str) -> None:
        if len(client_id) > 48:
            raise OrderError(422, 40010001, "client_order_id must be no more than 48 characters")
        if (body.get("qty") is None) == (body.get("notional") is None):
            raise OrderError(422, 40010001, "qty or notional is required, not both")
        kind, tif = body.get("type"), body.get("time_in_force")
        if kind not in ("market", "limit", "stop", "stop_limit", "trailing_stop"):
            raise OrderError(422, 40010001, f"invalid order type {kind!r}")
        if tif not in ("day", "gtc", "ioc", "fok", "opg", "cls"):
            raise OrderError(422, 40010001, f"invalid time_in_force {tif!r}")
        if body.get("extended_hours") and (kind != "limit" or tif != "day"):
            raise OrderError(422, 40010001, "extended hours order must be DAY limit orders")
        self._validate_fractional(body, kind, tif)
        order_class = body.get("order_class") or "simple"
        legs = [body.get("take_profit"), body.get("stop_loss")]
        if order_class in ("bracket", "oco") and not all(legs):
            raise OrderError(422, 40010001, f"{order_class} orders require take_profit and stop_loss")
        if order_class == "oco" and kind != "limit":
            raise OrderError(422, 40010001, "oco orders must be limit orders")
        if order_class in ("oto", "oco") and not any(legs):
            raise OrderError(422, 40010001, f"{order_class} orders require take_profit or stop_loss")

    def _validate_fractional(self, body: dict[str, Any], kind: object, tif: object) -> None:
        """Alpaca's rules: fractional (a part of a share, or a notional) only on fractionable assets,
        as day orders; a notional order is a market order."""
        notional, qty = body.get("notional"), body.get("qty")
        if notional is None and float(qty) == int(float(qty)):
            return
        if body["symbol"] in self.not_fractionable:
            raise OrderError(422, 40010001, f"asset {body['symbol']} is not fractionable")
        if tif != "day":
            raise OrderError(422, 40010001, "fractional orders must be DAY orders")
        if notional is not None and kind != "market":
            raise OrderError(422, 40010001, "notional orders must be market orders")

    def _new_order(self, body: dict[str, Any], client_id: str) -> dict[str, Any]:
        stamp = now_iso()
        symbol = body["symbol"]
        qty = float(body["qty"]) if body.get("qty") is not None else float(body["notional"]) / self.price(symbol)
        order = {
            "id": str(uuid.uuid4()),
            "client_order_id": client_id,
            "created_at": stamp,
            "updated_at": stamp,
            "submitted_at": stamp,
            "filled_at": None,
            "expired_at": None,
            "canceled_at": None,
            "failed_at": None,
            "replaced_at": None,
            "replaced_by": None,
            "replaces": None,
            "asset_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"alpaca-asset:{symbol}")),
            "symbol": symbol,
            "asset_class": "us_equity",
            "notional": _num(float(body["notional"])) if body.get("notional") is not None else None,
            "qty": _num(qty),
            "filled_qty": "0",
            "filled_avg_price": None,
            "order_class": body.get("order_class") or "simple",
            "order_type": body["type"],
            "type": body["type"],
            "side": body["side"],
            "time_in_force": body["time_in_force"],
            "limit_price": body.get("limit_price"),
            "stop_price": body.get("stop_price"),
            "status": "new",
            "extended_hours": bool(body.get("extended_hours")),
            "legs": None,
            # Alpaca answers numbers as strings (alpaca-py's Order refuses a float here)
            "trail_percent": _num(float(body["trail_percent"])) if body.get("trail_percent") is not None else None,
            "trail_price": _num(float(body["trail_price"])) if body.get("trail_price") is not None else None,
            "hwm": None,
        }
        if order["order_class"] == "oco":
            return self._oco(order, body)
        legs = []
        exit_side = "sell" if body["side"] == "buy" else "buy"
        if body.get("take_profit"):
            legs.append({**order, "id": str(uuid.uuid4()), "client_order_id": str(uuid.uuid4()), "type": "limit",
                         "order_type": "limit", "side": exit_side, "status": "held", "order_class": "simple",
                         "limit_price": body["take_profit"]["limit_price"]})  # fmt: skip
        if body.get("stop_loss"):
            legs.append({**order, "id": str(uuid.uuid4()), "client_order_id": str(uuid.uuid4()), "type": "stop",
                         "order_type": "stop", "side": exit_side, "status": "held", "order_class": "simple",
                         "stop_price": body["stop_loss"]["stop_price"]})  # fmt: skip
        order["legs"] = legs or None
        return order

    def _oco(self, order: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        """An exit pair working at once: this order is the take-profit limit, its leg the stop-loss;
        whichever fills first cancels the other (see ``_execute``)."""
        order["limit_price"] = body["take_profit"]["limit_price"]
        stop = {**order, "id": str(uuid.uuid4()), "client_order_id": str(uuid.uuid4()), "type": "stop",
                "order_type": "stop", "status": "new", "order_class": "simple", "limit_price": None,
                "stop_price": body["stop_loss"]["stop_price"], "legs": None}  # fmt: skip
        order["legs"] = [stop]
        self._oco_pairs[order["id"]], self._oco_pairs[stop["id"]] = stop["id"], order["id"]
        self._working[stop["id"]] = None
        return order

    def find(self, order_id: str) -> dict[str, Any] | None:
        with self._condition:
            order = self.orders.get(order_id)
            return dict(order) if order else None

    def find_by_client_id(self, client_id: str) -> dict[str, Any] | None:
        with self._condition:
            order_id = self.by_client_id.get(client_id)
            return dict(self.orders[order_id]) if order_id else None

    def cancel(self, order_id: str) -> None:
        with self.changing():
            order = self.orders.get(order_id)
            if order is None:
                raise OrderError(404, 40410000, "order not found")
            if order["status"] not in OPEN_STATUSES:
                raise OrderError(422, 42210000, f"order is already in {order['status']} state")
            self._close(order, "canceled", "canceled_at")
            other = self.orders.get(self._oco_pairs.get(order_id, ""))
            if other is not None and other["status"] in OPEN_STATUSES:  # an OCO is canceled as a pair
                self._close(other, "canceled", "canceled_at")

    def replace(self, order_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """PATCH /v2/orders/{id}: a new order replaces the open one (which ends as replaced)."""
        with self.changing():
            old = self.orders.get(order_id)
            if old is None or old["status"] not in OPEN_STATUSES:
                raise OrderError(422, 42210000, "order is not open")
            client_id = body.get("client_order_id") or str(uuid.uuid4())
            if client_id in self.by_client_id:
                raise OrderError(422, 40010001, "client_order_id must be unique")
            fields = {k: old[k] for k in ("symbol", "side", "type", "time_in_force", "limit_price", "stop_price")}
            fields.update({k: v for k, v in body.items() if v is not None and k != "client_order_id"})
            fields["qty"] = body.get("qty") or old["qty"]
            new = self._new_order(fields, client_id)
            new["replaces"] = old["id"]
            old["replaced_by"] = new["id"]
            self.orders[new["id"]] = new
            self.by_client_id[client_id] = new["id"]
            self._working[new["id"]] = None
            self._close(old, "replaced", "replaced_at")
            self._emit("new", new)
        return dict(new)

    # ----- the market -------------------------------------------------------------------------------

    def price(self, symbol: str) -> float:
        return self.prices.get(symbol, 100.0)

    def set_price(self, symbol: str, price: float) -> None:
        """Move the market: resting orders that the new price reaches start filling."""
        with self.changing():
            self.prices[symbol] = price

    def fill_step(self, order_id: str) -> bool:
        """Execute the next slice of an open order if the market allows; True if it is still working."""
        with self.changing():
            order = self.orders[order_id]
            if order["status"] not in OPEN_STATUSES or order["status"] == "held":
                return False
            price = self.price(order["symbol"])
            if not self._marketable(order, price):
                if order["time_in_force"] in ("ioc", "fok"):
                    self._close(order, "canceled", "canceled_at")
                    return False
                return True
            qty, done = float(order["qty"]), float(order["filled_qty"])
            slice_qty = qty - done if self.partial_fills <= 1 else min(qty - done, max(qty / self.partial_fills, 1e-9))
            if order["time_in_force"] == "fok":
                slice_qty = qty - done
            self._execute(order, slice_qty, price)
            return order["status"] in OPEN_STATUSES

    def working_ids(self) -> list[str]:
        """Orders that may still fill (the matcher's work list; ended ones are retired from it)."""
        with self._condition:
            return list(self._working)

    def retire(self, order_id: str) -> None:
        with self._condition:
            if self.orders[order_id]["status"] not in OPEN_STATUSES:
                self._working.pop(order_id, None)

    def _marketable(self, order: dict[str, Any], price: float) -> bool:
        buy = order["side"] == "buy"
        limit, stop = order.get("limit_price"), order.get("stop_price")
        if order["type"] in ("stop", "stop_limit") and stop is not None and order.get("hwm") is None:
            if (price < float(stop)) if buy else (price > float(stop)):
                return False
            order["hwm"] = _num(price)  # triggered
        if order["type"] == "trailing_stop":
            best = float(order["hwm"] or price)
            best = min(best, price) if buy else max(best, price)
            order["hwm"] = _num(best)
            if order.get("trail_price") is not None:  # a trail in dollars
                trail_price = float(order["trail_price"])
                return price >= best + trail_price if buy else price <= best - trail_price
            trail = float(order["trail_percent"] or 0) / 100
            return price >= best * (1 + trail) if buy else price <= best * (1 - trail)
        if order["type"] in ("limit", "stop_limit") and limit is not None:
            return price <= float(limit) if buy else price >= float(limit)
        return True

    def _execute(self, order: dict[str, Any], qty: float, price: float) -> None:
        done = float(order["filled_qty"])
        average = float(order["filled_avg_price"] or 0)
        total = done + qty
        order["filled_avg_price"] = _num((average * done + price * qty) / total)
        order["filled_qty"] = _num(total)
        order["updated_at"] = now_iso()
        filled = total >= float(order["qty"]) - 1e-9
        order["status"] = "filled" if filled else "partially_filled"
        if filled:
            order["filled_at"] = order["updated_at"]
        signed = qty if order["side"] == "buy" else -qty
        symbol = order["symbol"]
        before = self.positions.get(symbol, 0.0)
        self.positions[symbol] = before + signed
        closed = min(abs(signed), abs(before)) if before * signed < 0 else 0.0
        if closed:  # shrinking a position leaves its average entry price as it was, as at Alpaca
            self.cost[symbol] -= self.cost[symbol] * closed / abs(before)
        self.cost[symbol] = self.cost.get(symbol, 0.0) + (signed - (closed if signed > 0 else -closed)) * price
        self.cash -= signed * price
        execution_id = str(uuid.uuid4())
        self.activities.append(
            {
                "id": f"{order['updated_at'].replace('-', '').replace(':', '')}::{execution_id}",
                "activity_type": "FILL",
                "transaction_time": order["updated_at"],
                "type": "fill" if filled else "partial_fill",
                "price": _num(price),
                "qty": _num(qty),
                "side": order["side"],
                "symbol": symbol,
                "leaves_qty": _num(float(order["qty"]) - total),
                "order_id": order["id"],
                "cum_qty": order["filled_qty"],
                "order_status": order["status"],
            }
        )
        self._emit("fill" if filled else "partial_fill", order, execution_id=execution_id, price=price, qty=qty)
        self.prices[symbol] = round(price + self.drift, 4)
        other = self.orders.get(self._oco_pairs.get(order["id"], ""))
        if other is not None and other["status"] in OPEN_STATUSES:  # one leg of an OCO filled: the other goes
            self._close(other, "canceled", "canceled_at")
        elif filled:
            for leg in order["legs"] or []:
                leg["status"] = "new"
                self._working[leg["id"]] = None

    def expire_day_orders(self) -> int:
        """The session ends: open day orders expire."""
        with self.changing():
            day = [o for o in self.orders.values() if o["status"] in OPEN_STATUSES and o["time_in_force"] == "day"]
            for order in day:
                self._close(order, "expired", "expired_at")
        return len(day)

    def _close(self, order: dict[str, Any], status: str, stamp_field: str) -> None:
        order["status"] = status
        order[stamp_field] = order["updated_at"] = now_iso()
        self._emit(status, order)

    def _emit(self, event: str, order: dict[str, Any], **fill: Any) -> None:
        update: Update = {"event": event, "order": dict(order), "timestamp": now_iso()}
        if fill:
            update.update(fill)
            update["position_qty"] = self.positions.get(order["symbol"], 0.0)
        self.updates.append(update)
        self.publish(update)

    # ----- reads ---------------------------------------------------------------------------------------

    def list_orders(self, status: str, after: str | None, limit: int, direction: str) -> list[dict[str, Any]]:
        with self._condition:
            chosen = [
                dict(o)
                for o in self.orders.values()
                if o["status"] != "held"
                and (status == "all" or (o["status"] in OPEN_STATUSES) == (status == "open"))
                and (after is None or parse_time(o["submitted_at"]) > parse_time(after))
            ]
        chosen.sort(key=lambda o: o["submitted_at"], reverse=direction != "asc")
        return chosen[:limit]

    def position_list(self) -> list[dict[str, Any]]:
        with self._condition:
            return [self._position(symbol, qty) for symbol, qty in self.positions.items() if abs(qty) > 1e-9]

    def _position(self, symbol: str, qty: float) -> dict[str, Any]:
        price = self.price(symbol)
        average = self.cost[symbol] / qty
        return {
            "asset_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"alpaca-asset:{symbol}")),
            "symbol": symbol,
            "exchange": "NASDAQ",
            "asset_class": "us_equity",
            "avg_entry_price": _num(average),
            "qty": _num(qty),
            "qty_available": _num(qty),
            "side": "long" if qty > 0 else "short",
            "market_value": _num(qty * price),
            "cost_basis": _num(self.cost[symbol]),
            "unrealized_pl": _num(qty * (price - average)),
            "current_price": _num(price),
        }

    def fill_activities(self, after: str | None) -> list[dict[str, Any]]:
        with self._condition:
            return [
                dict(a)
                for a in self.activities
                if after is None or parse_time(a["transaction_time"]) > parse_time(after)
            ]

    def clock(self) -> dict[str, Any]:
        now = datetime.now(UTC)
        later = (now + timedelta(hours=6)).isoformat()
        return {"timestamp": now.isoformat(), "is_open": self.market_open, "next_open": later, "next_close": later}
