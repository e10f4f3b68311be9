"""A flatten at a real broker: cancel every open order, then close every position, each exactly once.

The flatten's control event arrives on ``orders.new`` (tradebot/risk/control.py), between the
orders before and after it. In the commit that acks it, it is recorded here and a cancel of every
order open at that point (ours and external ones) is recorded in the ledger; the cancels go out
like any ``OrderChange`` (tradebot/broker/changes.py: sent once, every doubt settled by lookup).
Once none of them is pending any more (each target ended, or the broker refused), the broker's
positions are read and one sell per position is recorded, in one commit that also marks the
flatten done; only then are they sent, like any order (recorded first, looked up after a doubt).

Every id derives from the flatten's: a cancel's from the flatten and its target, a close's from
the flatten and the symbol (the paper path's scheme). So a redelivered flatten, or one a process
killed with -9 had begun, records nothing twice, and the broker refuses a close's client order id
it has seen. Closing waits for the cancels, so an open buy that fills meanwhile is closed too, and
the closes never sell what an open order still holds back.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from tradebot.broker.ledger import Ledger
from tradebot.common.models import TERMINAL_STATUSES, ControlEvent, OrderChange, stable_id

REMEMBERED = 100  # flattens done, kept so a late redelivery is recognised


def cancel_id(flatten: ControlEvent, client_order_id: str) -> str:
    return f"cx-{stable_id('flatten-cancel', flatten.id, client_order_id)}"


class Flattens:
    """The flattens begun and not done (their cancels pending), and the last ones done."""

    def __init__(self) -> None:
        self.pending: dict[str, dict[str, Any]] = {}  # flatten id -> its control event (JSON) and cancel ids
        self.done: deque[str] = deque(maxlen=REMEMBERED)

    def begin(self, flatten: ControlEvent, ledger: Ledger) -> list[OrderChange]:
        """Record a flatten; the cancels of every open order ([] if this flatten was seen before)."""
        if flatten.id in self.pending or flatten.id in self.done:
            return []
        cancels = [
            OrderChange(
                id=cancel_id(flatten, tracked.client_order_id),
                symbol=tracked.symbol,
                timestamp=flatten.timestamp,
                action="cancel",
                target=tracked.client_order_id,
                reason=f"flatten {flatten.id}: {flatten.reason}",
            )
            for tracked in ledger.orders.values()
            if tracked.status not in TERMINAL_STATUSES
        ]
        self.pending[flatten.id] = {
            "event": flatten.model_dump(mode="json"),
            "cancels": [cancel.id for cancel in cancels],
        }
        return cancels

    def ready(self, ledger: Ledger) -> list[ControlEvent]:
        """The flattens whose cancels have all settled: time to close their positions."""
        return [
            ControlEvent.model_validate(begun["event"])
            for begun in self.pending.values()
            if not any(cancel in ledger.changes for cancel in begun["cancels"])
        ]

    def finish(self, flatten: ControlEvent) -> None:
        """Its closes are recorded (in the same commit as this)."""
        self.pending.pop(flatten.id, None)
        self.done.append(flatten.id)

    def snapshot(self) -> dict[str, Any]:
        return {"pending": self.pending, "done": list(self.done)}

    def restore(self, saved: dict[str, Any] | None) -> None:
        saved = saved or {}
        self.pending = dict(saved.get("pending", {}))
        self.done = deque(saved.get("done", []), maxlen=REMEMBERED)
