"""The bus against real Redis: delivery, acks, dead letters, crashes and restarts."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis
from redis.exceptions import DataError, ResponseError

from tests.bus_workers import ACKED, EFFECTS, applied_stream
from tests.helpers import wait_until
from tests.redis_cluster import connect_to
from tradebot.common.bus import Bus
from tradebot.common.bus.base import LastErrors
from tradebot.common.bus.connection import RECOVERABLE_REDIS_ERRORS, RedisRefusedError, connect, get_many, is_cluster
from tradebot.common.bus.health import StreamHealth
from tradebot.common.bus.publishing import Commit, CommitResult
from tradebot.common.bus.wire import Delivery, decode_all, encode_entries
from tradebot.common.codec import encode_event
from tradebot.common.consumer import GroupConsumer, ride_out_redis
from tradebot.common.embedded import EmbeddedRedis
from tradebot.common.lifecycle import Backoff
from tradebot.common.models import Tick
from tradebot.common.streams import (
    checkpoint_key,
    dead_letter_stream,
    hold_key,
    lease_key,
    partition_cursor_key,
    tick_stream,
)

START = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
STREAM = "test.ticks"


@pytest.fixture
def redis_version(redis_target: str) -> str:
    """Every test here runs on Redis 6.2, on Redis 7 and on a Redis Cluster."""
    return redis_target


@pytest.fixture
def redis_url(versioned_redis_url: str) -> str:
    return versioned_redis_url


@pytest.fixture
def private_redis(redis_version: str, request: pytest.FixtureRequest) -> EmbeddedRedis:
    """A Redis of the test's own, of each version (restarting one server: not a cluster's case, whose
    failover tests/test_cluster.py covers)."""
    if redis_version == "cluster":
        pytest.skip("restarts a single server")
    server: EmbeddedRedis = request.getfixturevalue("versioned_private_redis")
    return server


def ticks(count: int, symbol: str = "AAPL") -> list[Tick]:
    return [Tick.create(symbol, 100 + i * 0.01, 10, START + timedelta(seconds=i), trade_id=i) for i in range(count)]


async def publish_each(bus: Bus, items: list[tuple[str, Tick]]) -> None:
    """One entry per tick (a publish of one tick), for tests of what happens to entries."""
    for item in items:
        await bus.publish([item])


def v1_fields(tick: Tick) -> dict[str, str]:
    """A tick's entry as releases before tick batches wrote it (schema version 1, one tick)."""
    return {"v": "1", "type": "Tick", "data": encode_event(tick)}


def consumer(bus: Bus, name: str, counters: Counter | None = None, streams=(STREAM,)) -> GroupConsumer:
    return GroupConsumer(
        bus,
        list(streams),
        "testers",
        name,
        batch_size=50,
        block_ms=50,
        claim_idle_ms=300,
        counters=counters if counters is not None else Counter(),
    )


async def test_published_events_come_back_decoded_and_acks_clear_pending(bus: Bus) -> None:
    sent = ticks(5)
    await bus.ensure_group(STREAM, "testers")
    await bus.publish((STREAM, t) for t in sent)  # one entry of 5 ticks
    got = await bus.read([STREAM], "testers", "c1", count=10, block_ms=10)
    assert [d.event for d in got] == sent
    assert [d.index for d in got] == [0, 1, 2, 3, 4]
    assert len({d.entry_id for d in got}) == 1
    assert (await bus.health(STREAM, "testers")).pending == 1
    await bus.ack("testers", got)
    health = await bus.health(STREAM, "testers")
    assert (health.length, health.pending, health.lag) == (1, 0, 0)


async def test_group_creation_tolerates_existing_group_but_not_other_errors(bus: Bus) -> None:
    await bus.ensure_group(STREAM, "testers")
    await bus.ensure_group(STREAM, "testers")
    await bus.redis.set("not-a-stream", "x")
    with pytest.raises(ResponseError):
        await bus.ensure_group("not-a-stream", "testers")


async def test_lag_counts_undelivered_entries(bus: Bus) -> None:
    await bus.ensure_group(STREAM, "testers")
    await publish_each(bus, [(STREAM, t) for t in ticks(7)])
    await bus.read([STREAM], "testers", "c1", count=3, block_ms=10)
    health = await bus.health(STREAM, "testers")
    assert (health.pending, health.lag) == (3, 4)


async def test_malformed_entries_go_to_the_dead_letter_stream_and_the_rest_flows(bus: Bus) -> None:
    good = ticks(3)
    await bus.ensure_group(STREAM, "testers")
    await bus.publish([(STREAM, good[0])])
    await bus.publish_raw(STREAM, {"garbage": "yes"})
    await bus.publish_raw(STREAM, {**v1_fields(good[1]), "data": "{not json"})
    bad_price = json.loads(v1_fields(good[1])["data"]) | {"price": -5}
    await bus.publish_raw(STREAM, {**v1_fields(good[1]), "data": json.dumps(bad_price)})
    await bus.publish([(STREAM, good[1]), (STREAM, good[2])])
    handled: list[Tick] = []

    async def handle(batch: list[Delivery]) -> None:
        handled.extend(d.event for d in batch)  # type: ignore[misc]

    await consumer(bus, "c1").run(handle, stop=asyncio.Event(), burst=True)
    assert handled == good
    dead = await bus.redis.xrange(dead_letter_stream(STREAM))
    reasons = [fields["reason"] for _, fields in dead]
    assert reasons[0] == "unsupported schema version None"
    assert reasons[1].startswith("invalid Tick: ")
    assert reasons[2] == "invalid Tick: price: Input should be greater than or equal to 0.000001"
    assert json.loads(dead[0][1]["payload"]) == {"garbage": "yes"}
    assert (await bus.health(STREAM, "testers")).pending == 0


async def test_a_poison_entry_is_dead_lettered_after_max_deliveries_without_blocking_others(bus: Bus) -> None:
    sent = ticks(10)
    poison = sent[4]
    await publish_each(bus, [(STREAM, t) for t in sent])
    handled: list[str] = []

    async def handle(batch: list[Delivery]) -> None:
        if any(d.event == poison for d in batch):
            raise RuntimeError("cannot handle this one")
        handled.extend(d.event.id for d in batch)

    await consumer(bus, "c1").run(handle, stop=asyncio.Event(), burst=True)
    assert sorted(handled) == sorted(t.id for t in sent if t != poison)
    [(_, dead)] = await bus.redis.xrange(dead_letter_stream(STREAM))
    assert json.loads(json.loads(dead["payload"])["data"])[0][0] == poison.id
    assert dead["reason"] == ("delivered 4 times without ack; last error: RuntimeError: cannot handle this one")
    assert (await bus.health(STREAM, "testers")).pending == 0


async def test_entries_of_a_consumer_killed_mid_batch_are_reclaimed_and_acked_once(bus: Bus, redis_url: str) -> None:
    sent = ticks(300)
    await bus.ensure_group(STREAM, "testers")
    await bus.publish((STREAM, t) for t in sent)
    victim = subprocess.Popen(  # noqa: ASYNC220 - starts and returns at once; the test waits on Redis
        [sys.executable, "-m", "tests.bus_workers", "group", redis_url, STREAM], env={"HOLD_AFTER": "120", "PATH": ""}
    )
    try:
        await wait_until(lambda: bus.redis.exists("test.holding"), what="the victim to be mid-batch")
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
    finally:
        victim.kill()
    assert (await bus.health(STREAM, "testers")).pending > 0

    from tests.bus_workers import RecordingBus

    survivor_bus = RecordingBus(connect_to(redis_url), max_deliveries=3)
    counters: Counter = Counter()

    async def handle(batch: list[Delivery]) -> None:
        for delivery in batch:
            await survivor_bus.redis.rpush(EFFECTS, delivery.entry_id)

    stop = asyncio.Event()
    task = asyncio.create_task(consumer(survivor_bus, "survivor", counters).run(handle, stop=stop))
    await wait_until(lambda: _pending_is_zero(bus), what="every entry to be acked")
    stop.set()
    await task
    await survivor_bus.close()
    effects = await bus.redis.lrange(EFFECTS, 0, -1)
    acked = await bus.redis.lrange(ACKED, 0, -1)
    entry_ids = [entry_id for entry_id, _ in await bus.redis.xrange(STREAM)]
    assert set(effects) == set(entry_ids)  # every entry handled at least once
    assert sorted(acked) == sorted(entry_ids)  # and acked exactly once
    assert counters["reclaimed"] > 0


async def _pending_is_zero(bus: Bus) -> bool:
    health = await bus.health(STREAM, "testers")
    return health.pending == 0 and health.lag == 0


async def test_consumers_ride_out_a_redis_restart_without_losing_entries(private_redis: EmbeddedRedis) -> None:
    publisher = Bus(connect(private_redis.url))
    reader = Bus(connect(private_redis.url))
    first, second = ticks(200), ticks(200, symbol="MSFT")
    await publisher.ensure_group(STREAM, "testers")
    await publisher.publish((STREAM, t) for t in first)
    handled: set[str] = set()

    async def handle(batch: list[Delivery]) -> None:
        handled.update(d.event.id for d in batch)

    counters: Counter = Counter()
    stop = asyncio.Event()
    task = asyncio.create_task(consumer(reader, "c1", counters).run(handle, stop=stop))
    await wait_until(lambda: len(handled) == 200, what="the first half")
    private_redis.stop()  # SIGTERM: Redis flushes its append-only file
    private_redis.start()
    await ride_out_redis(lambda: publisher.publish((STREAM, t) for t in second), stop, Backoff("test publisher"))
    await wait_until(lambda: len(handled) == 400, what="the second half after the restart")
    await wait_until(lambda: _pending_is_zero(publisher), what="acks after the restart")
    stop.set()
    await task
    assert handled == {t.id for t in first + second}
    assert counters["redis_retries"] > 0
    await publisher.close()
    await reader.close()


async def test_lag_is_zero_once_read_to_the_end_after_a_restart_from_a_rewritten_aof(
    private_redis: EmbeddedRedis,
) -> None:
    """Redis 7.0 restores a group's entries-read from the rewritten file's snapshot, and the reads
    replayed after it do not advance it: its own lag then stays at their number forever (the
    chaos run's strategy "backlog" of thousands with every tick applied). 6.2 reports no lag."""
    bus = Bus(connect(private_redis.url))
    await bus.ensure_group(STREAM, "testers")
    await publish_each(bus, [(STREAM, t) for t in ticks(30)])
    delivered = await bus.read([STREAM], "testers", "c1", count=10, block_ms=None)
    await bus.redis.bgrewriteaof()
    await wait_until(lambda: _aof_rewritten(bus), what="the append-only file rewrite")
    delivered += await bus.read([STREAM], "testers", "c1", count=15, block_ms=None)  # replayed from the AOF
    private_redis.stop()  # SIGTERM: Redis flushes its append-only file
    private_redis.start()
    await bus.close()
    bus = Bus(connect(private_redis.url))
    delivered += await bus.read([STREAM], "testers", "c1", count=100, block_ms=None)
    await bus.ack("testers", delivered)
    assert len(delivered) == 30
    assert await bus.health(STREAM, "testers") == StreamHealth(STREAM, "testers", length=30, pending=0, lag=0)
    assert await bus.backlog([STREAM], "testers") == 0
    await bus.close()


async def _aof_rewritten(bus: Bus) -> bool:
    persistence = await bus.redis.info("persistence")
    return not persistence["aof_rewrite_in_progress"] and not persistence["aof_rewrite_scheduled"]


async def test_burst_does_not_stop_at_a_batch_that_was_all_dead_lettered(bus: Bus) -> None:
    await bus.ensure_group(STREAM, "testers")
    for i in range(3):
        await bus.publish_raw(STREAM, {"junk": str(i)})
    await bus.publish((STREAM, t) for t in ticks(5))
    handled: list[str] = []

    async def handle(batch: list[Delivery]) -> None:
        handled.extend(d.event.id for d in batch)

    small = GroupConsumer(
        bus, [STREAM], "testers", "c1", batch_size=3, block_ms=50, claim_idle_ms=300, counters=Counter()
    )
    await small.run(handle, stop=asyncio.Event(), burst=True)
    assert len(handled) == 5
    assert await bus.redis.xlen(dead_letter_stream(STREAM)) == 3


async def test_a_pending_entry_trimmed_away_is_acked_not_dead_lettered(bus: Bus) -> None:
    await bus.ensure_group(STREAM, "testers")
    await bus.publish((STREAM, t) for t in ticks(3))
    await bus.read([STREAM], "testers", "c1", count=3, block_ms=10)
    await bus.redis.xtrim(STREAM, maxlen=0)
    assert await bus.read([STREAM], "testers", "c1", count=10, block_ms=None, pending=True) == []
    assert (await bus.health(STREAM, "testers")).pending == 0
    assert await bus.redis.exists(dead_letter_stream(STREAM)) == 0


async def test_reclaiming_entries_trimmed_away_acks_them_instead_of_failing(bus: Bus) -> None:
    await bus.ensure_group(STREAM, "testers")
    await publish_each(bus, [(STREAM, t) for t in ticks(3)])
    await bus.read([STREAM], "testers", "dead-consumer", count=3, block_ms=10)
    await bus.redis.xtrim(STREAM, maxlen=0)
    assert await bus.reclaim_idle(STREAM, "testers", "survivor", min_idle_ms=0) == []
    assert (await bus.health(STREAM, "testers")).pending == 0
    assert bus.stats["trimmed_before_ack"] == 3  # counted (and logged) on Redis 6.2 and 7 alike


def test_last_errors_keep_only_the_most_recent_entries() -> None:
    errors = LastErrors(bound=3)
    for i in range(5):
        errors[f"{i}-0"] = f"error {i}"
    errors["2-0"] = "again"  # a repeat counts as recent
    assert list(errors) == ["3-0", "4-0", "2-0"]


async def test_idle_consumers_holding_nothing_are_removed_and_busy_ones_kept(bus: Bus) -> None:
    await bus.ensure_group(STREAM, "testers")
    await bus.publish((STREAM, t) for t in ticks(2))
    await bus.read([STREAM], "testers", "holder", count=1, block_ms=None)  # keeps one pending entry
    await bus.read([STREAM], "testers", "idle", count=10, block_ms=None)
    await bus.ack("testers", await bus.read([STREAM], "testers", "idle", count=10, block_ms=None, pending=True))
    await bus.redis.xgroup_createconsumer(STREAM, "testers", "me")
    assert await bus.remove_idle_consumers(STREAM, "testers", idle_ms=0, keep="me") == 1
    names = {c["name"] for c in await bus.redis.xinfo_consumers(STREAM, "testers")}
    assert names == {"holder", "me"}


async def test_values_of_keys_in_many_slots_come_back_in_order(bus: Bus) -> None:
    """Heartbeats and gap records sit in slots of their own: one read of all of them works on a cluster too."""
    keys = [f"heartbeat:strategy:worker-{n}" for n in range(20)]
    for n, key in enumerate(keys[:-1]):
        await bus.redis.set(key, str(n))
    assert await get_many(bus.redis, keys) == [*(str(n) for n in range(19)), None]
    assert await get_many(bus.redis, []) == []


async def test_a_snapshots_hold_keeps_the_entries_after_it_on_every_redis(bus: Bus) -> None:
    stream = tick_stream(0)  # in a partition's slot, as its hold is (one trim script on a cluster)
    await bus.ensure_group(stream, "reader")
    ids = await Bus(bus.redis, ticks_per_entry=1).publish((stream, tick) for tick in ticks(400))  # an entry each
    await bus.redis.xgroup_setid(stream, "reader", ids[-1])
    hold = hold_key(stream)
    assert hold is not None
    await bus.redis.hset(hold, "reader", ids[199])
    await bus.trim_consumed(stream, ["reader"])
    assert len(await bus.redis.xrange(stream, min=f"({ids[199]}", max="+")) == 200
    await bus.redis.hset(hold, "reader", ids[-1])
    await bus.trim_consumed(stream, ["reader"])
    assert await bus.redis.xlen(stream) <= 100  # whole nodes only
    assert hold_key(STREAM) is None  # a stream without a partition's tag has no hold


async def test_ticks_go_several_to_an_entry_per_stream_in_order_up_to_the_bound(bus: Bus) -> None:
    other = "test.other"
    sent = ticks(7)
    mixed = [(STREAM if i % 2 == 0 else other, t) for i, t in enumerate(sent)]
    bounded = Bus(bus.redis, ticks_per_entry=3)
    ids = await bounded.publish(mixed)
    assert len(ids) == 3  # 4 ticks of STREAM in entries of 3 and 1, 3 of the other in one
    assert [len(decode_all(f)) for _, f in await bus.redis.xrange(STREAM)] == [3, 1]
    assert await bus.entries(STREAM) == [t for s, t in mixed if s == STREAM]
    assert await bus.entries(other) == [t for s, t in mixed if s == other]
    assert encode_entries(mixed, 3) == encode_entries(list(mixed), 3)  # the same ticks, the same bytes


async def test_entries_of_schema_version_1_are_still_read(bus: Bus) -> None:
    old, new = ticks(2)
    await bus.ensure_group(STREAM, "testers")
    await bus.publish_raw(STREAM, v1_fields(old))
    await bus.publish([(STREAM, new)])
    got = await bus.read([STREAM], "testers", "c1", count=10, block_ms=10)
    assert [(d.event, d.index) for d in got] == [(old, None), (new, 0)]


async def test_a_malformed_tick_of_a_batch_is_dead_lettered_alone_and_its_neighbours_go_on(bus: Bus) -> None:
    sent = ticks(4)
    fields = encode_entries([(STREAM, t) for t in sent])[0][1]
    rows = json.loads(fields["data"])
    rows[2][4] = -1  # size
    entry_id = await bus.publish_raw(STREAM, {**fields, "data": json.dumps(rows)})
    await bus.ensure_group(STREAM, "testers")
    first = await bus.read([STREAM], "testers", "c1", count=10, block_ms=10)
    again = await bus.read([STREAM], "testers", "c1", count=10, block_ms=None, pending=True)  # as after a crash
    assert [d.event for d in first] == [d.event for d in again] == [sent[0], sent[1], sent[3]]
    assert [d.index for d in first] == [0, 1, 3]
    [record] = await bus.dead_letters(dead_letter_stream(STREAM))  # once, though read twice
    assert (record.entry_id, record.index, record.group) == (entry_id, 2, "testers")
    assert record.reason.startswith("invalid Tick: size: Input should be greater than or equal to")
    assert json.loads(record.payload["data"]) == [rows[2]]  # a single-tick entry of it, as it was
    assert (await bus.health(STREAM, "testers")).pending == 1  # acked with its neighbours
    await bus.ack("testers", first)
    assert (await bus.health(STREAM, "testers")).pending == 0


async def test_an_entry_whose_every_tick_is_malformed_is_acked_with_its_last_dead_letter(bus: Bus) -> None:
    fields = encode_entries([(STREAM, t) for t in ticks(2)])[0][1]
    rows = [[*row[:3], 0, *row[4:]] for row in json.loads(fields["data"])]
    await bus.publish_raw(STREAM, {**fields, "data": json.dumps(rows)})
    await bus.publish([(STREAM, ticks(1, "MSFT")[0])])
    await bus.ensure_group(STREAM, "testers")
    got = await bus.read([STREAM], "testers", "c1", count=1, block_ms=10)
    assert [d.event.symbol for d in got] == ["MSFT"]
    assert [r.index for r in await bus.dead_letters(dead_letter_stream(STREAM))] == [0, 1]
    assert (await bus.health(STREAM, "testers")).pending == 1  # only MSFT's


class CancellationLosingBus(Bus):
    """Its read returns normally when cancelled, as a redis-py command can on Python 3.11 (its
    socket timeout goes through ``asyncio.wait_for``, which drops a cancellation that lands just as
    the reply arrives; see lifecycle.end_if_cancelled)."""

    def __init__(self, client: aioredis.Redis) -> None:
        super().__init__(client)
        self.reading = asyncio.Event()

    async def read(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.reading.set()
        try:
            return await super().read(*args, **kwargs)
        except asyncio.CancelledError:
            return []


async def test_a_consumer_ends_when_its_cancellation_is_lost_in_a_read(redis_url: str) -> None:
    bus = CancellationLosingBus(connect(redis_url))
    reader = GroupConsumer(bus, [STREAM], "testers", "c1", batch_size=50, block_ms=5000, claim_idle_ms=300_000,
                           counters=Counter())  # fmt: skip

    async def handle(batch: list[Delivery]) -> None:
        pass

    stop = asyncio.Event()
    task = asyncio.create_task(reader.run(handle, stop=stop))
    await asyncio.wait_for(bus.reading.wait(), timeout=30)  # blocked in XREADGROUP, nothing to read
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=30)
    stop.set()  # (ends a consumer that read on)
    assert done, "the consumer read on after it was cancelled"
    assert task.cancelled()
    await bus.close()


async def test_commits_made_together_are_each_fenced_and_a_refused_one_writes_nothing(bus: Bus) -> None:
    """A worker's commits made at once (one script call on one Redis, each its own call on a cluster):
    a lost lease or a moved guard among accepted commits refuses only its own, each caller learns its
    own result, and the same commits again (the retry after a lost reply) write nothing twice."""
    bus.commit_together()
    group, tick = "sequencer", ticks(1)[0]
    streams = [tick_stream(p) for p in range(4)]
    ids = [await bus.redis.xadd(stream, {"n": "1"}) for stream in streams]
    for stream in streams:
        await bus.redis.xgroup_create(stream, group, id="0")
    await bus.redis.xreadgroup(group, "me", {streams[3]: ">"})  # partition 3 acks its pending entry
    for partition, owner in [(0, "me"), (1, "thief"), (3, "me")]:  # partition 1 was taken over
        await bus.redis.set(lease_key(group, partition), owner)
    await bus.redis.set(partition_cursor_key("test", 2), "another feed's")  # partition 2's cursor moved on

    def leased(
        partition: int, *, positions: dict[str, str] | None = None, acks: list[tuple[str, str]] | None = None
    ) -> Awaitable[CommitResult]:
        state = {checkpoint_key(group, partition): f"state {partition}"}
        published = [(applied_stream(partition), tick)]
        commit = Commit(publish=published, state=state, positions=positions or {}, acks=acks or [])
        return bus.commit(group, commit, lease=(lease_key(group, partition), "me"))

    def guarded(partition: int) -> Awaitable[CommitResult]:
        cursor = partition_cursor_key("test", partition)
        commit = Commit(publish=[(applied_stream(partition), tick)], state={cursor: "mine"}, guard=(cursor, ""))
        return bus.commit("", commit)

    def together() -> Awaitable[list[CommitResult]]:
        return asyncio.gather(
            leased(0, positions={streams[0]: ids[0]}),
            leased(1, positions={streams[1]: ids[1]}),
            guarded(2),
            leased(3, acks=[(streams[3], ids[3])]),
            guarded(4),
        )

    async def written() -> list[object]:
        lengths = [await bus.redis.xlen(applied_stream(p)) for p in range(5)]
        states = [await bus.redis.get(checkpoint_key(group, p)) for p in range(4)]
        cursors = [await bus.redis.get(partition_cursor_key("test", p)) for p in (2, 4)]
        positions = [await bus.last_delivered_id(stream, group) for stream in streams[:2]]
        return [lengths, states, cursors, positions, await bus.redis.xpending(streams[3], group)]

    applied, lost, stale = CommitResult.APPLIED, CommitResult.LOST_LEASE, CommitResult.STALE
    assert await together() == [applied, lost, stale, applied, applied]
    after = await written()
    assert after[:4] == [
        [1, 0, 0, 1, 1],
        ["state 0", None, None, "state 3"],
        ["another feed's", "mine"],
        [ids[0], "0-0"],
    ]
    assert after[4]["pending"] == 0
    # again, as a retry whose first reply was lost: partition 4's guard now tells it moved on (the feed reloads)
    assert await together() == [applied, lost, stale, applied, stale]
    assert await written() == after
    if not is_cluster(bus.redis):
        assert (bus.stats["commit_calls"], bus.stats["commits_together"]) == (2, 10)


async def test_a_commit_made_together_that_redis_refuses_for_now_fails_as_an_outage(
    private_redis: EmbeddedRedis,
) -> None:
    """Past maxmemory each commit of a batch gets the outage error (RedisRefusedError, which callers
    ride out) a commit made alone would, not a plain script error; and once there is room they apply."""
    bus = Bus(connect(private_redis.url))
    bus.commit_together()
    try:
        for partition in range(2):
            await bus.redis.set(lease_key("sequencer", partition), "me")

        def together() -> Awaitable[list[CommitResult | BaseException]]:
            return asyncio.gather(
                *(
                    bus.commit(
                        "sequencer",
                        Commit(state={checkpoint_key("sequencer", p): "state"}),
                        lease=(lease_key("sequencer", p), "me"),
                    )
                    for p in range(2)
                ),
                return_exceptions=True,
            )

        await bus.redis.config_set("maxmemory", 1)  # every write refused
        refused = await together()
        await bus.redis.config_set("maxmemory", 0)
        assert [type(result) for result in refused] == [RedisRefusedError, RedisRefusedError]
        assert "OOM" in str(refused[0])
        assert await together() == [CommitResult.APPLIED, CommitResult.APPLIED]
    finally:
        await bus.close()


async def test_commands_go_out_as_redis_py_packs_them_and_a_dropped_connection_fails_as_an_outage(
    redis_url: str,
) -> None:
    """The client's connection packs in C and sends without a task per command (bus/connection.py):
    the bytes are redis-py's own, bad input is redis-py's DataError, a command bigger than the socket
    takes at once still goes out whole, and a connection the server dropped fails the next command
    as an outage (then the client connects again)."""
    client = connect_to(redis_url)
    if is_cluster(client):
        await client.aclose()
        pytest.skip("the cluster client keeps redis-py's connections")
    other = connect_to(redis_url)
    try:
        connection = client.connection_pool.make_connection()
        commands = [
            ("EVALSHA", "ab" * 20, 2, "k:{0}", b"k2", 1.5, 0.1, -0.0, 1e20, 10**30, 7, "ü", "", "x" * 7000),
            ("CONFIG GET", "maxmemory"),
            ("XREAD", "COUNT", 500, "BLOCK", 1000, "STREAMS", "ticks:{0}", "0-0"),
        ]
        for command in commands:
            assert b"".join(connection.pack_command(*command)) == b"".join(
                aioredis.Connection.pack_command(connection, *command)
            )
        with pytest.raises(DataError):
            connection.pack_command("SET", "k", True)
        big = "x" * 20_000_000
        await client.set("big", big)
        assert await client.strlen("big") == len(big)
        await other.client_kill_filter(_type="normal", skipme=True)
        with pytest.raises(RECOVERABLE_REDIS_ERRORS):
            await client.get("big")
        assert await client.strlen("big") == len(big)
    finally:
        await client.delete("big")
        await client.aclose()
        await other.aclose()
