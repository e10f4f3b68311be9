"""The execution worker: fills ``orders.new`` on the paper broker and publishes ``orders.events``.

The orders stream is one partition owned by one worker at a time (by lease), so orders are applied
in stream order. The account is the partition's checkpoint, written in the same atomic commit as
the events and the acks: a worker killed mid-batch neither loses an order nor fills one twice, and
the broker itself ignores a client order id it has already executed.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import redis.asyncio as aioredis

from tradebot.common import runtime
from tradebot.common.bus import Bus
from tradebot.common.config import Settings
from tradebot.common.models import Event, Order
from tradebot.common.partitions import PartitionedWorker, PartitionSettings
from tradebot.common.streams import EXECUTION_ROLE, ORDER_EVENTS, ORDERS_NEW, checkpoint_key
from tradebot.execution.broker import PaperBroker

ACCOUNT_PARTITION = 0


class BrokerPartition:
    """The paper account behind PartitionState: orders in, order events out."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.broker = new_broker(settings)

    def restore(self, checkpoint: str | None) -> None:
        """Start from the checkpointed account, or a fresh one with STARTING_CASH."""
        self.broker = new_broker(self.settings)
        if checkpoint:
            self.broker.restore(json.loads(checkpoint))

    def apply(self, events: list[Event]) -> list[tuple[str, Event]]:
        """Execute orders in order; a repeated client order id yields nothing."""
        outputs: list[tuple[str, Event]] = []
        for event in events:
            if not isinstance(event, Order):
                raise TypeError(f"expected an Order on {ORDERS_NEW}, got a {type(event).__name__}")
            result = self.broker.execute(event)
            if result is not None:
                outputs.append((ORDER_EVENTS, result))
        return outputs

    def checkpoint(self) -> str:
        """The account as compact JSON."""
        return json.dumps(self.broker.snapshot(), separators=(",", ":"))


def new_broker(settings: Settings) -> PaperBroker:
    """A fresh account with the configured cash, slippage and commission."""
    return PaperBroker(
        settings.starting_cash, settings.slippage_bps, settings.commission_per_share, settings.order_memory_days
    )


async def read_account(redis: aioredis.Redis) -> dict | None:
    """Cash, equity, P&L and positions of the paper account, or None before the first order."""
    saved = await redis.get(checkpoint_key(EXECUTION_ROLE, ACCOUNT_PARTITION))
    if saved is None:
        return None
    broker = PaperBroker(starting_cash=0.0)  # every figure that matters comes from the snapshot
    broker.restore(json.loads(saved))
    return broker.account()


def execution_worker(bus: Bus, settings: Settings, member: str, counters: Counter) -> PartitionedWorker:
    """A worker named ``member`` that takes the account's lease when it is free.

    EXECUTION_BROKER picks who executes: the paper broker (pure state, checkpointed) or a real
    broker's loop (tradebot/broker/worker.py) reading the same partition under the same lease.
    """
    config = PartitionSettings(
        role=EXECUTION_ROLE,
        partitions=1,
        stream_for=lambda _partition: ORDERS_NEW,
        batch_size=settings.bus_batch_size,
        block_ms=settings.bus_block_ms,
        lease_ttl_ms=settings.lease_ttl_ms,
    )
    new_reader = None
    if settings.execution_broker == "alpaca":
        from tradebot.broker.live import alpaca_is_paper
        from tradebot.broker.worker import BrokerExecution  # alpaca-py is loaded only when it is used

        alpaca_is_paper(settings)  # missing keys or a half-given live opt-in stop start-up here (exit 78)
        new_reader = lambda _partition: BrokerExecution(bus, config, member, settings, counters)  # noqa: E731
    return PartitionedWorker(
        bus,
        config,
        member=member,
        counters=counters,
        new_state=lambda _partition: BrokerPartition(settings),
        new_reader=new_reader,
    )


async def run(settings: Settings, *, stop: asyncio.Event, counters: Counter) -> None:
    """Worker entry: execute orders while this process holds the account's lease."""
    if not settings.redis_url:
        raise ValueError("REDIS_URL is not set")
    bus = Bus.from_settings(settings)
    try:
        worker = execution_worker(bus, settings, runtime.consumer_name(), counters)
        await worker.run(stop=stop, max_messages=settings.max_messages, burst=settings.burst)
    finally:
        await bus.close()


def main() -> None:
    """``python -m tradebot.execution.service``."""
    runtime.main(EXECUTION_ROLE, run)


if __name__ == "__main__":
    main()
