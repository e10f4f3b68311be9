"""Worker processes for bus tests, run as ``python -m tests.bus_workers <mode> <redis_url>``.

``group``: a stateless consumer that records each handled entry id (its effect) and each id it
acked; with HOLD_AFTER=n it stops mid-batch after n effects and waits to be killed.
``partitioned``: a stateful role whose state checks that every symbol's sequence numbers arrive
in order, none skipped, none twice; it republishes each applied tick to ``test.applied:{p}``
(``partitioned URL N positioned``: reading with XREAD from its group's position, as the strategy does).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections import Counter

from tests.redis_cluster import connect_to
from tradebot.common.bus import Bus
from tradebot.common.bus.wire import Delivery
from tradebot.common.consumer import GroupConsumer
from tradebot.common.models import Event, Tick
from tradebot.common.partitions import PartitionedWorker, PartitionSettings
from tradebot.common.runtime import consumer_name
from tradebot.common.streams import partition_tag, tick_stream

EFFECTS = "test.effects"
ACKED = "test.acked"
APPLIED = "test.applied"


def applied_stream(partition: int) -> str:
    """Where partition ``partition`` republishes applied ticks: in its own slot, as a commit needs."""
    return f"{APPLIED}:{partition_tag(partition)}"


ROLE = "sequencer"


class RecordingBus(Bus):
    """Records every entry id whose XACK actually acknowledged it (so doubles would show)."""

    async def ack(self, group: str, deliveries) -> None:  # type: ignore[no-untyped-def]
        for delivery in deliveries:
            if await self.redis.xack(delivery.stream, group, delivery.entry_id):
                await self.redis.rpush(ACKED, delivery.entry_id)


class SequenceState:
    """Per-symbol next expected sequence number; an out-of-order tick is an error."""

    def __init__(self, partition: int | None = None) -> None:
        self.next_seq: dict[str, int] = {}
        self.output = APPLIED if partition is None else applied_stream(partition)

    def restore(self, checkpoint: str | None) -> None:
        self.next_seq = json.loads(checkpoint) if checkpoint else {}

    def checkpoint(self) -> str:
        return json.dumps(self.next_seq, sort_keys=True)

    def apply(self, events: list[Event]) -> list[tuple[str, Event]]:
        outputs: list[tuple[str, Event]] = []
        for tick in events:
            assert isinstance(tick, Tick)
            seq = int(tick.id.rsplit(":", 1)[1])
            expected = self.next_seq.get(tick.symbol, 0)
            if seq != expected:
                raise ValueError(f"{tick.symbol}: got #{seq}, expected #{expected}")
            self.next_seq[tick.symbol] = seq + 1
            outputs.append((self.output, tick))
        return outputs


async def run_group(redis_url: str, streams: list[str]) -> None:
    bus = RecordingBus(connect_to(redis_url), max_deliveries=3)
    hold_after = int(os.environ.get("HOLD_AFTER", "0"))
    counters: Counter = Counter()

    async def handle(batch: list[Delivery]) -> None:
        for delivery in batch:
            await bus.redis.rpush(EFFECTS, delivery.entry_id)
            counters["effects"] += 1
            if hold_after and counters["effects"] >= hold_after:
                await bus.redis.set("test.holding", os.getpid())
                await asyncio.Event().wait()  # mid-batch, unacked: the test kills us here

    consumer = GroupConsumer(
        bus, streams, "testers", consumer_name(), batch_size=50, block_ms=100, claim_idle_ms=500, counters=counters
    )
    await consumer.run(handle, stop=asyncio.Event())


async def run_partitioned(redis_url: str, partitions: int, positioned: bool = False) -> None:
    bus = Bus(connect_to(redis_url), max_deliveries=3)
    config = PartitionSettings(
        role=ROLE,
        partitions=partitions,
        streams_for=lambda partition: [tick_stream(partition)],
        batch_size=20,
        block_ms=100,
        lease_ttl_ms=1500,
        positioned=positioned,
    )
    worker = PartitionedWorker(bus, config, consumer_name(), SequenceState, Counter())
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await worker.run(stop=stop)


if __name__ == "__main__":
    mode, url = sys.argv[1], sys.argv[2]
    if mode == "group":
        asyncio.run(run_group(url, sys.argv[3].split(",")))
    else:
        asyncio.run(run_partitioned(url, int(sys.argv[3]), positioned=sys.argv[4:] == ["positioned"]))
