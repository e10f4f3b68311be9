"""A Redis Cluster master killed with -9 mid-run: its replica is promoted and the strategy role goes
on, with the same signals as a run without the kill, none twice, also with REDIS_MIN_REPLICAS=1
(a cluster of the test's own). What WAIT buys: a commit counted while its replica is cut off is lost
in the failover without REDIS_MIN_REPLICAS, and held (never counted) with it until a replica has it."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.helpers import wait_until
from tests.redis_cluster import CLUSTER_MARK, LocalCluster, commit_until_counted, connect_to
from tradebot.common.bus import Bus
from tradebot.common.bus.connection import RECOVERABLE_REDIS_ERRORS
from tradebot.common.bus.publishing import Commit, CommitResult
from tradebot.common.config import ReadySettings
from tradebot.common.models import Event, Tick
from tradebot.common.replicas import ReplicasBehindError
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


def cluster_settings(cluster: LocalCluster, tmp_path: Path, min_replicas: int = 0) -> ReadySettings:
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
        redis_min_replicas=min_replicas,
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


async def run_strategy(cluster: LocalCluster, tmp_path: Path, *, kill: bool, min_replicas: int = 0) -> list[Event]:
    bus = Bus(connect_to(cluster.url))
    await bus.redis.flushdb()
    ticks = MockFeed(SYMBOLS, 5, clock=stepping_clock(datetime(2026, 1, 5, 14, 30, tzinfo=UTC))).take(TICKS)
    for first in range(0, TICKS, 1000):
        await bus.publish((tick_stream_for(t.symbol, PARTITIONS), t) for t in ticks[first : first + 1000])
    await wait_until(lambda: replicas_in_sync(cluster), what="the replicas to have every tick")
    counters: Counter[str] = Counter()
    run = asyncio.create_task(
        strategy_service.run(cluster_settings(cluster, tmp_path, min_replicas), stop=asyncio.Event(), counters=counters)
    )
    if kill:
        await wait_until(lambda: counters["handled"] >= TICKS // 4, what="a quarter of the ticks applied")
        assert not run.done(), "the run ended before the kill"
        victim = cluster.master_of(tick_stream(0))
        victim.kill()
        await wait_until(lambda: cluster.master_of(tick_stream(0)) is not victim, what="a replica to be promoted")
        if min_replicas:  # the promoted master has no replica: its slots' commits are held until one is back
            victim.restart()  # as a supervisor or Kubernetes would: it rejoins as the new master's replica
    await asyncio.wait_for(run, timeout=120)
    signals = await signals_of(bus)
    await bus.close()
    return signals


@pytest.mark.parametrize("min_replicas", [0, 1], ids=["no-wait", "min-replicas-1"])
async def test_a_killed_master_is_failed_over_and_the_strategy_gives_the_same_signals(
    cluster: LocalCluster, tmp_path: Path, min_replicas: int
) -> None:
    expected = await run_strategy(cluster, tmp_path, kill=False, min_replicas=min_replicas)
    assert len(expected) > 100
    after_kill = await run_strategy(cluster, tmp_path, kill=True, min_replicas=min_replicas)
    ids = [signal.id for signal in after_kill]
    assert len(ids) == len(set(ids)), "a signal was published twice"
    assert sorted(ids) == sorted(signal.id for signal in expected)


def feed_commit(n: int) -> Commit:
    """A producer's commit like a live feed's: a tick nobody can make again, and its cursor."""
    tick = Tick.create("AAPL", 100.0 + n, 1, datetime(2026, 1, 5, 14, 30, tzinfo=UTC), trade_id=n)
    cursor = f"cursor:test:{{{0}}}"
    return Commit(publish=[(tick_stream(0), tick)], state={cursor: str(n)}, guard=(cursor, str(n - 1) if n else ""))


async def ticks_after_failover(bus: Bus) -> list[str]:
    for _ in range(100):
        try:
            return [event.id for event in await bus.entries(tick_stream(0))]
        except RECOVERABLE_REDIS_ERRORS:
            await asyncio.sleep(0.1)
    raise AssertionError("the cluster did not answer after the failover")


@pytest.mark.parametrize("min_replicas", [0, 1], ids=["no-wait", "min-replicas-1"])
async def test_a_commit_counted_before_a_failover_survives_it_only_with_min_replicas(
    cluster: LocalCluster, min_replicas: int
) -> None:
    bus = Bus(connect_to(cluster.url), min_replicas=min_replicas)
    await commit_until_counted(bus, feed_commit(0))
    await wait_until(lambda: replicas_in_sync(cluster), what="the replica to have the first tick")
    master = cluster.master_of(tick_stream(0))
    replica = cluster.replica_of(master)
    replica.pause()  # a hung replica host, and its link cut: nothing more reaches it
    master.client().client_kill_filter(_type="slave")
    try:
        counted = await bus.commit("", feed_commit(1)) is CommitResult.APPLIED
    except ReplicasBehindError:
        counted = False
    assert counted is (min_replicas == 0), "with REDIS_MIN_REPLICAS=1 a commit its replica lacks is held"
    master.kill()
    replica.resume()
    await wait_until(lambda: cluster.master_of(tick_stream(0)) is replica, timeout=60, what="the replica promoted")
    survived = await ticks_after_failover(bus)
    assert len(survived) == 1, "the failover lost the tick the replica never had"
    if min_replicas:  # the producer still holds tick 1: it commits it again, counted once a replica has it
        master.restart()
        await commit_until_counted(bus, feed_commit(1))
        ids = await ticks_after_failover(bus)
        assert len(ids) == len(set(ids)) == 2
    await bus.close()
