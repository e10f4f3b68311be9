"""Cancels and replaces at a real broker: sent once, and every doubt settled by a lookup.

A request (``OrderChange`` on ``orders.new``) is recorded in the ledger, with its
``cancel_requested`` / ``replace_requested`` event, in the commit that acks it; only then is it
sent, and only once its target is live at the broker. Its outcome arrives as news about the
target (``canceled``, ``replaced``, or an end that came first) through the ledger. A request whose
answer was lost (timeout, 5xx, dropped connection), or one a dead predecessor may have sent, is
looked up first: the replacement by its client order id, the target by its own. It is sent again
only while the target is still open with no cancel or replace pending at the broker, and never
with a doubled effect: a second DELETE of a canceled order is refused, and a second PATCH carries
the same replacement client order id, which the broker refuses too.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

from tradebot.broker.base import BrokerGateway, BrokerOrder
from tradebot.broker.ledger import Ledger, PendingChange
from tradebot.common.config import Settings
from tradebot.common.models import OrderChange, OrderEvent

log = logging.getLogger(__name__)
RESEND_AFTER_LOOKUPS = 3  # a request the target shows no trace of after this many lookups is sent again
IN_FLIGHT = ("pending_cancel", "pending_replace")


class ChangeSender:
    """Sends the ledger's pending cancels and replaces, and settles the unsure ones."""

    def __init__(self, ledger: Ledger, settings: Settings, counters: Counter[str]):
        self.ledger, self.settings, self.counters = ledger, settings, counters
        self._fresh: set[str] = set()  # recorded by this process and never sent: safe to send at once
        self._looked_at: dict[str, float] = {}

    def take(self, change: OrderChange, refusal: str | None) -> list[OrderEvent]:
        """Record a request (or refuse it with the reason); [] for one seen before."""
        events = self.ledger.add_change(change, refusal)
        if change.id in self.ledger.changes:
            self._fresh.add(change.id)
        return events

    async def send(self, gateway: BrokerGateway) -> list[OrderEvent]:
        """Send what may go now, look up what is unsure; the events that follow."""
        events: list[OrderEvent] = []
        for pending in list(self.ledger.changes.values()):
            if gateway.ready_in() > 0:
                break
            change = pending.request
            target = self.ledger.change_target(pending)
            if target is not None and (target.broker_id is None or target.phase != "live"):
                continue  # the order itself is not at the broker yet
            if change.id in self._fresh and target is not None:
                self._fresh.discard(change.id)
            elif not await self._settle(gateway, pending, events) or target is None:
                continue
            assert target.broker_id is not None
            if change.action == "cancel":
                outcome = await gateway.cancel(target.broker_id)
            else:
                outcome = await gateway.replace(target.broker_id, change, change.replacement_id)
            self.counters[f"{change.action}_{outcome.kind}"] += 1
            if outcome.kind == "accepted" and outcome.order is not None:
                events += self.ledger.replaced(pending, outcome.order)
            elif outcome.kind == "accepted":
                pending.phase = "sent"  # the broker took the cancel; the order's end is news to come
            elif outcome.kind == "rejected":
                events += await self._refused(gateway, pending, outcome.reason)
            elif outcome.kind == "throttled":
                break
            else:  # ambiguous or duplicate: it may have landed; from now on only lookups decide
                pending.phase, pending.lookups = "unsure", 0
                self._looked_at[change.id] = time.monotonic()
        return events

    async def _refused(self, gateway: BrokerGateway, pending: PendingChange, reason: str) -> list[OrderEvent]:
        """A definitive no (e.g. 422: no longer open): the target's news first, then the rejection."""
        change = pending.request
        events: list[OrderEvent] = []
        try:
            found = await gateway.lookup(change.target)
        except Exception as error:  # noqa: BLE001 - the rejection stands without the target's news
            log.warning("execution: lookup of %s failed (%s)", change.target, error)
            found = None
        if found is not None:
            events += self.ledger.observe(found)
        if change.id in self.ledger.changes:
            events += self.ledger.change_refused(pending, reason)
        return events

    async def _settle(self, gateway: BrokerGateway, pending: PendingChange, events: list[OrderEvent]) -> bool:
        """Look a request up before (re)sending it; True only if sending it now is safe and needed."""
        change = pending.request
        since = self._looked_at.setdefault(change.id, time.monotonic())
        if time.monotonic() - since < self.settings.alpaca_poll_interval_s * pending.lookups:
            return False
        self._looked_at[change.id] = time.monotonic()
        try:
            target = await self._look(gateway, pending, events)
        except Exception as error:  # noqa: BLE001 - still unsure; the next turn asks again
            log.warning("execution: lookup for %s %s failed (%s)", change.action, change.id, error)
            return False
        pending.lookups += 1
        if change.id not in self.ledger.changes or pending.phase == "sent":
            return False  # settled, or sent and its outcome is news to come
        if self.ledger.change_target(pending) is None:  # it ended replaced, but our replacement never showed
            if pending.lookups >= RESEND_AFTER_LOOKUPS:
                events += self.ledger.change_refused(pending, "the order was replaced by another request")
            return False
        if target is None or target.status in IN_FLIGHT:
            return False  # the broker is working on a cancel or replace: wait for it
        return pending.phase == "new" or pending.lookups >= RESEND_AFTER_LOOKUPS

    async def _look(
        self, gateway: BrokerGateway, pending: PendingChange, events: list[OrderEvent]
    ) -> BrokerOrder | None:
        """The replacement (if it exists, the replace happened) and the target, as the broker has them."""
        change = pending.request
        if change.action == "replace":
            placed = await gateway.lookup(change.replacement_id)
            if placed is not None:
                events += self.ledger.replaced(pending, placed)
                return None
        target = await gateway.lookup(change.target)
        if target is not None:
            events += self.ledger.observe(target)
        return target
