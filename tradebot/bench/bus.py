"""Bus throughput: publish and consume+ack messages/s at several batch sizes, on real Redis.

Method: N Tick events are XADDed through ``Bus.publish`` in pipelined batches of size b (one round
trip per batch, MAXLEN ~ trimming on); then one consumer reads them with XREADGROUP COUNT b and
XACKs each batch. Decoding and validation of every event are included, as a worker pays them.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from tradebot.common.bus import Bus, connect
from tradebot.common.models import Tick

STREAM = "bench.bus"
GROUP = "bench"


def sample_ticks(count: int) -> list[Tick]:
    start = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
    return [Tick.create("AAPL", 200 + (i % 100) * 0.01, 100, start + timedelta(microseconds=i), trade_id=i)
            for i in range(count)]


async def measure_batch(bus: Bus, ticks: list[Tick], batch: int) -> dict[str, float]:
    """Publish then consume+ack ``ticks`` in batches of ``batch``; msgs/s for each."""
    await bus.redis.delete(STREAM)
    await bus.ensure_group(STREAM, GROUP)
    began = time.perf_counter()
    for i in range(0, len(ticks), batch):
        await bus.publish((STREAM, tick) for tick in ticks[i:i + batch])
    publish_s = time.perf_counter() - began
    began = time.perf_counter()
    consumed = 0
    while consumed < len(ticks):
        deliveries = await bus.read([STREAM], GROUP, "bench", count=batch, block_ms=1000)
        await bus.ack(GROUP, deliveries)
        consumed += len(deliveries)
    consume_s = time.perf_counter() - began
    await bus.redis.delete(STREAM)
    return {"batch": batch, "messages": len(ticks), "publish_per_s": len(ticks) / publish_s,
            "consume_ack_per_s": len(ticks) / consume_s}


async def bench_bus(redis_url: str, batches: tuple[int, ...] = (1, 100, 1000),
                    messages: int = 100_000) -> list[dict[str, float]]:
    """One row per batch size; batch size 1 uses fewer messages (one round trip each)."""
    bus = Bus(connect(redis_url), maxlen=max(messages * 2, 1000))
    try:
        rows = []
        for batch in batches:
            count = min(messages, 10_000) if batch == 1 else messages
            rows.append(await measure_batch(bus, sample_ticks(count), batch))
        return rows
    finally:
        await bus.close()
