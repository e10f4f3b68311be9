"""Stateful roles on partition leases: order, exactly-once effects, rebalancing, -9 kills."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from tests.bus_workers import ROLE, SequenceState, applied_stream
from tests.helpers import wait_until
from tests.redis_cluster import connect_to
from tradebot.common.bus import Bus
from tradebot.common.bus.wire import decode_all
from tradebot.common.partitions import PartitionedWorker, PartitionSettings, assigned_partitions
from tradebot.common.streams import checkpoint_key, partition_for, tick_stream, tick_stream_for


@pytest.fixture
def redis_version(redis_target: str) -> str:
    """Every test here runs on Redis 6.2, on Redis 7 and on a Redis Cluster."""
    return redis_target


@pytest.fixture
def redis_url(versioned_redis_url: str) -> str:
    return versioned_redis_url


PARTITIONS = 6
SYMBOLS = ["AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "TSLA", "JPM", "V", "XOM", "KO", "PEP"]
START = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)


def test_assignment_is_fair_and_the_same_for_every_member() -> None:
    members = ["w-b", "w-a", "w-c"]
    shares = [assigned_partitions(members, m, 8) for m in members]
    assert set().union(*shares) == set(range(8))
    assert sum(len(s) for s in shares) == 8
    assert sorted(len(s) for s in shares) == [2, 3, 3]
    assert assigned_partitions(members, "stranger", 8) == set()


async def publish_sequence(bus: Bus, start: int, stop: int) -> None:
    from tradebot.common.models import Tick

    batch = []
    for seq in range(start, stop):
        for symbol in SYMBOLS:
            tick = Tick.create(symbol, 100 + seq * 0.01, 1, START + timedelta(seconds=seq), trade_id=seq)
            batch.append((tick_stream_for(symbol, PARTITIONS), tick))
    await bus.publish(batch)


async def applied_sequences(bus: Bus) -> dict[str, list[int]]:
    sequences: dict[str, list[int]] = defaultdict(list)
    from tradebot.common.bus.wire import decode_all

    for partition in range(PARTITIONS):  # a symbol lives in one partition: its order is kept there
        for _, fields in await bus.redis.xrange(applied_stream(partition)):
            for tick in decode_all(fields):
                sequences[tick.symbol].append(int(tick.id.rsplit(":", 1)[1]))
    return sequences


async def applied_count(bus: Bus) -> int:
    return sum([len(await bus.entries(applied_stream(partition))) for partition in range(PARTITIONS)])  # ticks


def start_worker(redis_url: str, positioned: bool) -> subprocess.Popen:
    mode = ["positioned"] if positioned else []
    return subprocess.Popen(
        [sys.executable, "-m", "tests.bus_workers", "partitioned", redis_url, str(PARTITIONS), *mode]
    )


async def run_single_consumer(bus: Bus, positioned: bool = False) -> dict[str, list[int]]:
    config = PartitionSettings(
        role=ROLE,
        partitions=PARTITIONS,
        streams_for=lambda partition: [tick_stream(partition)],
        block_ms=50,
        lease_ttl_ms=1500,
        positioned=positioned,
    )
    worker = PartitionedWorker(bus, config, "solo", SequenceState, Counter())
    await worker.run(stop=asyncio.Event(), burst=True)
    return await applied_sequences(bus)


@pytest.mark.timeout(240)  # above its own waits' deadlines, which bound a hang on a loaded machine
@pytest.mark.parametrize("positioned", [False, True], ids=["pending-entries", "positioned"])
async def test_joining_leaving_and_killed_workers_apply_each_symbol_in_order_exactly_once(
    bus: Bus, redis_url: str, positioned: bool
) -> None:
    """Both ways a partition is read: XREADGROUP with acks (execution) and XREAD from the group's
    position moved by the commit (strategy)."""
    await publish_sequence(bus, 0, 100)
    reference = await run_single_consumer(bus, positioned)
    assert reference == {symbol: list(range(100)) for symbol in SYMBOLS}
    await bus.redis.flushdb()

    workers: list[subprocess.Popen] = []
    try:
        await publish_sequence(bus, 0, 25)
        workers.append(start_worker(redis_url, positioned))
        await wait_until(lambda: _applied_at_least(bus, 25 * len(SYMBOLS)), what="one worker")
        workers.append(start_worker(redis_url, positioned))
        await publish_sequence(bus, 25, 50)
        workers.append(start_worker(redis_url, positioned))
        await wait_until(lambda: _members(bus, 3), what="three members")
        await publish_sequence(bus, 50, 75)
        workers[0].send_signal(signal.SIGKILL)  # dies holding leases and maybe an uncommitted batch
        await publish_sequence(bus, 75, 90)
        workers[1].send_signal(signal.SIGTERM)  # leaves gracefully, handing its partitions back
        assert workers[1].wait(timeout=30) == 0
        await publish_sequence(bus, 90, 100)
        await wait_until(lambda: _applied_at_least(bus, 100 * len(SYMBOLS)), timeout=60, what="everything")
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()
    assert await applied_sequences(bus) == reference
    for partition in range(PARTITIONS):
        assert await bus.redis.xlen("dlq." + tick_stream(partition)) == 0
    used = {partition_for(symbol, PARTITIONS) for symbol in SYMBOLS}
    assert all([await bus.redis.get(checkpoint_key(ROLE, p)) for p in used])
    assert await bus.backlog([tick_stream(p) for p in range(PARTITIONS)], ROLE) == 0  # retention sees the group


async def _applied_at_least(bus: Bus, count: int) -> bool:
    return await applied_count(bus) >= count


async def _members(bus: Bus, count: int) -> bool:
    return await bus.redis.zcard(f"members:{ROLE}") >= count


async def test_a_worker_that_lost_its_lease_cannot_commit(bus: Bus, redis_url: str) -> None:
    from tradebot.common.bus.publishing import Commit
    from tradebot.common.streams import lease_key

    await bus.redis.set(lease_key(ROLE, 0), "someone-else")
    fenced = Commit(state={checkpoint_key(ROLE, 0): "stale"})
    assert not await bus.commit(ROLE, fenced, lease=(lease_key(ROLE, 0), "me"))
    assert await bus.redis.get(checkpoint_key(ROLE, 0)) is None
    other = Bus(connect_to(redis_url))
    assert await other.commit(
        ROLE, Commit(state={checkpoint_key(ROLE, 0): "fresh"}), lease=(lease_key(ROLE, 0), "someone-else")
    )
    assert await bus.redis.get(checkpoint_key(ROLE, 0)) == "fresh"
    await other.close()


async def test_a_commit_retried_after_a_lost_reply_writes_nothing_twice(bus: Bus) -> None:
    from tradebot.common.bus.publishing import Commit
    from tradebot.common.models import Tick

    tick = Tick.create("AAPL", 1.0, 1, START, trade_id=0)
    await bus.ensure_group(tick_stream(0), ROLE)
    await bus.publish([(tick_stream(0), tick)])
    [delivery] = await bus.read([tick_stream(0)], ROLE, "partition-0", count=1, block_ms=10)
    commit = Commit(
        publish=[(applied_stream(0), tick)],
        acks=[(tick_stream(0), delivery.entry_id)],
        state={checkpoint_key(ROLE, 0): "1"},
    )
    assert await bus.commit(ROLE, commit)
    assert await bus.commit(ROLE, commit)  # the same commit again, as a retry would send it
    assert await bus.redis.xlen(applied_stream(0)) == 1


async def test_a_large_commit_acks_sets_and_deletes_everything_in_one_step(bus: Bus) -> None:
    """Thousands of acks and hash fields (past Lua's unpack limit) in one commit, fields deleted too."""
    from tradebot.common.bus.publishing import Commit
    from tradebot.common.models import Tick
    from tradebot.common.streams import checkpoint_parts_key

    streams, parts = [tick_stream(0), applied_stream(0)], checkpoint_parts_key(ROLE, 0)  # one slot
    for stream in streams:
        await bus.ensure_group(stream, ROLE)
    await bus.publish([(streams[0], Tick.create("AAPL", 1.0, 1, START, trade_id=i)) for i in range(2500)])
    await bus.publish([(streams[1], Tick.create("MSFT", 1.0, 1, START, trade_id=i)) for i in range(3)])
    batch = await bus.read(streams, ROLE, "partition-0", count=3000, block_ms=10)
    await bus.redis.hset(parts, mapping={"gone": "1", "kept": "1"})
    fields = {f"f{i}": str(i) for i in range(1500)}
    commit = Commit(acks=[(d.stream, d.entry_id) for d in batch], hashes={parts: fields}, deleted={parts: ["gone"]})
    assert await bus.commit(ROLE, commit)
    assert (await bus.health(streams[0], ROLE)).pending == 0
    assert (await bus.health(streams[1], ROLE)).pending == 0
    assert await bus.redis.hgetall(parts) == {**fields, "kept": "1"}
    assert await bus.commit(ROLE, Commit(deleted={parts: list(fields)}))  # deletes alone
    assert await bus.redis.hgetall(parts) == {"kept": "1"}


async def test_a_worker_that_lost_its_lease_cannot_take_entries_either(bus: Bus) -> None:
    from tradebot.common.models import Tick
    from tradebot.common.streams import lease_key

    await bus.ensure_group(tick_stream(0), ROLE)
    await bus.publish([(tick_stream(0), Tick.create("AAPL", 1.0, 1, START, trade_id=i)) for i in range(3)])
    await bus.redis.set(lease_key(ROLE, 0), "new-owner")
    stale = await bus.read_fenced(
        [tick_stream(0)], ROLE, "partition-0", (lease_key(ROLE, 0), "old-owner"), count=10, pending=False
    )
    assert stale is None
    assert (
        await bus.health(tick_stream(0), ROLE)
    ).lag == 1  # nothing (one entry of 3 ticks) was delivered to the stale owner
    fresh = await bus.read_fenced(
        [tick_stream(0)], ROLE, "partition-0", (lease_key(ROLE, 0), "new-owner"), count=10, pending=False
    )
    assert fresh is not None
    assert [d.event.id for d in fresh] == [f"mock:AAPL:{i}" for i in range(3)]


async def test_one_lease_reads_and_acks_streams_of_every_slot(bus: Bus) -> None:
    """Execution's shape: one lease (slot {0}) over every partition's stream, in three slots on a cluster."""
    from tradebot.common.bus.publishing import Commit
    from tradebot.common.models import Tick
    from tradebot.common.streams import lease_key

    streams = [tick_stream(p) for p in range(3)]
    for partition, stream in enumerate(streams):
        await bus.ensure_group(stream, ROLE)
        await bus.publish([(stream, Tick.create("AAPL", 1.0, 1, START, trade_id=partition))])
    lease = (lease_key(ROLE, 0), "owner")
    await bus.redis.set(lease[0], lease[1])
    batch = await bus.read_fenced(streams, ROLE, "partition-0", lease, count=10, pending=False)
    assert batch is not None
    assert sorted(d.event.id for d in batch) == [f"mock:AAPL:{p}" for p in range(3)]
    commit = Commit(
        publish=[(applied_stream(0), d.event) for d in batch],
        acks=[(d.stream, d.entry_id) for d in batch],
        state={checkpoint_key(ROLE, 0): "3"},
    )
    assert await bus.commit(ROLE, commit, lease=lease)
    assert [(await bus.health(stream, ROLE)).pending for stream in streams] == [0, 0, 0]
    assert len(await bus.entries(applied_stream(0))) == 3
    await bus.redis.set(lease[0], "new-owner")
    await bus.publish([(streams[2], Tick.create("AAPL", 1.0, 1, START, trade_id=9))])
    assert await bus.read_fenced(streams, ROLE, "partition-0", lease, count=10, pending=False) is None
    assert (await bus.health(streams[2], ROLE)).lag == 1  # the stale owner took nothing


async def test_a_worker_that_lost_its_lease_cannot_dead_letter_an_entry(bus: Bus) -> None:
    from tradebot.common.models import Tick
    from tradebot.common.streams import dead_letter_stream, lease_key

    stream = tick_stream(0)
    await bus.ensure_group(stream, ROLE)
    await bus.publish([(stream, Tick.create("AAPL", 1.0, 1, START, trade_id=0))])
    [delivery] = await bus.read([stream], ROLE, "partition-0", count=1, block_ms=10)
    await bus.redis.set(lease_key(ROLE, 0), "new-owner")
    args = (ROLE, stream, delivery.entry_id, {"v": "1"}, "rejected by the strategy")
    assert not await bus.dead_letter(*args, lease=(lease_key(ROLE, 0), "old-owner"))
    assert await bus.redis.exists(dead_letter_stream(stream)) == 0
    assert (await bus.health(stream, ROLE)).pending == 1  # still the new owner's to handle
    assert await bus.dead_letter(*args, lease=(lease_key(ROLE, 0), "new-owner"))
    assert await bus.redis.xlen(dead_letter_stream(stream)) == 1
    assert (await bus.health(stream, ROLE)).pending == 0


async def test_a_positioned_reader_keeps_nothing_pending_and_dead_letters_with_its_commit(bus: Bus) -> None:
    """The strategy's way: XREAD from the group's position, the commit moves the group (no pending
    entries, so no XCLAIM per entry in the AOF); a malformed entry's dead-letter record is part of
    the commit, so a restart neither repeats it nor loses the entries around it."""
    from tradebot.common.streams import dead_letter_stream

    await publish_sequence(bus, 0, 5)
    bad = tick_stream_for(SYMBOLS[0], PARTITIONS)
    await bus.publish_raw(bad, {"v": "999", "type": "Tick", "data": "{}"})
    await publish_sequence(bus, 5, 10)
    assert await run_single_consumer(bus, positioned=True) == {symbol: list(range(10)) for symbol in SYMBOLS}
    assert await run_single_consumer(bus, positioned=True) == {symbol: list(range(10)) for symbol in SYMBOLS}
    [record] = await bus.dead_letters(dead_letter_stream(bad))
    assert (record.group, record.reason) == (ROLE, "unsupported schema version '999'")
    streams = [tick_stream(p) for p in range(PARTITIONS)]
    for stream in streams:
        newest = await bus.tails([stream])
        assert await bus.last_delivered_id(stream, ROLE) == newest[stream]
        assert (await bus.health(stream, ROLE)).pending == 0
    assert await bus.backlog(streams, ROLE) == 0


async def test_a_positioned_reader_takes_over_what_an_older_release_left_pending(bus: Bus) -> None:
    """A group read with XREADGROUP before the upgrade: its delivered but never committed entries are
    read again, in order, and leave the pending list (which would otherwise hold retention back)."""
    await publish_sequence(bus, 0, 10)
    streams = [tick_stream(p) for p in range(PARTITIONS)]
    for partition, stream in enumerate(streams):
        await bus.ensure_group(stream, ROLE)
        await bus.read([stream], ROLE, f"partition-{partition}", count=4, block_ms=None)
    assert sum([(await bus.health(stream, ROLE)).pending for stream in streams]) > 0
    assert await run_single_consumer(bus, positioned=True) == {symbol: list(range(10)) for symbol in SYMBOLS}
    assert [(await bus.health(stream, ROLE)).pending for stream in streams] == [0] * PARTITIONS
    assert await bus.backlog(streams, ROLE) == 0


async def test_a_positioned_commit_retried_after_a_lost_reply_writes_nothing_twice(bus: Bus) -> None:
    from tradebot.common.bus.publishing import Commit
    from tradebot.common.models import Tick

    tick = Tick.create("AAPL", 1.0, 1, START, trade_id=0)
    await bus.ensure_group(tick_stream(0), ROLE)
    [entry_id] = await bus.publish([(tick_stream(0), tick)])
    commit = Commit(publish=[(applied_stream(0), tick)], positions={tick_stream(0): entry_id})
    assert await bus.commit(ROLE, commit)
    assert await bus.commit(ROLE, commit)  # the same commit again, as a retry would send it
    assert await bus.redis.xlen(applied_stream(0)) == 1
    assert await bus.last_delivered_id(tick_stream(0), ROLE) == entry_id


@pytest.mark.parametrize("positioned", [False, True], ids=["pending-entries", "positioned"])
async def test_a_bad_tick_of_a_batch_is_dead_lettered_alone_and_its_neighbours_applied(
    bus: Bus, positioned: bool
) -> None:
    """A malformed tick (the read finds it) and a tick the state refuses (the apply does) of one
    entry: each gets a record of its own, with the entry's id and its index there, and the
    entry's other ticks are applied, once, even when the partition is read again."""
    from tradebot.common.bus.wire import encode_entries
    from tradebot.common.models import Tick
    from tradebot.common.streams import dead_letter_stream

    await publish_sequence(bus, 0, 3)
    stream = tick_stream_for("ZZZ", PARTITIONS)
    batch = [Tick.create("ZZZ", 1.0, 1, START, trade_id=seq) for seq in (0, 5, 7, 1)]
    fields = encode_entries([(stream, tick) for tick in batch])[0][1]
    rows = json.loads(fields["data"])
    rows[1][3] = "not a price"
    entry_id = await bus.publish_raw(stream, {**fields, "data": json.dumps(rows)})
    await publish_sequence(bus, 3, 6)
    expected = {symbol: list(range(6)) for symbol in SYMBOLS} | {"ZZZ": [0, 1]}
    assert await run_single_consumer(bus, positioned) == expected
    assert await run_single_consumer(bus, positioned) == expected
    malformed, refused = await bus.dead_letters(dead_letter_stream(stream))
    assert (malformed.entry_id, malformed.index, refused.entry_id, refused.index) == (entry_id, 1, entry_id, 2)
    assert malformed.reason.startswith("invalid Tick: price")
    assert refused.reason == "ValueError: ZZZ: got #7, expected #1"
    assert json.loads(malformed.payload["data"]) == [rows[1]]
    assert decode_all(refused.payload) == [batch[2]]  # a single-tick entry, as `tradebot dlq replay` publishes it
    assert await bus.backlog([tick_stream(p) for p in range(PARTITIONS)], ROLE) == 0
