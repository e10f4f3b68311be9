"""Bus throughput: publish and consume+ack messages/s at several batch sizes, on real Redis.

Method: N Tick events are XADDed through ``Bus.publish`` in pipelined batches of size b (one round
trip per batch, MAXLEN ~ trimming on); then one consumer reads them with XREADGROUP COUNT b and
XACKs each batch. Decoding and validation of every event are included, as a worker pays them.
The ticks go BUS_TICKS_PER_ENTRY's default (16) to an entry, as the feed publishes them; a batch
reads b entries, and the figures count ticks.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from tradebot.bench.report import Figure
from tradebot.common.bus import Bus
from tradebot.common.bus.connection import connect
from tradebot.common.models import Tick

STREAM = "bench.bus"
GROUP = "bench"
CONSUME_TIMEOUT_S = 120.0


def sample_ticks(count: int) -> list[Tick]:
    """``count`` ticks of one symbol, one microsecond apart."""
    start = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
    return [
        Tick.create("AAPL", 200 + (i % 100) * 0.01, 100, start + timedelta(microseconds=i), trade_id=i)
        for i in range(count)
    ]


async def measure_batch(bus: Bus, ticks: list[Tick], batch: int) -> dict[str, float]:
    """Publish then consume+ack ``ticks`` in batches of ``batch``; msgs/s for each."""
    await bus.redis.delete(STREAM)
    await bus.ensure_group(STREAM, GROUP)
    began = time.perf_counter()
    for i in range(0, len(ticks), batch):
        await bus.publish((STREAM, tick) for tick in ticks[i : i + batch])
    publish_s = time.perf_counter() - began
    began = time.perf_counter()
    consumed = 0
    while consumed < len(ticks):
        if time.perf_counter() - began > CONSUME_TIMEOUT_S:
            raise TimeoutError(f"consumed only {consumed:,} of {len(ticks):,} entries in {CONSUME_TIMEOUT_S:.0f}s")
        deliveries = await bus.read([STREAM], GROUP, "bench", count=batch, block_ms=1000)
        await bus.ack(GROUP, deliveries)
        consumed += len(deliveries)
    consume_s = time.perf_counter() - began
    await bus.redis.delete(STREAM)
    return {
        "batch": batch,
        "messages": len(ticks),
        "publish_per_s": len(ticks) / publish_s,
        "consume_ack_per_s": len(ticks) / consume_s,
    }


async def bench_bus(
    redis_url: str, batches: tuple[int, ...] = (1, 100, 1000), messages: int = 100_000
) -> list[dict[str, float]]:
    """One row per batch size; batch size 1 uses fewer messages (one round trip each)."""
    bus = Bus(connect(redis_url))
    try:
        rows = []
        for batch in batches:
            count = min(messages, 10_000) if batch == 1 else messages
            rows.append(await measure_batch(bus, sample_ticks(count), batch))
        return rows
    finally:
        await bus.close()


async def measure_bus(redis_url: str, messages: int) -> list[Figure]:
    """The bus rows as figures: publish and consume+ack msgs/s per batch size."""
    rows = await bench_bus(redis_url, messages=messages)
    figures = []
    for row in rows:
        batch, count = int(row["batch"]), int(row["messages"])
        publish = (
            f"{count:,} Tick events via Bus.publish, pipelined batches of {batch} (one round trip per "
            "batch, MAXLEN ~ on), one process"
        )
        consume = (
            f"{count:,} entries read by one consumer with XREADGROUP COUNT {batch}, every event decoded "
            "and validated, each batch XACKed"
        )
        figures += [
            Figure("bus", f"publish, batch {batch}", row["publish_per_s"], "msgs/s", publish, row),
            Figure("bus", f"consume + ack, batch {batch}", row["consume_ack_per_s"], "msgs/s", consume, row),
        ]
    return figures
