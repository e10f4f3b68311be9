"""Measure the bus stages on one Redis 7 and on a local 3-master Redis Cluster, in the same run:

    .venv/bin/python -m tests.measure_cluster [--ticks 40000]
    .venv/bin/python -m tests.measure_cluster --e2e [--ticks 30000] [--rate 50000]

With ``--e2e``: `tradebot bench e2e`'s own measurement (tradebot/bench/e2e.py: every worker a
process, ticks stored/s in the embedded PostgreSQL) on one Redis 7 (database 15,
as the bench uses) and on the cluster (database 0, the only one a cluster has), one after the
other with the same embedded PostgreSQL, in the same run; then the cluster again with
REDIS_MIN_REPLICAS=1 (every commit waits for its replica: what that costs).

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
from tradebot.bench.e2e import FeedRun, measure_throughput
from tradebot.bench.processes import worker_pool
from tradebot.bench.target import BENCH_DATABASE, BENCH_REDIS_DB, BenchTarget, redis_database
from tradebot.common import embedded
from tradebot.common.bus import Bus
from tradebot.common.config import ReadySettings, Settings
from tradebot.common.db import with_database
from tradebot.common.embedded import ANY_PORT, EmbeddedRedis
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


def measure_e2e(ticks: int, rate: float, folder: Path) -> None:
    """``tradebot bench e2e`` (one run each, no scaling) on one Redis 7 and on the cluster."""
    cluster = LocalCluster(folder / "cluster")
    with embedded.embedded_servers(folder / "single", ANY_PORT, ANY_PORT) as (redis_url, database_url):
        try:
            cluster.start()
            base = Settings(_env_file=None, redis_url=redis_url, database_url=database_url, data_dir=folder)
            cluster_url = cluster.url.removesuffix(CLUSTER_MARK)
            targets = {
                "one Redis 7": BenchTarget(
                    base, redis_database(redis_url, BENCH_REDIS_DB), with_database(database_url, BENCH_DATABASE)
                ),
                "Redis Cluster, 3 masters + 3 replicas": BenchTarget(
                    base.model_copy(update={"redis_url": cluster_url, "redis_cluster": True}),
                    cluster_url,
                    with_database(database_url, BENCH_DATABASE),
                ),
                "Redis Cluster, REDIS_MIN_REPLICAS=1": BenchTarget(
                    base.model_copy(update={"redis_url": cluster_url, "redis_cluster": True, "redis_min_replicas": 1}),
                    cluster_url,
                    with_database(database_url, BENCH_DATABASE),
                ),
            }
            with worker_pool(folder / "logs") as workers:
                for name, target in targets.items():
                    figures = asyncio.run(measure_throughput(target, workers, FeedRun(rate, ticks)))
                    shown = ", ".join(f"{figure.name} {figure.value:,.0f}" for figure in figures if figure.value)
                    print(f"{name}: {shown}", flush=True)
        finally:
            cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=None)
    parser.add_argument("--e2e", action="store_true", help="tradebot bench e2e's measurement on both")
    parser.add_argument("--rate", type=float, default=50_000, help="ticks/s the mock feed offers (--e2e)")
    options = parser.parse_args()
    binary = redis7_binary()
    embedded._redis_binary = lambda: binary  # Redis 7 for both (as tests.redis_versions.use_redis does)
    if options.e2e:
        with tempfile.TemporaryDirectory(prefix="tradebot-measure-cluster-") as folder:
            measure_e2e(options.ticks or 30_000, options.rate, Path(folder))
        return
    ticks = options.ticks or 40_000
    with tempfile.TemporaryDirectory(prefix="tradebot-measure-cluster-") as folder:
        single = EmbeddedRedis(Path(folder) / "single", ANY_PORT)
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
