"""Our record of every order at a real broker, and the one place broker news becomes order events.

Whatever reports an order (the POST answer, a trade update, a REST poll, a fill activity, a
start-up reconciliation), the ledger compares it with what it already published and emits only
the difference: accepted once, a fill for each increase of the filled quantity (its id is the
cumulative quantity, so the same fill seen twice is one event), one terminal event. Saved in the
execution checkpoint with the events it produced, in one commit: a kill -9 repeats nothing.

Phases of an order of ours: ``new`` (recorded, maybe sent by a predecessor that died), ``unsure``
(sent, outcome unknown: look it up, never re-send blindly), ``live`` (the broker has it), ``done``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from tradebot.broker.base import BrokerFill, BrokerOrder
from tradebot.common.models import TERMINAL_STATUSES, Order, OrderEvent, stable_id

log = logging.getLogger(__name__)
EPSILON = 1e-9
BROKER_TERMINAL = {"canceled": "canceled", "expired": "expired", "rejected": "rejected", "replaced": "replaced"}


@dataclass
class Tracked:
    client_order_id: str
    symbol: str
    side: str
    quantity: float
    order: dict[str, Any] | None  # our Order as JSON (None for an external order): what to (re)submit
    phase: str = "new"
    status: str = "submitted"  # the last status published
    filled: float = 0.0
    notional: float = 0.0  # sum of quantity x price of the fills published
    broker_id: str | None = None
    external: bool = False
    lookups: int = 0
    created: float = field(default_factory=lambda: datetime.now(UTC).timestamp())


class Ledger:
    """Orders in flight and lately done, our positions, and the order events they imply."""

    def __init__(self, memory_days: float = 7.0):
        self.orders: dict[str, Tracked] = {}
        self.done: dict[str, float] = {}  # client order id -> when it ended (late news is ignored)
        self.positions: dict[str, float] = {}
        self.reconciled_at: float | None = None
        self.memory_s = memory_days * 86_400

    # ----- our orders ---------------------------------------------------------------------------

    def knows(self, client_id: str) -> bool:
        return client_id in self.orders or client_id in self.done

    def add(self, order: Order, client_id: str) -> OrderEvent | None:
        """Record an order before anything is sent; its ``submitted`` event, or None if seen before."""
        if self.knows(client_id):
            return None
        tracked = Tracked(client_id, order.symbol, order.side, order.quantity, order.model_dump(mode="json"))
        self.orders[client_id] = tracked
        return self._event(tracked, "submitted", order.quantity)

    def reject(self, client_id: str, reason: str) -> list[OrderEvent]:
        tracked = self.orders[client_id]
        return self._finish(tracked, "rejected", reason=reason)

    def waiting(self) -> list[Tracked]:
        """Orders of ours the broker has not confirmed yet, oldest first."""
        return [t for t in self.orders.values() if t.phase in ("new", "unsure")]

    def by_broker_id(self, broker_id: str) -> Tracked | None:
        return next((t for t in self.orders.values() if t.broker_id == broker_id), None)

    # ----- news from the broker ---------------------------------------------------------------

    def observe(self, seen: BrokerOrder, fill: BrokerFill | None = None) -> list[OrderEvent]:
        """Everything ``seen`` tells us that we have not published yet."""
        if seen.client_order_id in self.done:
            return []
        tracked = self.orders.get(seen.client_order_id)
        if tracked is None:
            tracked = self._adopt(seen)
        if not tracked.external and seen.submitted_at.timestamp() < tracked.created - self.memory_s:
            # Republished after we forgot it: the broker kept its id (422) and its life is long told.
            log.warning("execution: %s was placed at the broker on %s; not told again", tracked.client_order_id,
                        seen.submitted_at.isoformat())  # fmt: skip
            tracked.phase, tracked.status = "done", "filled"
            self._forget_later(tracked)
            return []
        events: list[OrderEvent] = []
        tracked.broker_id = seen.broker_id
        if tracked.phase in ("new", "unsure"):
            tracked.phase = "live"
        if tracked.status == "submitted" and seen.status != "rejected":
            tracked.status = "accepted"
            events.append(self._event(tracked, "accepted", tracked.quantity))
        events += self._fills(tracked, seen.filled_quantity, seen.average_price, fill)
        terminal = BROKER_TERMINAL.get(seen.status)
        if terminal and tracked.status not in TERMINAL_STATUSES:
            events += self._finish(tracked, terminal, reason=f"broker: {seen.status}")
        return events

    def observe_fill(self, fill: BrokerFill) -> list[OrderEvent]:
        """A fill activity: new only if it raises the order's filled quantity."""
        tracked = self.by_broker_id(fill.broker_id)
        if tracked is None or fill.cumulative <= tracked.filled + EPSILON:
            return []
        delta = fill.cumulative - tracked.filled
        price = fill.price if abs(delta - fill.quantity) < EPSILON else None
        average = (tracked.notional + delta * fill.price) / fill.cumulative if price is None else None
        return self._fills(tracked, fill.cumulative, average, fill if price is not None else None)

    def _fills(
        self, tracked: Tracked, cumulative: float, average: float | None, fill: BrokerFill | None
    ) -> list[OrderEvent]:
        delta = cumulative - tracked.filled
        if delta <= EPSILON or tracked.status in TERMINAL_STATUSES:
            return []
        if fill is not None and abs(fill.cumulative - cumulative) < EPSILON and abs(fill.quantity - delta) < EPSILON:
            price = fill.price  # exactly this execution
        elif average is not None:
            price = (average * cumulative - tracked.notional) / delta  # what the missed executions averaged
        else:
            return []  # a fill without a price: wait for the next report
        tracked.filled, tracked.notional = cumulative, tracked.notional + delta * price
        signed = delta if tracked.side == "buy" else -delta
        self.positions[tracked.symbol] = self.positions.get(tracked.symbol, 0.0) + signed
        whole = cumulative >= tracked.quantity - EPSILON
        status = "filled" if whole else "partially_filled"
        if whole:
            tracked.status, tracked.phase = "filled", "done"
            self._forget_later(tracked)
        else:
            tracked.status = status
        return [self._event(tracked, status, delta, price=round(price, 6))]

    def _adopt(self, seen: BrokerOrder) -> Tracked:
        log.warning(
            "reconcile: adopting external order %s (%s %g %s, %s at the broker)",
            seen.client_order_id,
            seen.side,
            seen.quantity,
            seen.symbol,
            seen.status,
        )
        tracked = Tracked(seen.client_order_id, seen.symbol, seen.side, seen.quantity, None, external=True)
        self.orders[seen.client_order_id] = tracked
        return tracked

    def adopt_position(self, symbol: str, quantity: float) -> None:
        log.warning("reconcile: adopting external position %g %s held at the broker", quantity, symbol)
        self.positions[symbol] = quantity

    # ----- events, ends, and the checkpoint -----------------------------------------------------

    def _finish(self, tracked: Tracked, status: str, *, reason: str) -> list[OrderEvent]:
        tracked.status, tracked.phase = status, "done"
        self._forget_later(tracked)
        return [self._event(tracked, status, tracked.quantity, reason=reason)]

    def _forget_later(self, tracked: Tracked) -> None:
        now = datetime.now(UTC).timestamp()
        self.done[tracked.client_order_id] = now
        del self.orders[tracked.client_order_id]
        for client_id, ended in list(self.done.items()):
            if ended >= now - self.memory_s:
                break
            del self.done[client_id]

    def _event(self, tracked: Tracked, status: str, quantity: float, *, price: float | None = None,
               reason: str | None = None) -> OrderEvent:  # fmt: skip
        return OrderEvent(
            id=stable_id("order-event", tracked.client_order_id, status, f"{tracked.filled:.9g}"),
            symbol=tracked.symbol,
            timestamp=datetime.now(UTC),
            client_order_id=tracked.client_order_id,
            status=status,  # type: ignore[arg-type]
            side=tracked.side,  # type: ignore[arg-type]
            quantity=quantity,
            price=price,
            commission=0.0,
            reason=reason,
            broker_order_id=tracked.broker_id,
            filled_quantity=tracked.filled,
        )

    def snapshot(self) -> dict[str, Any]:
        return {
            "orders": [asdict(t) for t in self.orders.values()],
            "done": self.done,
            "positions": self.positions,
            "reconciled_at": self.reconciled_at,
        }

    def restore(self, saved: dict[str, Any] | None) -> None:
        saved = saved or {}
        self.orders = {t["client_order_id"]: Tracked(**t) for t in saved.get("orders", [])}
        self.done = dict(saved.get("done", {}))
        self.positions = dict(saved.get("positions", {}))
        self.reconciled_at = saved.get("reconciled_at")
