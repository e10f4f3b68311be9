"""Our orders and positions against the broker's, at start and every RECONCILE_INTERVAL_S.

Fills first (account activities: exact prices), then orders (cumulative fills and ends we
missed, orders we never knew: adopted as external), then positions. The first reconciliation of
a fresh ledger adopts the broker's positions as external holdings; later, a position that still
disagrees beyond RECONCILE_TOLERANCE after a second look halts new orders, with one line saying
why, until a reconciliation agrees again, and is reported (``on_mismatch``) to the risk stage,
which sets the trading state HALTED until the operator resumes. A reconciliation that fails
halts new orders too, but only until one succeeds: it is no mismatch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from tradebot.broker.base import BrokerGateway
from tradebot.broker.ledger import Ledger
from tradebot.common.config import Settings
from tradebot.common.models import OrderEvent

log = logging.getLogger(__name__)
MARGIN_S = 10.0  # reports this much older than what we look for are read too (clocks a little apart)


class Reconciler:
    def __init__(
        self,
        ledger: Ledger,
        gateway: BrokerGateway,
        settings: Settings,
        *,
        fresh: bool,
        on_mismatch: Callable[[str], None] = lambda _reason: None,
    ):
        self.ledger, self.gateway, self.settings = ledger, gateway, settings
        self.fresh = fresh
        self.on_mismatch = on_mismatch
        self.halted: str | None = None
        self._last_full = 0.0
        self._last_orders = 0.0

    def due(self, *, streaming: bool) -> bool:
        """Time for a look: polling while the stream is down, or a (re)try after a halt, or the interval."""
        now = time.monotonic()
        every = self.settings.alpaca_poll_interval_s
        if (not streaming or self.halted) and now - self._last_orders >= every:
            return True
        return self.due_full()

    def due_full(self) -> bool:
        every = self.settings.alpaca_poll_interval_s if self.halted else self.settings.reconcile_interval_s
        return time.monotonic() - self._last_full >= every

    async def run(self, *, orders_only: bool = False) -> list[OrderEvent]:
        """Events for whatever the broker knows and we had not published."""
        self._last_orders = time.monotonic()
        if not orders_only:
            self._last_full = self._last_orders
        try:
            events = await self._orders()
            if not orders_only:
                events += await self._positions()
        except Exception as error:  # noqa: BLE001 - any failure: no new orders until one succeeds
            self._halt(f"reconciliation with the broker failed ({type(error).__name__}: {error})")
            return []
        return events

    async def _orders(self) -> list[OrderEvent]:
        started = datetime.now(UTC)
        after = since(self.ledger)
        events: list[OrderEvent] = []
        if after is not None:
            for fill in await self.gateway.fills_since(after):
                events += self.ledger.observe_fill(fill)
        # Everything placed since the last look, and whatever is open however old (a resting gtc
        # order, an external one): a window that never widens with the age of an open order.
        listed = await self.gateway.orders_since(after, open_only=after is None)
        if after is not None:
            listed += await self.gateway.orders_since(None, open_only=True)
        for seen in listed:
            events += self.ledger.observe(seen)
        # Live orders of ours listed nowhere ended since the last look, out of that window: ask each.
        shown = {seen.client_order_id for seen in listed}
        for tracked in [t for t in self.ledger.orders.values() if t.phase == "live" and t.client_order_id not in shown]:
            found = await self.gateway.lookup(tracked.client_order_id)
            if found is not None:
                events += self.ledger.observe(found)
        self.ledger.reconciled_at = started.timestamp()
        return events

    async def _positions(self) -> list[OrderEvent]:
        events: list[OrderEvent] = []
        for attempt in range(2):
            theirs = await self.gateway.positions()
            if self.fresh:
                for symbol, quantity in theirs.items():
                    if abs(self.ledger.positions.get(symbol, 0.0) - quantity) > self.settings.reconcile_tolerance:
                        self.ledger.adopt_position(symbol, quantity)
                self.fresh = False
            apart = self._disagreements(theirs)
            if not apart:
                if self.halted:
                    log.warning("execution: trading resumes; the broker agrees again (was: %s)", self.halted)
                self.halted = None
                return events
            if attempt == 0:
                events += await self._orders()  # fills may have landed between the two reads
        shown = ", ".join(f"{symbol} ours {ours:g} broker {theirs:g}" for symbol, (ours, theirs) in apart.items())
        why = f"positions disagree with the broker beyond {self.settings.reconcile_tolerance:g} ({shown})"
        if why != self.halted:
            self.on_mismatch(why)
        self._halt(why)
        return events

    def _disagreements(self, theirs: dict[str, float]) -> dict[str, tuple[float, float]]:
        ours = self.ledger.positions
        symbols = {s for s in set(ours) | set(theirs) if abs(ours.get(s, 0.0)) > 0 or abs(theirs.get(s, 0.0)) > 0}
        return {
            s: (ours.get(s, 0.0), theirs.get(s, 0.0))
            for s in sorted(symbols)
            if abs(ours.get(s, 0.0) - theirs.get(s, 0.0)) > self.settings.reconcile_tolerance
        }

    def _halt(self, why: str) -> None:
        if why != self.halted:
            log.error("execution: no new orders are sent: %s", why)
        self.halted = why


def since(ledger: Ledger) -> datetime | None:
    """From when orders placed matter: the last look (None before the first: then open orders only)."""
    if ledger.reconciled_at is None:
        return None
    return datetime.fromtimestamp(ledger.reconciled_at, UTC) - timedelta(seconds=MARGIN_S)
