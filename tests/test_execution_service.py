"""The execution worker around the paper broker: events out, the account readable from Redis,
orders read from the group's position."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tradebot.broker.paper import event_id
from tradebot.common.bus import Bus
from tradebot.common.bus.wire import Delivery, decode
from tradebot.common.config import Settings
from tradebot.common.models import Order
from tradebot.common.partitions import PartitionSettings, ReaderEnd
from tradebot.common.streams import (
    EXECUTION_ROLE,
    ORDER_EVENTS,
    ORDERS_NEW,
    dead_letter_stream,
    lease_key,
    order_streams,
    partition_consumer,
)
from tradebot.execution import service
from tradebot.execution.account import read_account
from tradebot.execution.prices import PricedReader

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


# ----- positioned reads (one Redis): XREAD from the group's position, moved by the commit ---------


class DiesBeforeItsCommit(PricedReader):
    """A reader that read orders and decided them, and lost the account before its commit landed
    (as a process killed -9 there: nothing of that turn is written)."""

    async def _commit(self, batch: list[Delivery], **fields: Any) -> bool:
        if batch:
            await self.bus.redis.set(lease_key(EXECUTION_ROLE, 0), "a-newer-owner")
        return await super()._commit(batch, **fields)


def priced_reader(bus: Bus, settings: Settings, member: str, kind: type[PricedReader] = PricedReader) -> PricedReader:
    config = PartitionSettings(
        role=EXECUTION_ROLE,
        partitions=1,
        streams_for=lambda _partition: order_streams(settings.tick_partitions),
        batch_size=2,  # several batches
        block_ms=settings.bus_block_ms,
        lease_ttl_ms=settings.lease_ttl_ms,
    )
    return kind(bus, config, member, 0, service.BrokerPartition(settings), Counter(), settings.tick_partitions)


def spaced(count: int) -> list[Order]:
    """Buys two seconds apart (the risk stage denies a repeat within RISK_DUPLICATE_WINDOW_S)."""
    return [
        order(n, "buy", 100.0 + n).model_copy(update={"timestamp": NOW + timedelta(seconds=2 * n)})
        for n in range(count)
    ]


async def drain(bus: Bus, settings: Settings, member: str, kind: type[PricedReader] = PricedReader) -> ReaderEnd:
    await bus.redis.set(lease_key(EXECUTION_ROLE, 0), member)
    return await priced_reader(bus, settings, member, kind).run(asyncio.Event(), burst=True, max_messages=None)


async def test_orders_are_read_from_the_groups_position_and_nothing_is_left_pending(
    bus: Bus, settings: Settings
) -> None:
    """No entry is ever pending (Redis writes no XCLAIM per order to its AOF); the commit moves the
    group, and an owner that dies before its commit leaves its orders to the next one, each once."""
    orders = spaced(5)
    ids = await bus.publish((ORDERS_NEW, o) for o in orders[:3])
    assert await drain(bus, settings, "member-1") is ReaderEnd.DRAINED
    assert (await bus.redis.xpending(ORDERS_NEW, EXECUTION_ROLE))["pending"] == 0
    assert await bus.last_delivered_id(ORDERS_NEW, EXECUTION_ROLE) == ids[-1]
    await bus.publish((ORDERS_NEW, o) for o in orders[3:])
    assert await drain(bus, settings, "member-1", DiesBeforeItsCommit) is ReaderEnd.LOST
    assert await bus.last_delivered_id(ORDERS_NEW, EXECUTION_ROLE) == ids[-1]  # nothing of it landed
    assert (await bus.redis.xpending(ORDERS_NEW, EXECUTION_ROLE))["pending"] == 0  # though it read them
    assert await drain(bus, settings, "member-2") is ReaderEnd.DRAINED
    events = [decode(fields) for _, fields in await bus.redis.xrange(ORDER_EVENTS)]
    assert [(e.id, e.status) for e in events] == [(event_id(o.id), "filled") for o in orders]
    assert (await bus.redis.xpending(ORDERS_NEW, EXECUTION_ROLE))["pending"] == 0


async def test_orders_an_xreadgroup_reader_left_pending_are_taken_over_once(bus: Bus, settings: Settings) -> None:
    """Entries a reader of the release before (XREADGROUP) read and never committed are read again
    by the positioned reader; an invalid entry is dead-lettered once, with the group moved past it."""
    orders = spaced(4)
    await bus.publish((ORDERS_NEW, o) for o in orders[:2])
    await bus.publish_raw(ORDERS_NEW, {"v": "1", "type": "Order", "data": "{not json"})
    await bus.publish((ORDERS_NEW, o) for o in orders[2:])
    await bus.ensure_group(ORDERS_NEW, EXECUTION_ROLE)
    await bus.redis.xreadgroup(EXECUTION_ROLE, partition_consumer(0), {ORDERS_NEW: ">"}, count=3)  # then died
    assert await drain(bus, settings, "member-1") is ReaderEnd.DRAINED
    events = [decode(fields) for _, fields in await bus.redis.xrange(ORDER_EVENTS)]
    assert [(e.id, e.status) for e in events] == [(event_id(o.id), "filled") for o in orders]
    assert (await bus.redis.xpending(ORDERS_NEW, EXECUTION_ROLE))["pending"] == 0
    assert await bus.redis.xlen(dead_letter_stream(ORDERS_NEW)) == 1
    assert await drain(bus, settings, "member-1") is ReaderEnd.DRAINED  # again: nothing twice
    assert len(await bus.redis.xrange(ORDER_EVENTS)) == len(orders)
    assert await bus.redis.xlen(dead_letter_stream(ORDERS_NEW)) == 1
