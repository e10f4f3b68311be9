"""A worker built on the runtime for lifecycle tests: ``python -m tests.runtime_worker``.

Its first batch waits (mid-batch, unacked) until the test sets ``test.gate``.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from tradebot.common.bus import Bus
from tradebot.common.bus.connection import connect
from tradebot.common.bus.wire import Delivery
from tradebot.common.config import Settings
from tradebot.common.consumer import GroupConsumer
from tradebot.common.runtime import consumer_name, main

STREAM = "test.lifecycle"


async def run(settings: Settings, *, stop: asyncio.Event, counters: Counter) -> None:
    assert settings.redis_url
    bus = Bus(connect(settings.redis_url))

    async def handle(batch: list[Delivery]) -> None:
        await bus.redis.set("test.in_batch", len(batch))
        while not await bus.redis.exists("test.gate"):  # noqa: ASYNC110 - the gate is a key in Redis the test sets: polled
            await asyncio.sleep(0.01)

    consumer = GroupConsumer(
        bus,
        [STREAM],
        "lifecycle",
        consumer_name(),
        batch_size=settings.bus_batch_size,
        block_ms=settings.bus_block_ms,
        claim_idle_ms=settings.claim_idle_ms,
        counters=counters,
    )
    try:
        await consumer.run(handle, stop=stop)
    finally:
        await bus.close()


if __name__ == "__main__":
    main("tester", run)
