"""Our record of every order at a real broker, and the one place broker news becomes order events.

Whatever reports an order (the POST answer, a trade update, a REST poll, a fill activity, a
start-up reconciliation), the ledger compares it with what it already published and emits only
the difference: accepted once, a fill for each increase of the filled quantity (its id is the
cumulative quantity, so the same fill seen twice is one event), one terminal event. Saved in the
execution checkpoint with the events it produced, in one commit: a kill -9 repeats nothing.

Phases of an order of ours: ``new`` (recorded, maybe sent by a predecessor that died), ``unsure``
(sent, outcome unknown: look it up, never re-send blindly), ``live`` (the broker has it), ``done``.

A cancel or replace (``OrderChange``) is recorded the same way, with the same phases plus ``sent``
(the broker took the request; its outcome comes as news about the target): ``cancel_requested`` /
``replace_requested`` when recorded, then the target's ``canceled`` / ``replaced`` (and the
replacement's own life, under the change's ``replacement_id``), or ``order_cancel_rejected`` /
``order_replace_rejected`` when the target ended otherwise or the broker refused.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from tradebot.broker.base import Booking, BrokerFill, BrokerOrder
from tradebot.common.models import TERMINAL_STATUSES, Order, OrderChange, OrderEvent, stable_id

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


@dataclass
class PendingChange:
    change: dict[str, Any]  # the OrderChange as JSON
    replacement: dict[str, Any] | None = None  # the Order a replace creates, as JSON
    phase: str = "new"
    lookups: int = 0

    @property
    def request(self) -> OrderChange:
        return OrderChange.model_validate(self.change)


class Ledger:
    """Orders in flight and lately done, our positions, and the order events they imply."""

    def __init__(self, memory_days: float = 7.0):
        self.changes: dict[str, PendingChange] = {}  # change id -> a cancel or replace not settled yet
        self.orders: dict[str, Tracked] = {}
        self.done: dict[str, float] = {}  # client order id -> when it ended (late news is ignored)
        self.positions: dict[str, float] = {}
        self.reconciled_at: float | None = None
        self.memory_s = memory_days * 86_400
        self.bookings: list[Booking] = []  # fills published since the last take_bookings (not checkpointed)

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

    # ----- cancels and replaces ---------------------------------------------------------------

    def add_change(self, change: OrderChange, refusal: str | None = None) -> list[OrderEvent]:
        """Record a cancel or replace before anything is sent; [] if seen before.

        Its ``…_requested`` event, and at once its rejection when the target is not open or
        ``refusal`` (the risk stage's) says no.
        """
        if change.id in self.changes or change.id in self.done:
            return []
        target = self.orders.get(change.target)
        events = [self._change_event(change, target, f"{change.action}_requested", change.reason)]
        if target is None:
            refusal = f"order {change.target} is not open (filled, ended or unknown)"
        elif change.action == "replace" and target.order is None:
            refusal = f"order {change.target} was placed outside tradebot; only a cancel can change it"
        elif change.action == "replace" and (target.order or {}).get("order_class") == "oco":
            refusal = "an oco order is not replaced: cancel it and send a new one"
        if refusal is not None:
            self._forget_change_later(change.id)
            return [*events, self._change_event(change, target, f"order_{change.action}_rejected", refusal)]
        replacement = None
        if change.action == "replace":
            assert target is not None
            assert target.order is not None
            replacement = change.replacement(Order.model_validate(target.order)).model_dump(mode="json")
        self.changes[change.id] = PendingChange(change.model_dump(mode="json"), replacement)
        return events

    def change_target(self, pending: PendingChange) -> Tracked | None:
        return self.orders.get(pending.request.target)

    def change_refused(self, pending: PendingChange, reason: str) -> list[OrderEvent]:
        """The broker refused the request definitively: the target goes on as it was."""
        change = pending.request
        del self.changes[change.id]
        self._forget_change_later(change.id)
        return [self._change_event(change, self.orders.get(change.target), f"order_{change.action}_rejected", reason)]

    def replaced(self, pending: PendingChange, placed: BrokerOrder) -> list[OrderEvent]:
        """The broker placed the replacement: the target ends replaced, the replacement is ours."""
        target = self.change_target(pending)
        events = self.observe(placed)  # claims the replacement (its submitted, accepted)
        if target is not None and target.status not in TERMINAL_STATUSES:
            events += self._finish(target, "replaced", reason=f"replaced by {placed.client_order_id}")
        return events

    def _claim_replacement(self, client_id: str) -> tuple[Tracked, list[OrderEvent]] | None:
        """The replacement a pending replace asked for, now seen at the broker: ours, not external."""
        for change_id, pending in list(self.changes.items()):
            if pending.replacement is None or pending.replacement["id"] != client_id:
                continue
            del self.changes[change_id]
            self._forget_change_later(change_id)
            order = Order.model_validate(pending.replacement)
            submitted = self.add(order, client_id)
            return self.orders[client_id], [] if submitted is None else [submitted]
        return None

    def _settle_changes(self, tracked: Tracked) -> list[OrderEvent]:
        """The target ended: a cancel it ended by is settled; any other request was too late."""
        events = []
        for change_id, pending in list(self.changes.items()):
            change = pending.request
            if change.target != tracked.client_order_id:
                continue
            if change.action == "replace" and tracked.status == "replaced":
                continue  # settled when the replacement shows up (or the PATCH answer came)
            del self.changes[change_id]
            self._forget_change_later(change_id)
            if not (change.action == "cancel" and tracked.status == "canceled"):
                why = f"the order ended {tracked.status} before the {change.action} took effect"
                events.append(self._change_event(change, tracked, f"order_{change.action}_rejected", why))
        return events

    def _change_event(self, change: OrderChange, target: Tracked | None, status: str, reason: str | None) -> OrderEvent:
        return OrderEvent(
            id=change.event_id(status),
            symbol=change.symbol,
            timestamp=datetime.now(UTC),
            client_order_id=change.target,
            status=status,  # type: ignore[arg-type]
            side=target.side if target is not None else "buy",  # type: ignore[arg-type]
            quantity=target.quantity if target is not None else 0.0,
            price=None,
            commission=0.0,
            reason=reason,
            broker_order_id=target.broker_id if target is not None else None,
            filled_quantity=target.filled if target is not None else None,
        )

    def _forget_change_later(self, change_id: str) -> None:
        self.done[change_id] = datetime.now(UTC).timestamp()

    # ----- news from the broker ---------------------------------------------------------------

    def observe(self, seen: BrokerOrder, fill: BrokerFill | None = None) -> list[OrderEvent]:
        """Everything ``seen`` tells us that we have not published yet."""
        if seen.client_order_id in self.done:
            return []
        events: list[OrderEvent] = []
        tracked = self.orders.get(seen.client_order_id)
        claimed = self._claim_replacement(seen.client_order_id) if tracked is None else None
        if claimed is not None:
            tracked, events = claimed
        elif tracked is None:
            tracked = self._adopt(seen)
        if not tracked.external and seen.submitted_at.timestamp() < tracked.created - self.memory_s:
            # Republished after we forgot it: the broker kept its id (422) and its life is long told.
            log.warning("execution: %s was placed at the broker on %s; not told again", tracked.client_order_id,
                        seen.submitted_at.isoformat())  # fmt: skip
            tracked.phase, tracked.status = "done", "filled"
            self._forget_later(tracked)
            return []
        tracked.broker_id = seen.broker_id
        if tracked.phase in ("new", "unsure"):
            tracked.phase = "live"
        if tracked.status == "submitted" and seen.status != "rejected":
            tracked.status = "accepted"
            events.append(self._event(tracked, "accepted", tracked.quantity))
        # A notional (dollar) order's shares are known only as it fills: it is whole when the broker says filled.
        whole = seen.status == "filled" if tracked.order and tracked.order.get("notional") else None
        if whole:
            tracked.quantity = seen.filled_quantity
        events += self._fills(tracked, seen.filled_quantity, seen.average_price, fill, whole)
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
        self,
        tracked: Tracked,
        cumulative: float,
        average: float | None,
        fill: BrokerFill | None,
        done: bool | None = None,
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
        whole = cumulative >= tracked.quantity - EPSILON if done is None else done
        status = "filled" if whole else "partially_filled"
        self._book(tracked, delta, price, ends=whole)
        if whole:
            tracked.status, tracked.phase = "filled", "done"
            self._forget_later(tracked)
        else:
            tracked.status = status
        return [self._event(tracked, status, delta, price=round(price, 6)), *self._settle_changes(tracked)]

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

    def _book(self, tracked: Tracked, quantity: float, price: float, *, ends: bool) -> None:
        strategy = (tracked.order or {}).get("strategy")
        fill = Booking(tracked.client_order_id, strategy, tracked.symbol, tracked.side, quantity, price, ends)
        self.bookings.append(fill)

    def take_bookings(self) -> list[Booking]:
        """The fills published since the last call (the account books them in the same commit)."""
        taken, self.bookings = self.bookings, []
        return taken

    def _finish(self, tracked: Tracked, status: str, *, reason: str) -> list[OrderEvent]:
        if tracked.filled > EPSILON:  # partly filled, then ended otherwise: its fills are all booked
            self._book(tracked, 0.0, 0.0, ends=True)
        tracked.status, tracked.phase = status, "done"
        self._forget_later(tracked)
        return [self._event(tracked, status, tracked.quantity, reason=reason), *self._settle_changes(tracked)]

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
            "changes": [asdict(c) for c in self.changes.values()],
            "orders": [asdict(t) for t in self.orders.values()],
            "done": self.done,
            "positions": self.positions,
            "reconciled_at": self.reconciled_at,
        }

    def restore(self, saved: dict[str, Any] | None) -> None:
        saved = saved or {}
        self.orders = {t["client_order_id"]: Tracked(**t) for t in saved.get("orders", [])}
        self.changes = {c["change"]["id"]: PendingChange(**c) for c in saved.get("changes", [])}
        self.done = dict(saved.get("done", {}))
        self.positions = dict(saved.get("positions", {}))
        self.reconciled_at = saved.get("reconciled_at")
