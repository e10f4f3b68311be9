"""The paper execution judges its resting orders on the ticks of price.ticks:{p} (real Redis):
only ticks the strategy role has finished with, read from a position committed with the fills
they cause, so a worker that read a price and died before its commit (or was killed -9 anywhere)
fills nothing twice and ends exactly where an uninterrupted account does."""

from __future__ import annotations

import asyncio
import functools
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tradebot.broker.checkpoint import PRICES
from tradebot.common.bus import Bus
from tradebot.common.bus.wire import Delivery, entry_order
from tradebot.common.config import Settings
from tradebot.common.models import Order, OrderEvent, Tick
from tradebot.common.partitions import PartitionSettings, ReaderEnd
from tradebot.common.streams import (
    EXECUTION_ROLE,
    ORDERS_NEW,
    STRATEGY_ROLE,
    checkpoint_parts_key,
    lease_key,
    order_streams,
    tick_stream_for,
)
from tradebot.execution.prices import PricedReader, position_entry
from tradebot.execution.service import BrokerPartition, execution_worker, new_broker

from .broker_helpers import order, order_events
from .helpers import wait_until
from .test_broker_order_changes import once_each
from .worker_processes import worker_environment, worker_processes

SYMBOLS = ("AAPL", "MSFT", "NVDA")


def paper(settings: Settings, **fields: object) -> Settings:
    quiet = {"risk_duplicate_window_s": 0, "risk_max_symbol_orders_per_second": 1000, "slippage_bps": 0}
    return settings.model_copy(update={**quiet, "bus_block_ms": 100, **fields})


def resting_orders(symbol: str, at: datetime) -> list[Order]:
    """A buy that fills, a trailing stop selling it, and a bracket entry waiting below the price."""
    stamped = {"symbol": symbol}
    return [
        order(1, **stamped).model_copy(update={"id": f"co-{symbol}-buy", "timestamp": at}),
        order(2, side="sell", order_type="trailing_stop", trail_price=2.0, time_in_force="gtc", **stamped).model_copy(
            update={"id": f"co-{symbol}-trail", "timestamp": at}
        ),
        order(3, order_type="limit", limit_price=99.0, time_in_force="gtc", take_profit_price=104.0,
              stop_loss_price=97.0, order_class="bracket", **stamped).model_copy(
            update={"id": f"co-{symbol}-bracket", "timestamp": at}
        ),
    ]  # fmt: skip


PATH = [100.0, 101.5, 103.0, 102.0, 101.01, 101.0, 100.0, 99.01, 99.0, 100.0, 103.99, 104.0, 105.0]


def ticks(symbol: str, after: datetime) -> list[Tick]:
    return [Tick.create(symbol, p, 1, after + timedelta(seconds=n + 1), trade_id=n) for n, p in enumerate(PATH)]


def expected(settings: Settings, orders: list[Order], prices: list[Tick]) -> list[OrderEvent]:
    """What an uninterrupted paper account tells for these orders, then these prices (no risk stage in the way)."""
    broker = new_broker(settings)
    events = [event for o in orders for event in broker.place(o)]
    return events + [event for tick in prices for event in broker.on_price(tick.symbol, tick.price, tick.timestamp)]


def fills(events: list[OrderEvent]) -> list[tuple[str, str, float | None]]:
    return sorted((e.client_order_id, e.status, e.price) for e in events if e.status in ("filled", "canceled"))


@pytest.mark.timeout(240)  # above its own waits' deadlines, which bound a hang on a loaded machine
async def test_resting_orders_fill_on_the_ticks_after_them_once_the_strategy_role_is_done_with_them(
    bus: Bus, settings: Settings
) -> None:
    config = paper(settings)
    now = datetime.now(UTC)
    orders = resting_orders("AAPL", now)
    stream = tick_stream_for("AAPL", config.tick_partitions)
    await bus.ensure_group(stream, STRATEGY_ROLE)  # a strategy role reads these ticks: its acks gate them
    await bus.publish([(ORDERS_NEW, o) for o in orders])
    await bus.publish([(stream, tick) for tick in ticks("AAPL", now)])
    stop, counters = asyncio.Event(), Counter[str]()
    task = asyncio.create_task(execution_worker(bus, config, "member-1", counters).run(stop=stop))
    try:
        await wait_until(lambda: _count(bus, "accepted", 2), 30, "the trailing stop and the bracket resting")
        unread = await bus.read([stream], STRATEGY_ROLE, "strategy-0", count=100, block_ms=None)
        later = order(4, symbol="MSFT").model_copy(update={"id": "co-later", "timestamp": now + timedelta(hours=1)})
        await bus.publish([(ORDERS_NEW, later)])  # a turn after the ticks: it reads the prices it may
        await wait_until(lambda: _count(bus, "filled", 2), 30, "the later order filled")
        assert fills(await order_events(bus)) == [("co-AAPL-buy", "filled", 100.0), ("co-later", "filled", 100.0)]
        await bus.ack(STRATEGY_ROLE, unread)  # the strategy role is done with them: now they count
        wanted = sorted([*fills(expected(config, orders, ticks("AAPL", now))), ("co-later", "filled", 100.0)])
        await wait_until(lambda: _fills_are(bus, wanted), 30, "the fills the ticks cause")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert ("co-AAPL-trail", "filled", 101.0) in wanted  # the mark rose to 103, the stop to 101
    assert ("co-AAPL-bracket-tp", "filled", 104.0) in wanted
    assert ("co-AAPL-bracket-sl", "canceled", None) in wanted
    once_each(await order_events(bus))


async def _count(bus: Bus, status: str, count: int) -> bool:
    return sum(e.status == status for e in await order_events(bus)) >= count


async def _fills_are(bus: Bus, wanted: list[tuple[str, str, float | None]]) -> bool:
    return fills(await order_events(bus)) == wanted


class DiesBeforeItsCommit(PricedReader):
    """A reader that read prices and computed their fills, and lost the account before its commit
    landed (as a process killed -9 there: nothing of that turn is written)."""

    async def _commit(self, batch: list[Delivery], **fields: Any) -> bool:
        if self._ticks:
            await self.bus.redis.set(lease_key(EXECUTION_ROLE, 0), "a-newer-owner")
        return await super()._commit(batch, **fields)


def reader(bus: Bus, config: Settings, member: str, kind: type[PricedReader] = PricedReader) -> PricedReader:
    part = PartitionSettings(
        role=EXECUTION_ROLE,
        partitions=1,
        streams_for=lambda _partition: order_streams(config.tick_partitions),
        batch_size=config.bus_batch_size,
        block_ms=config.bus_block_ms,
        lease_ttl_ms=config.lease_ttl_ms,
    )
    return kind(bus, part, member, 0, BrokerPartition(config), Counter(), config.tick_partitions)


async def test_a_reader_that_read_a_price_and_died_before_its_commit_leaves_it_to_the_next_once(
    bus: Bus, settings: Settings
) -> None:
    config = paper(settings)
    now = datetime.now(UTC)
    orders = resting_orders("AAPL", now)
    stream = tick_stream_for("AAPL", config.tick_partitions)
    lease = lease_key(EXECUTION_ROLE, 0)
    await bus.publish([(ORDERS_NEW, o) for o in orders])
    await bus.redis.set(lease, "member-1")
    assert (
        await reader(bus, config, "member-1").run(asyncio.Event(), burst=True, max_messages=None) is ReaderEnd.DRAINED
    )
    placed = await order_events(bus)
    await bus.publish([(stream, tick) for tick in ticks("AAPL", now)])
    dying = reader(bus, config, "member-1", DiesBeforeItsCommit)
    assert await dying.run(asyncio.Event(), burst=True, max_messages=None) is ReaderEnd.LOST
    assert dying.state.price_positions.get(stream)  # it had read the prices (and applied them, in memory)
    assert dying.state.broker.resting.keys() != {"co-AAPL-trail", "co-AAPL-bracket"}
    assert await order_events(bus) == placed  # and nothing of it landed
    await bus.redis.set(lease, "member-2")
    assert (
        await reader(bus, config, "member-2").run(asyncio.Event(), burst=True, max_messages=None) is ReaderEnd.DRAINED
    )
    events = await order_events(bus)
    once_each(events)
    assert fills(events) == fills(expected(config, orders, ticks("AAPL", now)))


@pytest.mark.timeout(240)  # above its own waits' deadlines, which bound a hang on a loaded machine
async def test_paper_execution_killed_9_while_prices_flow_fills_each_resting_order_once(
    bus: Bus, settings: Settings, tmp_path: Path
) -> None:
    config = paper(settings, lease_ttl_ms=1000, bus_batch_size=5)
    env = worker_environment(config, lease_ttl_ms=1000, bus_block_ms=100, bus_batch_size=5, slippage_bps=0,
                             risk_duplicate_window_s=0, risk_max_symbol_orders_per_second=1000)  # fmt: skip
    now = datetime.now(UTC)
    orders = [o for symbol in SYMBOLS for o in resting_orders(symbol, now)]
    prices = sorted((t for symbol in SYMBOLS for t in ticks(symbol, now)), key=lambda t: t.timestamp)
    wanted = fills(expected(config, orders, prices))
    await bus.publish([(ORDERS_NEW, o) for o in orders])
    with worker_processes(tmp_path) as workers:
        execution = workers.start("tradebot.execution.service", env)
        await wait_until(lambda: _count(bus, "accepted", 2 * len(SYMBOLS)), 60, "every resting order accepted")
        for start in range(0, len(prices), 3):
            chunk = [(tick_stream_for(t.symbol, config.tick_partitions), t) for t in prices[start : start + 3]]
            await bus.publish(chunk)
            if start % 2:  # else at once: most likely between reading these prices and committing their fills
                last = chunk[-1][0]  # (its entry is that stream's newest: the ticks of a stream go in entries)
                read = functools.partial(_read_upto, bus, last, (await bus.tails([last]))[last])
                await wait_until(read, 30, "execution past these prices")
            workers.kill(execution)
            execution = workers.start("tradebot.execution.service", env)
        await wait_until(lambda: _fills_are(bus, wanted), 60, "every fill the prices cause")
    events = await order_events(bus)
    once_each(events)
    assert fills(events) == wanted
    assert {f"co-{s}-trail" for s in SYMBOLS} <= {cid for cid, status, _ in wanted if status == "filled"}


async def _read_upto(bus: Bus, stream: str, entry_id: str) -> bool:
    saved = await bus.redis.hget(checkpoint_parts_key(EXECUTION_ROLE, 0), PRICES)
    position = json.loads(saved or "{}").get(stream, "0-0")
    read, wanted = entry_order(position_entry(position)), entry_order(entry_id)
    return read > wanted or (read == wanted and position == position_entry(position))  # that entry read whole
