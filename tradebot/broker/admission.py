"""What the broker itself would refuse, checked before an order is sent: the session, fractions, an OCO.

An order refused here ends ``rejected`` with the reason, before anything reaches the broker: one
that needs the session while the broker's clock says the market is closed (not gtc/opg/cls, not
extended hours; the clock is asked again at its next open or close), a fractional or notional
order of an asset that is not fractionable (asked once per symbol), an OCO exit pair for more than
the position held.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from tradebot.broker.base import BrokerGateway, MarketClock
from tradebot.broker.ledger import Ledger
from tradebot.common.models import Order

log = logging.getLogger(__name__)
ANYTIME = ("gtc", "opg", "cls")


class Admission:
    """The broker-side refusals of the broker loop (tradebot/broker/worker.py)."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger
        self.clock: MarketClock | None = None

    async def refusal(self, order: Order, gateway: BrokerGateway) -> str | None:
        """Why the order cannot be sent now, or None."""
        return (
            await self._outside_session(order, gateway)
            or await self._not_fractionable(order, gateway)
            or self._oco_without_position(order)
        )

    async def _not_fractionable(self, order: Order, gateway: BrokerGateway) -> str | None:
        """Why a fractional or notional order cannot go (the asset's flag), or None."""
        if not order.fractional:
            return None
        try:
            if await gateway.fractionable(order.symbol):
                return None
        except Exception as error:  # noqa: BLE001 - without the asset's flag no fractional order is sent
            log.warning("execution: asset %s unavailable (%s)", order.symbol, error)
            return f"asset {order.symbol} unavailable: the broker did not answer GET /v2/assets/{order.symbol}"
        return f"{order.symbol} is not fractionable at the broker: only whole shares, no notional (dollar) orders"

    def _oco_without_position(self, order: Order) -> str | None:
        held = self.ledger.positions.get(order.symbol, 0.0)
        if order.order_class != "oco" or order.quantity <= held + 1e-9:
            return None
        return f"an oco order exits a position held: selling {order.quantity:g} {order.symbol} but holding {held:g}"

    async def _outside_session(self, order: Order, gateway: BrokerGateway) -> str | None:
        now = datetime.now(UTC)
        if self.clock is None or now >= min(self.clock.next_open, self.clock.next_close):
            try:
                self.clock = await gateway.clock()
            except Exception as error:  # noqa: BLE001 - without the broker's clock no order is sent
                log.warning("execution: market clock unavailable (%s)", error)
                return "market clock unavailable: the broker did not answer GET /v2/clock"
        if self.clock.is_open or order.time_in_force in ANYTIME or order.extended_hours:
            return None
        return f"market closed (next open {self.clock.next_open.isoformat()}); only gtc/opg/cls or extended hours"
