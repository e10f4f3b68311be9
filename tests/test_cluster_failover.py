"""A Redis Cluster master killed with -9 mid-run: its replica is promoted and the strategy role goes
on, with the same signals as a run without the kill, none twice (a cluster of the test's own)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.helpers import wait_until
from tests.redis_cluster import CLUSTER_MARK, LocalCluster, connect_to
from tradebot.common.bus import RECOVERABLE_REDIS_ERRORS, Bus
from tradebot.common.config import ReadySettings
from tradebot.common.models import Event
from tradebot.common.streams import signal_streams, tick_stream, tick_stream_for
from tradebot.market_data.mock_feed import MockFeed, stepping_clock
from tradebot.strategy import service as strategy_service

SYMBOLS = [f"S{n:02d}" for n in range(40)]
PARTITIONS = 8
TICKS = 12_000


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    own = LocalCluster(tmp_path / "cluster")
    try:
        own.start()
        yield own
    finally:
        own.stop()


def cluster_settings(cluster: LocalCluster, tmp_path: Path) -> ReadySettings:
    return ReadySettings(
        _env_file=None,
        redis_url=cluster.url.removesuffix(CLUSTER_MARK),
        redis_cluster=True,
        database_url="postgresql://unused@127.0.0.1/unused",  # the strategy role needs no database
        data_dir=tmp_path,
        tick_partitions=PARTITIONS,
        symbol_mode="custom",
        symbols=SYMBOLS,
        burst=True,
        bus_block_ms=100,
        bus_batch_size=20,  # many commits, so the kill lands among them
        lease_ttl_ms=3000,
    )


async def signals_of(bus: Bus) -> list[Event]:
    """Every partition's signals, read through the failover (the first command after it may fail)."""
    for _ in range(100):
        try:
            return await bus.entries_of(signal_streams(PARTITIONS))
        except RECOVERABLE_REDIS_ERRORS:
            await asyncio.sleep(0.1)
    raise AssertionError("the cluster did not answer after the failover")


def replicas_in_sync(cluster: LocalCluster) -> bool:
    """Every replica has every write of its master (so the ticks published survive the kill)."""
    for node in cluster.live():
        info = node.client().info("replication")
        if info["role"] == "master":
            offsets = [info[key]["offset"] for key in info if key.startswith("slave") and isinstance(info[key], dict)]
            if not offsets or min(offsets) < info["master_repl_offset"]:
                return False
    return True


async def run_strategy(cluster: LocalCluster, tmp_path: Path, *, kill: bool) -> list[Event]:
    bus = Bus(connect_to(cluster.url))
    await bus.redis.flushdb()
    ticks = MockFeed(SYMBOLS, 5, clock=stepping_clock(datetime(2026, 1, 5, 14, 30, tzinfo=UTC))).take(TICKS)
    for first in range(0, TICKS, 1000):
        await bus.publish((tick_stream_for(t.symbol, PARTITIONS), t) for t in ticks[first : first + 1000])
    await wait_until(lambda: replicas_in_sync(cluster), what="the replicas to have every tick")
    counters: Counter[str] = Counter()
    run = asyncio.create_task(
        strategy_service.run(cluster_settings(cluster, tmp_path), stop=asyncio.Event(), counters=counters)
    )
    if kill:
        await wait_until(lambda: counters["handled"] >= TICKS // 4, what="a quarter of the ticks applied")
        assert not run.done(), "the run ended before the kill"
        victim = cluster.master_of(tick_stream(0))
        victim.kill()
        await wait_until(lambda: cluster.master_of(tick_stream(0)) is not victim, what="a replica to be promoted")
    await asyncio.wait_for(run, timeout=120)
    signals = await signals_of(bus)
    await bus.close()
    return signals


async def test_a_killed_master_is_failed_over_and_the_strategy_gives_the_same_signals(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    expected = await run_strategy(cluster, tmp_path, kill=False)
    assert len(expected) > 100
    after_kill = await run_strategy(cluster, tmp_path, kill=True)
    ids = [signal.id for signal in after_kill]
    assert len(ids) == len(set(ids)), "a signal was published twice"
    assert sorted(ids) == sorted(signal.id for signal in expected)
