"""Measure the bus stages on one Redis 7 and on a local 3-master Redis Cluster, in the same run:

    .venv/bin/python -m tests.measure_cluster [--ticks 40000]

For each: publish seeded mock ticks over TICK_PARTITIONS=8 (pipelined XADD), run the strategy role
in burst mode (one process: read, apply, commit per partition), then the execution role in burst
mode (one process, reading the 8 order streams). Rates are per stage, one process each, on this
machine; a cluster spreads load over hosts, which one machine cannot show.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from tests.redis_cluster import CLUSTER_MARK, LocalCluster, connect_to
from tests.redis_versions import redis7_binary
from tradebot.common import embedded
from tradebot.common.bus import Bus
from tradebot.common.config import ReadySettings
from tradebot.common.embedded import EmbeddedRedis, free_port
from tradebot.common.streams import order_streams, tick_stream_for
from tradebot.execution import service as execution_service
from tradebot.market_data.mock_feed import MockFeed, stepping_clock
from tradebot.strategy import service as strategy_service

SYMBOLS = [f"S{n:02d}" for n in range(40)]
START = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
PARTITIONS = 8


async def measure(url: str, ticks: int, data_dir: Path) -> dict[str, float]:
    settings = ReadySettings(
        _env_file=None,
        redis_url=url.removesuffix(CLUSTER_MARK),
        redis_cluster=url.endswith(CLUSTER_MARK),
        database_url="postgresql://unused@127.0.0.1/unused",
        data_dir=data_dir,
        tick_partitions=PARTITIONS,
        symbol_mode="custom",
        symbols=SYMBOLS,
        burst=True,
        bus_block_ms=100,
    )
    bus = Bus(connect_to(url))
    await bus.redis.flushdb()
    batch = MockFeed(SYMBOLS, 5, clock=stepping_clock(START)).take(ticks)
    started = time.perf_counter()
    for first in range(0, ticks, 1000):
        await bus.publish((tick_stream_for(t.symbol, PARTITIONS), t) for t in batch[first : first + 1000])
    published = time.perf_counter() - started
    started = time.perf_counter()
    await strategy_service.run(settings, stop=asyncio.Event(), counters=Counter())
    strategy = time.perf_counter() - started
    orders = sum([await bus.redis.xlen(stream) for stream in order_streams(PARTITIONS)])
    started = time.perf_counter()
    await execution_service.run(settings, stop=asyncio.Event(), counters=Counter())
    execution = time.perf_counter() - started
    await bus.close()
    return {
        "publish ticks/s": ticks / published,
        "strategy ticks/s": ticks / strategy,
        "orders": orders,
        "execution orders/s": orders / execution,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=40_000)
    ticks = parser.parse_args().ticks
    binary = redis7_binary()
    embedded._redis_binary = lambda: binary  # Redis 7 for both (as tests.redis_versions.use_redis does)
    with tempfile.TemporaryDirectory(prefix="tradebot-measure-cluster-") as folder:
        single = EmbeddedRedis(Path(folder) / "single", free_port())
        cluster = LocalCluster(Path(folder) / "cluster")
        single.start()
        try:
            cluster.start()
            results = {
                "one Redis 7": asyncio.run(measure(single.url, ticks, Path(folder))),
                "Redis Cluster, 3 masters + 3 replicas": asyncio.run(measure(cluster.url, ticks, Path(folder))),
            }
        finally:
            cluster.stop()
            single.stop()
    print(f"{ticks:,} ticks, {len(SYMBOLS)} symbols, {PARTITIONS} partitions")
    for name, figures in results.items():
        shown = ", ".join(f"{key} {value:,.0f}" for key, value in figures.items())
        print(f"{name}: {shown}")


if __name__ == "__main__":
    main()
