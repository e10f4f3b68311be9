"""Measure the Alpaca path against the emulator: orders per minute under the rate limit, and the
time from a fill at the broker to its event on orders.events.

    .venv/bin/python -m tests.measure_broker [--orders 120] [--per-minute 190]

The emulator enforces Alpaca's 200 requests a minute; the execution worker runs in this process
with its own token bucket at ALPACA_REQUESTS_PER_MINUTE, against an embedded Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from collections import Counter
from pathlib import Path

from tradebot.common.bus import Bus
from tradebot.common.bus.connection import connect
from tradebot.common.bus.wire import decode, entry_ms
from tradebot.common.config import Settings
from tradebot.common.embedded import ANY_PORT, EmbeddedRedis
from tradebot.common.streams import ORDER_EVENTS, ORDERS_NEW
from tradebot.execution import service

from .broker_helpers import BURSTS_ALLOWED, KEY, SECRET, order
from .emulators.alpaca_trading import AlpacaTradingEmulator
from .emulators.events import parse_time


async def measure(orders: int, per_minute: int, data_dir: Path) -> None:
    redis = EmbeddedRedis(data_dir / "redis", ANY_PORT)
    redis.start()
    emulator = AlpacaTradingEmulator(key=KEY, secret=SECRET, requests_per_minute=200).start()
    bus = Bus(connect(redis.url))
    settings = Settings(
        _env_file=None,
        redis_url=redis.url,
        database_url="postgresql://unused",
        data_dir=data_dir,
        execution_broker="alpaca",
        alpaca_key=KEY,  # type: ignore[arg-type]
        alpaca_secret=SECRET,  # type: ignore[arg-type]
        alpaca_trading_url=emulator.url,
        alpaca_trading_stream_url=emulator.stream_url,
        alpaca_requests_per_minute=per_minute,
        bus_block_ms=100,
        **BURSTS_ALLOWED,  # type: ignore[arg-type]
    )
    stop = asyncio.Event()
    worker = asyncio.create_task(service.run(settings, stop=stop, counters=Counter()))
    try:
        await bus.publish((ORDERS_NEW, order(n, quantity=1)) for n in range(orders))
        while await bus.redis.xlen(ORDER_EVENTS) < 3 * orders:  # submitted, accepted, filled each
            await asyncio.sleep(0.2)  # a measurement loop: polling the stream length
        entries = await bus.redis.xrange(ORDER_EVENTS)
    finally:
        stop.set()
        await worker
        await bus.close()
        emulator.stop()
        redis.stop()
    events = [(entry_ms(entry_id), decode(fields)) for entry_id, fields in entries]
    submitted = [ms for ms, e in events if e.status == "submitted"]
    accepted = [ms for ms, e in events if e.status == "accepted"]
    minutes = (max(accepted) - min(submitted)) / 60_000
    fill_at = {
        u["order"]["client_order_id"]: parse_time(u["timestamp"]).timestamp() * 1000
        for u in emulator.book.updates
        if u["event"] == "fill"
    }
    latencies = sorted(ms - fill_at[e.client_order_id] for ms, e in events if e.status == "filled")
    print(f"{orders} orders at ALPACA_REQUESTS_PER_MINUTE={per_minute} (emulator allows 200/min)")
    print(f"  orders per minute: {orders / minutes:.0f}  (REST calls: {len(emulator.rest.requests)})")
    print(
        f"  fill at the broker -> event on {ORDER_EVENTS}: p50 {statistics.median(latencies):.1f} ms, "
        f"p99 {latencies[int(0.99 * (len(latencies) - 1))]:.1f} ms, max {latencies[-1]:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=120)
    parser.add_argument("--per-minute", type=int, default=190)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(measure(args.orders, args.per_minute, Path(folder)))


if __name__ == "__main__":
    main()
