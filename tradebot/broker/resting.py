"""The paper broker's resting orders, judged on every price after them.

A resting order is one the price at its arrival did not reach: a gtc limit, stop or stop-limit,
a trailing stop (any time in force but ioc/fok: it cannot trigger at once), an OCO exit pair,
and the exit legs a bracket or OTO entry leaves once it filled. ``on_price(symbol, price, at)``
judges them against one later price, the same call from the execution worker (the ticks of
``price.ticks:{p}``, tradebot/execution/prices.py) and from the backtester's tick loop, so both
fill them alike:

- **limit** fills at a price at or better than its limit (never worse than the limit);
- **stop** triggers at a price at or beyond its stop and fills there (a gap fills worse);
- **stop-limit** triggers like a stop and is from then on a limit at its limit price;
- **trailing stop**: the high-water mark (a sell's highest price since the order, a buy's
  lowest; kept in the checkpoint) sets the stop at ``mark - trail_price`` or
  ``mark × (1 - trail_percent/100)`` (a buy: plus); a price at or beyond it fills;
- **bracket** (take-profit and stop-loss) and **OTO** (one of them): the entry is judged as its
  own type; once it filled, its legs rest as sells of the quantity filled, ``<id>-tp`` (a limit
  at the take-profit) and ``<id>-sl`` (a stop at the stop-loss), each ``accepted``; a bracket's
  two are an OCO pair (the first to fill cancels the other);
- **OCO**: at or above the take-profit the order fills and its stop-loss leg ends ``canceled``;
  at or below the stop-loss the leg fills and the order ends ``canceled``.

Only a price stamped no earlier than the order counts (a price of the order's own instant comes
before it in both paths, see docs/BROKERS.md), and judging the same price twice changes nothing,
so a restart that reads a price again fills nothing twice.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from tradebot.common.models import Order, OrderChange, OrderEvent, stable_id

if TYPE_CHECKING:
    from tradebot.broker.paper import Position

QUANTITY_TOLERANCE = 1e-9


def accepted_id(client_order_id: str) -> str:
    """The id of the ``accepted`` event of an order that rests."""
    return stable_id("paper-accepted", client_order_id)


def trailing_stop_price(order: Order, mark: float) -> float:
    """Where a trailing stop stands when its high-water mark (a buy's: low-water) is ``mark``."""
    sell = order.side == "sell"
    if order.trail_price is not None:
        stop = mark - order.trail_price if sell else mark + order.trail_price
    else:
        assert order.trail_percent is not None
        stop = mark * (1 - order.trail_percent / 100) if sell else mark * (1 + order.trail_percent / 100)
    return round(stop, 6)


def stop_reached(order: Order, price: float) -> bool:
    """A stop (or a stop-limit's stop) triggers at its stop price or beyond it."""
    assert order.stop_price is not None
    return price >= order.stop_price if order.side == "buy" else price <= order.stop_price


def legs_of(entry: Order, filled: OrderEvent) -> list[Order]:
    """The exit legs a filled bracket / OTO entry leaves: ``<id>-tp`` (an OCO pair in a bracket), or ``<id>-sl``."""
    tp, sl = entry.take_profit_price, entry.stop_loss_price
    assert filled.price is not None
    common = {
        "symbol": entry.symbol,
        "side": "sell",
        "quantity": filled.quantity,
        "reference_price": filled.price,
        "signal_id": entry.signal_id,
        "timestamp": filled.timestamp,
        "strategy": entry.strategy,
        "time_in_force": "gtc",
    }
    if tp is not None and sl is not None:
        pair = {"order_class": "oco", "take_profit_price": tp, "stop_loss_price": sl}
        return [Order(id=f"{entry.id}-tp", order_type="limit", limit_price=tp, **pair, **common)]  # type: ignore[arg-type]
    if tp is not None:
        return [Order(id=f"{entry.id}-tp", order_type="limit", limit_price=tp, **common)]  # type: ignore[arg-type]
    return [Order(id=f"{entry.id}-sl", order_type="stop", stop_price=sl, **common)]  # type: ignore[arg-type]


def leg_refusal(order: Order) -> str | None:
    """Why a bracket / OTO entry cannot be taken by the paper broker (long only), or None."""
    if order.order_class == "oco" or (order.take_profit_price is None and order.stop_loss_price is None):
        return None
    if order.side != "buy":
        return "a bracket or oto entry is a buy here (long only: its legs sell what it bought)"
    tp, sl = order.take_profit_price, order.stop_loss_price
    if tp is not None and sl is not None and tp <= sl:
        return f"a bracket's take-profit {tp:g} must be above its stop-loss {sl:g}"
    return None


class RestingBook:
    """The resting half of :class:`~tradebot.broker.paper.PaperBroker` (a mixin: it fills through the broker)."""

    resting: dict[str, Order]  # client order id -> order, oldest first
    marks: dict[str, float]  # a trailing stop's client order id -> its high-water (a buy's low-water) mark
    positions: dict[str, Position]

    if TYPE_CHECKING:  # the broker's own, as paper.py defines them

        def _fill(self, order: Order, position: Position) -> OrderEvent: ...

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
        ) -> OrderEvent: ...

    def rest(self, order: Order, why: str) -> OrderEvent:
        """Keep ``order`` until a later price reaches it (a triggered stop-limit rests as its limit)."""
        if order.order_type == "stop_limit" and stop_reached(order, order.reference_price):
            order = order.model_copy(update={"order_type": "limit", "stop_price": None})
        if order.order_type == "trailing_stop":
            self.marks[order.id] = order.reference_price
        self.resting[order.id] = order
        return self._event(order, "accepted", reason=why, event=accepted_id(order.id))

    def rest_trailing(self, order: Order) -> OrderEvent:
        """A trailing stop cannot trigger at its own price: it rests (ioc/fok: canceled)."""
        stop = trailing_stop_price(order, order.reference_price)
        if order.time_in_force in ("ioc", "fok"):
            return self._event(
                order, "canceled", reason=f"trailing stop {stop:g} not triggered at once ({order.time_in_force})"
            )
        trail = f"${order.trail_price:g}" if order.trail_price is not None else f"{order.trail_percent:g}%"
        return self.rest(order, f"trailing stop {trail} from {order.reference_price:g} (stop {stop:g}) resting")

    def filled_with_legs(self, order: Order, filled: OrderEvent) -> list[OrderEvent]:
        """A fill, and the ``accepted`` of the legs it leaves when it is a bracket / OTO entry."""
        if filled.status != "filled" or order.order_class == "oco" or filled.client_order_id != order.id:
            return [filled]
        if order.take_profit_price is None and order.stop_loss_price is None:
            return [filled]
        events = [filled]
        for leg in legs_of(order, filled):
            self.resting[leg.id] = leg
            kind = "bracket" if leg.order_class == "oco" else "oto"
            events.append(self._event(leg, "accepted", reason=f"{kind} leg of {order.id}", event=accepted_id(leg.id)))
            if leg.order_class == "oco":
                why = f"bracket leg of {order.id}: stop-loss stop {leg.stop_loss_price:g}"
                sl = leg.model_copy(update={"id": leg.stop_loss_leg_id, "order_type": "stop", "limit_price": None})
                events.append(self._event(sl, "accepted", reason=why, event=accepted_id(sl.id)))
        return events

    def on_price(self, symbol: str, price: float, at: datetime) -> list[OrderEvent]:
        """Judge the resting orders of ``symbol`` at a traded price stamped ``at`` (a tick; it counts
        for the orders stamped no later than it); the events of what it fills or ends."""
        return self.fill_resting(symbol, price, at, since=at)

    def fill_resting(self, symbol: str, price: float, at: datetime, since: datetime | None = None) -> list[OrderEvent]:
        """Judge the resting orders of ``symbol`` (those stamped no later than ``since``, if given) at
        ``price``: what ``on_price`` does for a tick, and, without ``since``, for the reference price
        of an order arriving (later than every resting order, whatever its stamp)."""
        events: list[OrderEvent] = []
        for client_id, order in list(self.resting.items()):
            if order.symbol != symbol or (since is not None and since < order.timestamp):
                continue
            if client_id not in self.resting:  # an OCO pair resolved a moment ago
                continue
            judged = self._judge(order, price, at)
            if judged:
                self.positions[symbol].last_price = price  # the mark moves with what traded
            events += judged
        return events

    def _judge(self, order: Order, price: float, at: datetime) -> list[OrderEvent]:
        # Plain comparisons first: most prices reach nothing, and an order is copied only to fill.
        if order.order_class == "oco":
            assert order.take_profit_price is not None
            assert order.stop_loss_price is not None
            if order.stop_loss_price < price < order.take_profit_price:
                return []
            return self._resolve_oco(order.model_copy(update={"reference_price": price, "timestamp": at}))
        if order.order_type == "trailing_stop":
            kept = self.marks.get(order.id, order.reference_price)
            mark = max(kept, price) if order.side == "sell" else min(kept, price)
            self.marks[order.id] = mark
            stop = trailing_stop_price(order, mark)
            if (price > stop) if order.side == "sell" else (price < stop):
                return []
            del self.resting[order.id], self.marks[order.id]
            now = order.model_copy(update={"reference_price": price, "timestamp": at})
            return [self._fill(now, self.positions[order.symbol])]
        if order.order_type == "stop_limit" and stop_reached(order, price):  # a limit from now on
            order = self.resting[order.id] = order.model_copy(update={"order_type": "limit", "stop_price": None})
        elif order.stop_price is not None and not stop_reached(order, price):
            return []
        if order.limit_price is not None and (
            price > order.limit_price if order.side == "buy" else price < order.limit_price
        ):
            return []
        del self.resting[order.id]
        now = order.model_copy(update={"reference_price": price, "timestamp": at})
        return self.filled_with_legs(now, self._fill(now, self.positions[order.symbol]))

    def rest_oco(self, order: Order, position: Position) -> OrderEvent:
        """An OCO exits a position held: it rests (both legs) and is judged like any resting order."""
        if order.quantity > position.quantity + QUANTITY_TOLERANCE:
            why = (f"an oco order exits a position held: selling {order.quantity:g} {order.symbol} but holding "
                   f"{position.quantity:g}")  # fmt: skip
            return self._event(order, "rejected", reason=why)
        why = f"oco: take-profit limit {order.take_profit_price:g} and stop-loss stop {order.stop_loss_price:g} resting"
        return self.rest(order, why)

    def _resolve_oco(self, now: Order) -> list[OrderEvent]:
        """The leg ``now.reference_price`` reached fills and the other is canceled."""
        assert now.take_profit_price is not None
        price = now.reference_price
        del self.resting[now.id]
        position = self.positions[now.symbol]
        leg = now.model_copy(update={"id": now.stop_loss_leg_id, "order_type": "market", "limit_price": None})
        if price >= now.take_profit_price:  # this order is the take-profit limit
            why = f"oco: the take-profit filled first ({now.id})"
            return [self._fill(now, position), self._event(leg, "canceled", reason=why)]
        why = f"oco: the stop-loss {leg.id} triggered at {price:g} first"
        return [self._fill(leg, position), self._event(now, "canceled", reason=why)]

    def resting_pair_of(self, client_order_id: str) -> Order | None:
        """The resting order ``client_order_id`` names: itself, or the OCO pair whose stop-loss leg it is."""
        if client_order_id in self.resting:
            return self.resting[client_order_id]
        return next(
            (o for o in self.resting.values() if o.order_class == "oco" and o.stop_loss_leg_id == client_order_id),
            None,
        )
