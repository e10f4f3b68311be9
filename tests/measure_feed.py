"""Measure the mock feed alone: ticks published per second and the feed's CPU per tick.

    .venv/bin/python -m tests.measure_feed [--rate 50000] [--ticks 200000]

Runs ``run_feed`` (paced, as the worker does; ``--rate 0``: unpaced, batches of BUS_BATCH_SIZE)
in this process against a fresh embedded Redis, 100 popular symbols over TICK_PARTITIONS=8, with
no consumer: what the feed can offer when nothing competes with it. Published/s is wall time over
the run; CPU is ``time.process_time`` of this process (the Redis server's is not in it). For an A/B
against another checkout, run it with ``PYTHONPATH`` set to that checkout.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from tradebot.common.bus import Bus
from tradebot.common.config import Settings
from tradebot.common.embedded import ANY_PORT, EmbeddedRedis
from tradebot.market_data import service

UNPACED_RATE = 1e9  # the rate never lets the feed wait: every batch is BUS_BATCH_SIZE ticks


async def measure(redis_url: str, rate: float, ticks: int) -> tuple[int, float, float]:
    """(ticks published, wall seconds, CPU seconds) of one run."""
    settings = Settings(
        _env_file=None,
        redis_url=redis_url,
        mock_ticks_per_second=rate,
        mock_max_ticks=ticks,
        symbol_mode="popular",
        max_symbols=100,
        tick_partitions=8,
    )
    bus = Bus.from_settings(settings)
    counters: Counter[str] = Counter()
    began, cpu = time.monotonic(), time.process_time()
    try:
        await service.run_feed(bus, settings, stop=asyncio.Event(), counters=counters)
    finally:
        await bus.close()
    return counters["published"], time.monotonic() - began, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50_000, help="ticks/s offered; 0: unpaced")
    parser.add_argument("--ticks", type=int, default=200_000)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="measure-feed-"))
    redis = EmbeddedRedis(folder, ANY_PORT)
    redis.start()
    try:
        published, wall, cpu = asyncio.run(measure(redis.url, args.rate or UNPACED_RATE, args.ticks))
    finally:
        redis.stop()
        shutil.rmtree(folder, ignore_errors=True)
    offered = f"{args.rate:,.0f} ticks/s offered" if args.rate else "unpaced"
    sys.stdout.write(
        f"{offered}: {published:,} ticks in {wall:.2f} s = {published / wall:,.0f} published/s; "
        f"feed CPU {cpu / published * 1e6:.1f} µs/tick\n"
    )


if __name__ == "__main__":
    main()
