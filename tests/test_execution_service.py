"""The execution worker around the paper broker: events out, the account readable from Redis."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime

import pytest

from tradebot.broker.paper import event_id
from tradebot.common.bus import Bus, decode
from tradebot.common.config import Settings
from tradebot.common.models import Order
from tradebot.common.streams import ORDER_EVENTS, ORDERS_NEW
from tradebot.execution import service
from tradebot.execution.account import read_account

NOW = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)


def order(number: int, side: str, price: float) -> Order:
    return Order(
        id=f"co-{number}",
        symbol="AAPL",
        side=side,
        quantity=10,
        reference_price=price,  # type: ignore[arg-type]
        signal_id=f"sig-{number}",
        timestamp=NOW,
    )


async def test_orders_become_events_once_and_the_account_is_readable(bus: Bus, settings: Settings) -> None:
    assert await read_account(bus.redis) is None
    orders = [order(0, "sell", 200.0), order(1, "buy", 200.0), order(2, "sell", 210.0)]
    await bus.publish((ORDERS_NEW, o) for o in [*orders, orders[1]])  # the repeat is ignored
    burst = settings.model_copy(update={"burst": True, "slippage_bps": 0.0, "commission_per_share": 0.01})
    await asyncio.wait_for(service.run(burst, stop=asyncio.Event(), counters=Counter()), timeout=60)
    events = [decode(fields) for _, fields in await bus.redis.xrange(ORDER_EVENTS)]
    assert [(e.id, e.status) for e in events] == [
        (event_id("co-0"), "denied"),  # the risk stage: nothing held to sell
        (event_id("co-1"), "filled"),
        (event_id("co-2"), "filled"),
    ]
    assert events[0].reason.startswith("no_position: ")  # type: ignore[attr-defined]
    account = await read_account(bus.redis)
    assert account is not None
    assert account["realised_pnl"] == pytest.approx(100.0 - 0.2)
    assert account["cash"] == pytest.approx(settings.starting_cash + 99.8)
    assert account["positions"]["AAPL"]["quantity"] == 0
