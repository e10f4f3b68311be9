"""The readers of one worker together: one waiting XREAD for the partitions that wait at once
(tradebot/common/waiting_read.py) and their commits in one script call (common/bus/together.py),
each partition still behind its own lease."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

from redis.exceptions import ResponseError

from tests.bus_workers import ROLE, SequenceState, applied_stream
from tests.helpers import wait_until
from tradebot.common.bus import Bus
from tradebot.common.bus.publishing import Commit, CommitResult
from tradebot.common.bus.wire import decode_all
from tradebot.common.models import Tick
from tradebot.common.partitions import PartitionedWorker, PartitionSettings
from tradebot.common.streams import checkpoint_key, lease_key, partition_for, tick_stream, tick_stream_for
from tradebot.common.waiting_read import WaitingReader

PARTITIONS = 3
START = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
SYMBOLS = ["AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "TSLA", "JPM", "V", "XOM", "KO", "PEP"]


def tick(symbol: str, seq: int) -> Tick:
    return Tick.create(symbol, 100 + seq * 0.01, 1, START + timedelta(seconds=seq), trade_id=seq)


def sequence(event: object) -> int:
    assert isinstance(event, Tick)
    return int(event.id.rsplit(":", 1)[1])


async def test_commits_made_together_go_in_one_script_call_each_behind_its_own_fence(bus: Bus) -> None:
    bus.commit_together()
    await bus.redis.set(lease_key(ROLE, 0), "me")
    await bus.redis.set(lease_key(ROLE, 1), "someone-else")  # partition 1 was taken over
    await bus.redis.set(lease_key(ROLE, 2), "me")
    results = await asyncio.gather(
        *(
            bus.commit(ROLE, Commit(state={checkpoint_key(ROLE, p): f"state {p}"}), lease=(lease_key(ROLE, p), "me"))
            for p in range(3)
        )
    )
    assert results == [CommitResult.APPLIED, CommitResult.LOST_LEASE, CommitResult.APPLIED]
    assert [await bus.redis.get(checkpoint_key(ROLE, p)) for p in range(3)] == ["state 0", None, "state 2"]
    assert (bus.stats["commit_calls"], bus.stats["commits_together"]) == (1, 3)


async def test_an_error_in_one_of_the_commits_made_together_is_its_callers_alone_and_noscript_reloads(bus: Bus) -> None:
    bus.commit_together()
    for p in range(2):
        await bus.redis.set(lease_key(ROLE, p), "me")
    await bus.redis.set("not-a-hash", "a string")
    await bus.redis.script_flush()  # as after a Redis restart: the commit script must be loaded again
    broken = Commit(hashes={"not-a-hash": {"field": "value"}})
    fine = Commit(state={checkpoint_key(ROLE, 0): "state 0"})
    results = await asyncio.gather(
        bus.commit(ROLE, fine, lease=(lease_key(ROLE, 0), "me")),
        bus.commit(ROLE, broken, lease=(lease_key(ROLE, 1), "me")),
        return_exceptions=True,
    )
    assert results[0] is CommitResult.APPLIED
    assert isinstance(results[1], ResponseError)
    assert "WRONGTYPE" in str(results[1])
    assert await bus.redis.get(checkpoint_key(ROLE, 0)) == "state 0"
    assert (bus.stats["commit_calls"], bus.stats["commits_together"]) == (1, 2)


async def test_readers_waiting_at_once_share_one_xread_and_each_takes_its_own_share(bus: Bus) -> None:
    streams = [tick_stream(p) for p in range(3)]
    first = [await bus.publish([(stream, tick("AAPL", 0))]) for stream in streams]
    await bus.publish([(streams[0], tick("AAPL", 1)), (streams[2], tick("AAPL", 1))])
    # reader 1 is past what its stream has: it waits while the others take theirs
    positions = [{streams[0]: "0-0"}, {streams[1]: first[1][0]}, {streams[2]: first[2][0]}]
    readers = [WaitingReader(bus, 10) for _ in streams]
    stop = asyncio.Event()
    reads = [
        asyncio.create_task(reader.read(at, block_ms=60_000, stop=stop))
        for reader, at in zip(readers, positions, strict=True)
    ]
    done, _ = await asyncio.wait([reads[0], reads[2]], timeout=30)
    assert len(done) == 2
    zero, two = reads[0].result(), reads[2].result()
    assert zero is not None
    assert two is not None
    assert [sequence(d.event) for d in zero[0]] == [0, 1]
    assert set(zero[2]) == {streams[0]}
    assert [sequence(d.event) for d in two[0]] == [1]
    assert set(two[2]) == {streams[2]}
    # one XREAD for the three; reader 1's next one waits while readers 0 and 2 are busy with theirs
    assert (bus.stats["shared_reads"], bus.stats["shared_read_members"]) == (1, 3)
    assert not reads[1].done()
    readers[0].close()
    readers[2].close()  # (done: they hold nothing back)
    await wait_until(lambda: bus.stats["shared_reads"] == 2, what="reader 1's read sent")
    third = await bus.publish([(streams[1], tick("AAPL", 1))])
    one = await asyncio.wait_for(reads[1], timeout=30)
    assert one is not None
    assert one[2] == {streams[1]: third[0]}
    readers[1].close()


async def test_a_reader_that_waits_while_a_read_is_in_flight_ends_it_and_all_wait_together(bus: Bus) -> None:
    streams = [tick_stream(p) for p in range(3)]
    first = [await bus.publish([(stream, tick("AAPL", 0))]) for stream in streams]
    stop = asyncio.Event()
    waiting = [WaitingReader(bus, 10) for _ in range(2)]
    reads = [
        asyncio.create_task(reader.read({stream: ids[0]}, block_ms=60_000, stop=stop))
        for reader, stream, ids in zip(waiting, streams, first, strict=False)
    ]
    await wait_until(lambda: bus.stats["shared_reads"] == 1, what="the first two readers' read")
    newcomer = WaitingReader(bus, 10)  # a partition taken up just now: its read would go alone
    late = asyncio.create_task(newcomer.read({streams[2]: first[2][0]}, block_ms=60_000, stop=stop))
    await wait_until(lambda: bus.stats["shared_reads"] == 2, what="one read for the three")
    assert bus.stats["shared_read_members"] == 2 + 3
    added = await bus.publish([(streams[2], tick("AAPL", 1))])
    got = await asyncio.wait_for(late, timeout=30)
    assert got is not None
    assert got[2] == {streams[2]: added[0]}
    assert not any(read.done() for read in reads)
    stop.set()  # the others stop: they leave the read they wait in (the last one out cancels it)
    assert await asyncio.gather(*reads) == [None, None]
    for reader in [*waiting, newcomer]:
        reader.close()


async def test_one_partition_loses_its_lease_alone_and_the_others_of_the_worker_go_on(bus: Bus) -> None:
    assert {partition_for(symbol, PARTITIONS) for symbol in SYMBOLS} == set(range(PARTITIONS))
    bus.commit_together()
    config = PartitionSettings(
        role=ROLE,
        partitions=PARTITIONS,
        streams_for=lambda partition: [tick_stream(partition)],
        block_ms=100,
        lease_ttl_ms=1500,
        positioned=True,
    )
    counters: Counter[str] = Counter()
    worker = PartitionedWorker(bus, config, "solo", SequenceState, counters)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop=stop))

    async def publish(start: int, end: int) -> None:
        await bus.publish(
            [(tick_stream_for(s, PARTITIONS), tick(s, seq)) for seq in range(start, end) for s in SYMBOLS]
        )

    async def applied(partition: int) -> dict[str, list[int]]:
        sequences: dict[str, list[int]] = {}
        for _, fields in await bus.redis.xrange(applied_stream(partition)):
            for event in decode_all(fields):
                assert isinstance(event, Tick)
                sequences.setdefault(event.symbol, []).append(sequence(event))
        return sequences

    def symbols_of(partition: int) -> list[str]:
        return [s for s in SYMBOLS if partition_for(s, PARTITIONS) == partition]

    async def applied_up_to(partition: int, end: int) -> bool:
        return await applied(partition) == {s: list(range(end)) for s in symbols_of(partition)}

    try:
        await publish(0, 10)
        for p in range(PARTITIONS):
            await wait_until(lambda p=p: applied_up_to(p, 10), what=f"partition {p} applied the first ticks")
        await bus.redis.set(lease_key(ROLE, 1), "thief", px=60_000)  # partition 1 goes to another member
        await publish(10, 20)
        for p in (0, 2):
            await wait_until(lambda p=p: applied_up_to(p, 20), what=f"partition {p} going on")
        await wait_until(lambda: counters["fenced"] >= 1, what="partition 1 refused by its fence")
        assert await applied_up_to(1, 10)  # nothing of the second ticks from the worker that lost it
        await bus.redis.delete(lease_key(ROLE, 1))  # the other member is gone: the worker takes it back
        await publish(20, 30)
        for p in range(PARTITIONS):  # from its commit, in order, each tick once (a stale state would not be)
            await wait_until(lambda p=p: applied_up_to(p, 30), what=f"partition {p} applied everything")
    finally:
        stop.set()
        await asyncio.wait_for(running, timeout=30)
    assert counters["fenced"] == 1
    assert counters["partitions_acquired"] == PARTITIONS + 1
    assert all([await bus.redis.xlen("dlq." + tick_stream(p)) == 0 for p in range(PARTITIONS)])
    assert bus.stats["commits_together"] > 0
