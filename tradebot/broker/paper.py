"""A paper broker: fills market orders at the last price with slippage and commission.

Long only: a sell beyond the position held is rejected rather than opening a short, and a buy that
costs more than the cash is rejected rather than borrowing. The average cost of a position includes
the commissions paid to open it, so realised + unrealised P&L always equals equity minus starting
cash. Idempotent on the client order id: an order seen before returns no event and changes nothing,
however late it comes back: executed ids are remembered with their order's time for
``remember_days`` days of order time (a replay or a very late redelivery is still recognised), and
an order (or change) older than that, behind the newest order seen, is rejected with the reason:
its id may have been forgotten, so it cannot be told from a duplicate.

Orders the price at their arrival does not reach rest (``accepted``) when they may (gtc, a
trailing stop, a bracket's legs; tradebot/broker/resting.py) and are judged on every later price
(``on_price``: the ticks, and the reference price of every later order of the symbol). A resting
order can be canceled or replaced (``change``, idempotent on the change's id like an order);
anything else ends at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from tradebot.broker.resting import QUANTITY_TOLERANCE, RestingBook, leg_refusal
from tradebot.common.models import (
    MAX_PRICE,
    MAX_QUANTITY,
    MIN_PRICE,
    ORDER_STATUSES,
    Order,
    OrderChange,
    OrderEvent,
    builder,
    defaults,
    id_maker,
    invalid,
)
from tradebot.common.rounding import rounded

# How long (in order time) an executed client order id is remembered. Days, not a count: a duplicate
# can come back much later (a replayed stream, an old entry reclaimed), and must still not fill.
REMEMBER_DAYS = 7.0
# the paper broker's events: every one gives these values (models.builder, its layout found once)
_EVENT_FIELDS = ("id", "symbol", "timestamp", "client_order_id", "status", "side", "quantity", "price", "commission",
                 "reason")  # fmt: skip
_event_defaults = defaults(OrderEvent)
_order_event = builder(OrderEvent, *_EVENT_FIELDS)
_fill_hash = id_maker("fill")  # event_id's hash (stable_id("fill", ...), sooner)
__all__ = ["QUANTITY_TOLERANCE", "PaperBroker", "Position", "event_id"]


@dataclass
class Position:
    """Holdings and results in one symbol."""

    quantity: float = 0.0
    average_cost: float = 0.0  # per share, opening commissions included
    realised_pnl: float = 0.0
    last_price: float | None = None  # the latest reference price seen for the symbol (the mark)

    @property
    def unrealised_pnl(self) -> float:
        """What the open quantity would gain or lose if sold at the mark (before commission)."""
        if self.last_price is None or self.quantity == 0:
            return 0.0
        return self.quantity * (self.last_price - self.average_cost)


def event_id(client_order_id: str) -> str:
    """The id of the one event that ends an order (a resting order has an ``accepted`` one before)."""
    return _fill_hash(client_order_id)


class PaperBroker(RestingBook):
    """Cash, positions and P&L of one simulated account."""

    def __init__(
        self,
        starting_cash: float,
        slippage_bps: float = 0.0,
        commission_per_share: float = 0.0,
        remember_days: float = REMEMBER_DAYS,
        not_fractionable: frozenset[str] = frozenset(),
    ):
        self.starting_cash = starting_cash
        self.not_fractionable = not_fractionable  # symbols taking whole shares only (Alpaca's asset flag)
        self.slippage_bps = slippage_bps
        self.commission_per_share = commission_per_share
        self.cash = starting_cash
        self.commissions = 0.0
        self.positions: dict[str, Position] = {}
        self.remember_s = remember_days * 86_400
        self._seen: dict[str, float] = {}  # client order id -> its order's epoch seconds, oldest first
        self._newest = 0.0
        self._oldest = 0.0  # the time of the first id in _seen (insertion order): pruning starts there
        self.resting: dict[str, Order] = {}  # orders not reached yet, oldest first (resting.py)
        self.marks: dict[str, float] = {}  # trailing stops' high-water marks

    @property
    def slippage_bps(self) -> float:
        return self._slippage_bps

    @slippage_bps.setter
    def slippage_bps(self, value: float) -> None:
        self._slippage_bps = value
        # the price factors of a buy and a sell (_slipped's, found once: the same floats)
        self._slip = {True: 1 + 1 * value / 10_000, False: 1 + -1 * value / 10_000}

    def execute(self, order: Order) -> OrderEvent | None:
        """The order's own event (:meth:`place` without the events of the legs a fill leaves)."""
        events = self.place(order)
        return events[0] if events else None

    def place(self, order: Order) -> list[OrderEvent]:
        """Fill, rest or end an order: its event, then the ``accepted`` of the legs its fill leaves
        (a bracket / OTO); [] (and no change) when this client order id was seen before."""
        fields = order.__dict__  # its values: a dict read costs a fraction of a pydantic attribute read
        client_id, symbol = fields["id"], fields["symbol"]
        if client_id in self._seen:
            return []
        at = fields["timestamp"].timestamp()
        if at < self._newest - self.remember_s:
            return [self._event(order, "rejected", reason=self._too_old(at))]
        self._remember(client_id, at)
        position = self.positions.get(symbol) or self.positions.setdefault(symbol, Position())
        position.last_price = fields["reference_price"]
        if self.not_fractionable and order.fractional and symbol in self.not_fractionable:
            why = f"{symbol} is not fractionable: only whole shares, no notional (dollar) orders"
            return [self._event(order, "rejected", reason=why)]
        legs = fields["take_profit_price"] is not None or fields["stop_loss_price"] is not None
        plain = fields["order_class"] is None and not legs and fields["order_type"] == "market"
        if (
            plain and fields["limit_price"] is None and fields["stop_price"] is None
        ):  # the usual order: filled or rejected
            if fields["notional"] is None:
                return [self._fill_shares(order, fields, position)]
            return [self._fill(order, position)]
        refused = leg_refusal(order) if legs else None
        if refused is not None:
            return [self._event(order, "rejected", reason=refused)]
        if order.order_class == "oco":
            return [self.rest_oco(order, position)]
        if order.order_type == "trailing_stop":
            return [self.rest_trailing(order)]
        unfilled = self.not_marketable(order) if order.stop_price is not None or order.limit_price is not None else None
        if unfilled is not None and order.time_in_force == "gtc" and unfilled[0] == "expired":
            return [
                self.rest(
                    order, unfilled[1].replace("paper orders do not rest", "resting until a later price reaches it")
                )
            ]
        if unfilled is not None:
            return [self._event(order, unfilled[0], reason=unfilled[1])]
        return self.filled_with_legs(order, self._fill(order, position))

    def change(self, change: OrderChange, refusal: Callable[[Order, Order], str | None]) -> list[OrderEvent]:
        """Cancel or replace a resting order; [] when this request was seen before.

        ``refusal(target, replacement)`` is the risk stage's say on a replace (None: it may go).
        """
        if change.id in self._seen:
            return []
        at = change.timestamp.timestamp()
        target = self.resting_pair_of(change.target)
        asked = "cancel_requested" if change.action == "cancel" else "replace_requested"
        events = [self._change_event(change, target, asked, change.reason)]
        rejected = "order_cancel_rejected" if change.action == "cancel" else "order_replace_rejected"
        if at < self._newest - self.remember_s:
            return [*events, self._change_event(change, target, rejected, self._too_old(at))]
        self._remember(change.id, at)
        if target is None:
            why = f"order {change.target} is not open at the paper broker (filled, ended or unknown)"
            return [*events, self._change_event(change, None, rejected, why)]
        if target.order_class == "oco" and change.action == "replace":
            why = "an oco order is not replaced: cancel it and send a new one"
            return [*events, self._change_event(change, target, rejected, why)]
        replacement, refused = None, None
        if change.action == "replace":  # priced from the latest mark, like any order arriving now
            mark = self.positions[target.symbol].last_price or target.reference_price
            try:
                replacement = change.replacement(target.model_copy(update={"reference_price": mark}))
                refused = refusal(target, replacement)
            except ValueError as error:
                refused = f"the replacement would not be a valid order: {invalid(error)}"
        if refused is not None:
            return [*events, self._change_event(change, target, rejected, refused)]
        del self.resting[target.id]
        self.marks.pop(target.id, None)
        if replacement is None:
            events.append(self._event(target, "canceled", reason=f"canceled on request {change.id}", at=change))
            if target.order_class == "oco":  # both legs go
                leg = target.model_copy(update={"id": target.stop_loss_leg_id})
                events.append(self._event(leg, "canceled", reason=f"canceled on request {change.id}", at=change))
            return events
        events.append(self._event(target, "replaced", reason=f"replaced by {replacement.id}", at=change))
        return [*events, *self.place(replacement)]

    def _change_event(self, change: OrderChange, target: Order | None, status: str, reason: str | None) -> OrderEvent:
        return OrderEvent(
            id=change.event_id(status),
            symbol=change.symbol,
            timestamp=change.timestamp,
            client_order_id=change.target,
            status=status,  # type: ignore[arg-type]
            side=target.side if target is not None else "buy",
            quantity=target.quantity if target is not None else 0.0,
            price=None,
            commission=0.0,
            reason=reason,
        )

    def _fill(self, order: Order, position: Position) -> OrderEvent:
        price = self.fill_price(order)
        if order.limit_price is not None:  # a limit never fills worse than its price
            price = min(price, order.limit_price) if order.side == "buy" else max(price, order.limit_price)
        if order.notional is not None:  # dollars: the shares they buy at the fill price
            order = order.model_copy(update={"quantity": round(order.notional / price, 9)})
        commission = order.quantity * self.commission_per_share
        reason = self.rejection(order, price, commission)
        if reason is not None:
            return self._event(order, "rejected", reason=reason)
        if order.side == "buy":
            self._buy(position, order.quantity, price, commission)
        else:
            self._sell(position, order.quantity, price, commission)
        return self._event(order, "filled", price=price, commission=commission)

    def _fill_shares(self, order: Order, fields: dict[str, Any], position: Position) -> OrderEvent:
        """:meth:`_fill` of a plain market order sized in shares (``fields``: its values), the usual
        order: the same price, checks, bookkeeping and event, without reading the order's attributes
        again; anything that would not fill goes through :meth:`_fill`, which says why."""
        buy, quantity = fields["side"] == "buy", fields["quantity"]
        price = rounded(fields["reference_price"] * self._slip[buy], 4)  # _slipped's price
        commission = quantity * self.commission_per_share
        if buy:  # rejection's conditions, reversed
            fills = quantity * price + commission <= self.cash
        else:
            fills = quantity <= position.quantity + QUANTITY_TOLERANCE
        if not (fills and MIN_PRICE <= price <= MAX_PRICE and commission >= 0 and 0 < quantity <= MAX_QUANTITY):
            return self._fill(order, position)
        if buy:
            self._buy(position, quantity, price, commission)
        else:
            self._sell(position, quantity, price, commission)
        client_id = fields["id"]
        values = _event_defaults.copy()  # every field in field order (models.builder)
        values["id"] = _fill_hash(client_id)  # event_id's, without its call
        values["symbol"] = fields["symbol"]
        values["timestamp"] = fields["timestamp"]
        values["client_order_id"] = client_id
        values["status"] = "filled"
        values["side"] = fields["side"]
        values["quantity"] = quantity
        values["price"] = price
        values["commission"] = commission
        return _order_event(values)

    def not_marketable(self, order: Order) -> tuple[str, str] | None:
        """(status, reason) for an order the reference price does not reach, else None.

        A stop not yet triggered or a limit not reached rests when gtc (see ``execute``) and
        otherwise ends at once (canceled for ioc/fok, expired otherwise).
        """
        buy, price = order.side == "buy", order.reference_price
        stop, limit = order.stop_price, order.limit_price
        if stop is not None and (price < stop if buy else price > stop):
            why = f"stop {stop:g} not triggered at the reference price {price:g}"
        elif limit is not None and (price > limit if buy else price < limit):
            why = f"limit {limit:g} not reached at the reference price {price:g}"
        else:
            return None
        status = "canceled" if order.time_in_force in ("ioc", "fok") else "expired"
        return status, f"{why}; paper orders do not rest"

    def fill_price(self, order: Order) -> float:
        """The reference price moved against the order by the slippage: buys pay more, sells get less."""
        return self._slipped(order.side == "buy", order.reference_price)

    def _slipped(self, buy: bool, reference_price: float) -> float:
        return rounded(reference_price * self._slip[buy], 4)  # buys pay more, sells get less

    def rejection(self, order: Order, price: float, commission: float) -> str | None:
        """Why the order cannot be filled, or None if it can."""
        if order.side == "buy":
            cost = order.quantity * price + commission
            if cost > self.cash:
                return (
                    f"insufficient cash: buying {order.quantity:g} {order.symbol} costs ${cost:,.2f}, "
                    f"cash is ${self.cash:,.2f}"
                )
            return None
        held = self.positions[order.symbol].quantity
        if order.quantity > held + QUANTITY_TOLERANCE:
            return (
                f"insufficient position: selling {order.quantity:g} {order.symbol} but holding {held:g} "
                "(short selling is not supported)"
            )
        return None

    def _buy(self, position: Position, quantity: float, price: float, commission: float) -> None:
        cost = quantity * price + commission
        total = position.quantity + quantity
        position.average_cost = (position.average_cost * position.quantity + cost) / total
        position.quantity = total
        self.cash -= cost
        self.commissions += commission

    def _sell(self, position: Position, quantity: float, price: float, commission: float) -> None:
        proceeds = quantity * price - commission
        position.realised_pnl += proceeds - quantity * position.average_cost
        position.quantity -= quantity
        if abs(position.quantity) <= QUANTITY_TOLERANCE:
            position.quantity, position.average_cost = 0.0, 0.0
        self.cash += proceeds
        self.commissions += commission

    def _event(
        self,
        order: Order,
        status: str,
        *,
        price: float | None = None,
        commission: float = 0.0,
        reason: str | None = None,
        event: str | None = None,
        at: OrderChange | None = None,
    ) -> OrderEvent:
        # Timestamped with the order (or the change that ended it), not the wall clock, so a
        # replay gives identical events.
        values = {
            "id": event or event_id(order.id),
            "symbol": order.symbol,
            "timestamp": at.timestamp if at is not None else order.timestamp,
            "client_order_id": order.id,
            "status": status,
            "side": order.side,
            "quantity": order.quantity,
            "price": price,
            "commission": commission,
            "reason": reason,
        }
        # The order was valid, so only the numbers worked out here need a look before the event is
        # built unvalidated (models.built); anything else goes through the model, which says why.
        priced = MIN_PRICE <= price <= MAX_PRICE if price is not None else status not in ("filled", "partially_filled")
        if priced and status in ORDER_STATUSES and commission >= 0 and 0 < order.quantity <= MAX_QUANTITY:
            return _order_event({**_event_defaults, **values})
        return OrderEvent.model_validate(values)

    def _too_old(self, at: float) -> str:
        """Why a request older than the memory of ids is refused: it may have been executed and
        forgotten, so it cannot be told from a duplicate (and filling it could be a second fill)."""
        behind = (self._newest - at) / 86_400
        return (
            f"older than the broker's memory of executed ids ({behind:.1f} days behind the newest order, "
            f"ORDER_MEMORY_DAYS={self.remember_s / 86_400:g}): it cannot be checked for a duplicate"
        )

    def _remember(self, client_order_id: str, at: float) -> None:
        seen = self._seen
        if not seen:
            self._oldest = at
        seen[client_order_id] = at
        if at > self._newest:
            self._newest = at
        horizon = self._newest - self.remember_s
        if self._oldest >= horizon:
            return  # the usual case: the first remembered is not due to be forgotten yet
        while seen:
            oldest, oldest_at = next(iter(seen.items()))
            if oldest_at >= horizon:
                self._oldest = oldest_at
                break
            del seen[oldest]

    def account(self) -> dict[str, Any]:
        """Cash, equity, P&L and positions, as JSON-ready data."""
        positions = {symbol: {**asdict(p), "unrealised_pnl": p.unrealised_pnl} for symbol, p in self.positions.items()}
        market_value = sum(p.quantity * (p.last_price or p.average_cost) for p in self.positions.values())
        return {
            "starting_cash": self.starting_cash,
            "cash": self.cash,
            "equity": self.cash + market_value,
            "realised_pnl": sum(p.realised_pnl for p in self.positions.values()),
            "unrealised_pnl": sum(p.unrealised_pnl for p in self.positions.values()),
            "commissions": self.commissions,
            "positions": positions,
        }

    def snapshot(self) -> dict[str, Any]:
        """The whole account, including the remembered order ids, as JSON-ready data."""
        return {
            "starting_cash": self.starting_cash,
            "cash": self.cash,
            "commissions": self.commissions,
            # vars, not asdict: the fields are plain floats, and asdict's deep copy per position was
            # most of what a commit's checkpoint cost with many symbols held
            "positions": {symbol: dict(vars(p)) for symbol, p in self.positions.items()},
            "seen_order_ids": dict(self._seen),
            "resting": [order.model_dump(mode="json") for order in self.resting.values()],
            "marks": dict(self.marks),
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Replace the account with a snapshot (fee settings stay as built: they apply from now on)."""
        self.starting_cash = snapshot["starting_cash"]
        self.cash = snapshot["cash"]
        self.commissions = snapshot["commissions"]
        self.positions = {symbol: Position(**saved) for symbol, saved in snapshot["positions"].items()}
        saved = snapshot["seen_order_ids"]
        # Checkpoints written before the age limit hold a bare list: keep those ids as of now.
        self._seen = dict(saved) if isinstance(saved, dict) else dict.fromkeys(saved, time.time())
        self._newest = max(self._seen.values(), default=0.0)
        self._oldest = next(iter(self._seen.values()), 0.0)
        resting = (Order.model_validate(saved) for saved in snapshot.get("resting", []))
        self.resting = {order.id: order for order in resting}
        self.marks = dict(snapshot.get("marks", {}))
