"""Storage as a partition lease owner: XREAD from its group's position, the group moved after the
database commit; nothing pending, no XCLAIM in the AOF, every tick stored once through crashes,
kills, rebalancing and the upgrade from a release that read with XREADGROUP."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from tests.helpers import wait_until
from tests.worker_processes import WorkerProcesses, worker_environment
from tradebot.bench.footprint import aof_files, breakdown
from tradebot.common.bus import Bus
from tradebot.common.bus.connection import connect, get_many
from tradebot.common.bus.wire import decode
from tradebot.common.codec import encode_event
from tradebot.common.config import Settings
from tradebot.common.db import create_pool
from tradebot.common.embedded import EmbeddedRedis
from tradebot.common.in_flight import InFlight
from tradebot.common.models import Order, OrderEvent, Signal, Tick
from tradebot.common.partitions import PartitionSettings, ReaderEnd
from tradebot.common.streams import (
    ORDER_EVENTS,
    ORDERS_NEW,
    SCHEMA_VERSION,
    STORAGE_GROUP,
    dead_letter_stream,
    lease_key,
    signal_stream,
    storage_partition_streams,
    tick_stream,
    tick_stream_for,
)
from tradebot.storage import timeseries_service
from tradebot.storage.batch import StorageBatch
from tradebot.storage.partition_reader import StoragePartitionReader
from tradebot.storage.schema import apply_migrations
from tradebot.storage.writer import write_events

START = datetime(2024, 3, 11, 14, 30, tzinfo=UTC)
SYMBOLS = ["AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "TSLA", "JPM", "V", "XOM", "KO", "PEP"]


@pytest.fixture
def redis_version(redis_target: str) -> str:
    """Every test here runs on Redis 6.2, on Redis 7 and on a Redis Cluster (the AOF one on its own 6.2)."""
    return redis_target


@pytest.fixture
def redis_url(versioned_redis_url: str) -> str:
    return versioned_redis_url


def ticks(count: int, first: int = 0) -> list[Tick]:
    """``count`` trades spread over every symbol, ids unique across calls with different ``first``."""
    return [
        Tick.create(SYMBOLS[i % len(SYMBOLS)], 100 + i % 9, 1, START + timedelta(seconds=i), source="t", trade_id=i)
        for i in range(first, first + count)
    ]


def storage_settings(settings: Settings, database_url: str, partitions: int, **update: object) -> Settings:
    changes = {"database_url": database_url, "tick_partitions": partitions, "bus_batch_size": 100, "bus_block_ms": 50}
    return settings.model_copy(update={**changes, **update})


async def publish_ticks(bus: Bus, sent: list[Tick], partitions: int) -> None:
    """One tick per entry, so a batch of n entries is n ticks (what the tests count)."""
    single = Bus(bus.redis, ticks_per_entry=1)
    await single.publish((tick_stream_for(tick.symbol, partitions), tick) for tick in sent)


async def stored_ticks(database_url: str) -> tuple[int, int]:
    """(rows, distinct ids) in the ticks table."""
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow("SELECT count(*) AS n, count(DISTINCT id) AS d FROM ticks")
        return int(row["n"]), int(row["d"])
    finally:
        await conn.close()


async def assert_caught_up(bus: Bus, partitions: int) -> None:
    """Every partition stream: the group at its newest entry, nothing pending, no lag."""
    for partition in range(partitions):
        for stream in storage_partition_streams(partition):
            health = await bus.health(stream, STORAGE_GROUP)
            assert (health.pending, health.lag) == (0, 0), stream
            newest = (await bus.tails([stream]))[stream]
            if newest != "0-0":
                assert await bus.last_delivered_id(stream, STORAGE_GROUP) == newest, stream


@pytest.fixture
async def migrated(clean_database: str) -> str:
    await apply_migrations(clean_database)
    return clean_database


@pytest.fixture
async def pool(migrated: str) -> AsyncIterator[asyncpg.Pool]:
    created = await create_pool(migrated, max_size=2)
    yield created
    await created.close()


async def test_storage_owns_its_partitions_keeps_nothing_pending_and_writes_no_xclaim(
    private_redis: EmbeddedRedis, migrated: str, settings: Settings, redis_version: str
) -> None:
    from tests.test_storage_writer import trading_events

    if redis_version != "6.2":
        pytest.skip("it reads the AOF of a Redis of its own (6.2): the other targets would repeat it")
    run_settings = storage_settings(settings, migrated, 4, redis_url=private_redis.url, redis_cluster=False, burst=True)
    bus = Bus(connect(private_redis.url))
    try:
        signal, order, *order_events = trading_events()
        await publish_ticks(bus, ticks(1200), 4)
        await bus.publish([(signal_stream(2), signal), (ORDERS_NEW, order), *((ORDER_EVENTS, e) for e in order_events)])
        before = await aof_files(bus)
        counters: Counter = Counter()
        await timeseries_service.run(run_settings, stop=asyncio.Event(), counters=counters)
        after = await aof_files(bus)
        assert await stored_ticks(migrated) == (1200, 1200)
        assert counters["handled"] == 1200 + 2 + len(order_events)
        await assert_caught_up(bus, 4)
        families = breakdown(before, after, 1)
        assert not [family for family in families if family.startswith(("XCLAIM", "XACK"))], families
        assert "XGROUP price.ticks:{#}" in families  # the group moved by the commit (SETID)
        assert await bus.redis.exists(*(lease_key(STORAGE_GROUP, p) for p in range(4))) == 0  # handed back
    finally:
        await bus.close()


async def test_a_batch_stored_but_not_committed_is_stored_again_once(
    bus: Bus, pool: asyncpg.Pool, migrated: str
) -> None:
    """A crash (here: a lease lost) between the database commit and the group's move: the old owner
    moves nothing, the new one reads the batch again and the writer stores nothing twice."""
    config = PartitionSettings(STORAGE_GROUP, 1, storage_partition_streams, batch_size=50, block_ms=50)
    lease = lease_key(STORAGE_GROUP, 0)
    await publish_ticks(bus, ticks(120), 1)
    stale_counters: Counter = Counter()
    write = timeseries_service.event_writer(pool, stale_counters)

    async def write_then_lose_the_lease(batch: StorageBatch) -> None:
        await write(batch)
        await bus.redis.set(lease, "new-owner")  # it expired while PostgreSQL committed

    await bus.redis.set(lease, "old-owner")
    stale = StoragePartitionReader(
        bus, config, "old-owner", 0, write_then_lose_the_lease, stale_counters, idle_consumer_ms=60_000
    )
    assert await stale.run(asyncio.Event(), burst=True, max_messages=None) is ReaderEnd.LOST
    assert await stored_ticks(migrated) == (50, 50)
    assert await bus.last_delivered_id(tick_stream(0), STORAGE_GROUP) == "0-0"  # moved nothing
    assert (stale_counters["handled"], stale_counters["fenced"]) == (0, 1)

    counters: Counter = Counter()
    owner = StoragePartitionReader(
        bus, config, "new-owner", 0, timeseries_service.event_writer(pool, counters), counters, idle_consumer_ms=60_000
    )
    assert await owner.run(asyncio.Event(), burst=True, max_messages=None) is ReaderEnd.DRAINED
    assert await stored_ticks(migrated) == (120, 120)
    assert (counters["handled"], counters["duplicates"], counters["rows_ticks"]) == (120, 50, 70)
    await assert_caught_up(bus, 1)


async def test_a_tick_the_database_rejects_is_dead_lettered_alone_and_its_neighbours_are_stored(
    bus: Bus, pool: asyncpg.Pool, migrated: str
) -> None:
    """A tick that passes validation but that PostgreSQL refuses (a NUL byte in its id), in a
    tick-batch entry: the batch is retried event by event, that tick alone is dead-lettered with
    its index and the database's reason, its neighbours are stored, and the group moves on."""
    config = PartitionSettings(STORAGE_GROUP, 1, storage_partition_streams, batch_size=50, block_ms=50)
    sent = ticks(5)
    sent[3] = sent[3].model_copy(update={"id": "bad\x00id"})
    [entry_id] = await bus.publish((tick_stream(0), tick) for tick in sent)
    await bus.redis.set(lease_key(STORAGE_GROUP, 0), "owner")
    counters: Counter = Counter()
    write = timeseries_service.event_writer(pool, counters)
    reader = StoragePartitionReader(bus, config, "owner", 0, write, counters, idle_consumer_ms=60_000)
    assert await reader.run(asyncio.Event(), burst=True, max_messages=None) is ReaderEnd.DRAINED
    assert await stored_ticks(migrated) == (4, 4)
    [record] = await bus.dead_letters(dead_letter_stream(tick_stream(0)))
    assert (record.entry_id, record.index, record.group) == (entry_id, 3, STORAGE_GROUP)
    assert record.reason.startswith(f"rejected {bus.max_deliveries} times by the database"), record.reason
    assert decode(record.payload) == sent[3]  # the tick alone, as `tradebot dlq replay` re-publishes it
    assert (counters["handled"], counters["rows_ticks"]) == (5, 4)
    await assert_caught_up(bus, 1)


async def test_readers_sharing_one_batch_in_flight_store_everything_and_give_the_permit_back(
    bus: Bus, pool: asyncpg.Pool, migrated: str
) -> None:
    """The worker's readers share a bound on batches read and not yet committed: with room for one,
    three partitions' readers take turns (none waits for a read-ahead it cannot get), every tick is
    stored once, and the permit is free again once they end."""
    partitions = 3
    config = PartitionSettings(STORAGE_GROUP, partitions, storage_partition_streams, batch_size=20, block_ms=50)
    await publish_ticks(bus, ticks(600), partitions)
    in_flight = InFlight(1)
    counters: Counter = Counter()
    write = timeseries_service.event_writer(pool, counters)
    readers = []
    for partition in range(partitions):
        await bus.redis.set(lease_key(STORAGE_GROUP, partition), "owner")
        reader = StoragePartitionReader(
            bus, config, "owner", partition, write, counters, idle_consumer_ms=60_000, in_flight=in_flight
        )
        readers.append(reader.run(asyncio.Event(), burst=True, max_messages=None))
    assert await asyncio.gather(*readers) == [ReaderEnd.DRAINED] * partitions
    assert await stored_ticks(migrated) == (600, 600)
    assert (counters["handled"], counters["rows_ticks"]) == (600, 600)
    assert (in_flight.held, in_flight.peak) == (0, 1)
    await assert_caught_up(bus, partitions)


@pytest.mark.timeout(420)  # above its own waits' deadlines, which bound a hang on a loaded machine
async def test_a_storage_worker_killed_mid_batch_loses_and_doubles_nothing(
    bus: Bus, migrated: str, settings: Settings, tmp_path: Path
) -> None:
    total = 30_000
    await publish_ticks(bus, ticks(total), 4)
    env = worker_environment(
        storage_settings(settings, migrated, 4), tick_partitions=4, bus_batch_size=200, lease_ttl_ms=1500
    )
    processes = WorkerProcesses(tmp_path)
    try:
        first = processes.start("tradebot.storage.timeseries_service", env)

        async def some_stored() -> bool:
            return (await stored_ticks(migrated))[0] >= 1000

        await wait_until(some_stored, timeout=120, what=f"storage to store ticks\n{processes.logs()}")
        processes.kill(first)
        stored_at_kill = (await stored_ticks(migrated))[0]
        processes.start("tradebot.storage.timeseries_service", env)

        async def all_stored() -> bool:
            return (await stored_ticks(migrated))[0] >= total

        await wait_until(all_stored, timeout=180, what=f"every tick to be stored\n{processes.logs()}")
        assert await stored_ticks(migrated) == (total, total)
        await wait_until(lambda: _caught_up(bus, 4), timeout=30, what="every group to reach its stream's end")
        await assert_caught_up(bus, 4)
        assert stored_at_kill < total, "the kill came after everything was stored: it proved nothing"
    finally:
        processes.stop_all()


@pytest.mark.timeout(420)  # above its own waits' deadlines, which bound a hang on a loaded machine
async def test_two_storage_workers_split_the_partitions_and_a_third_joining_and_leaving_keeps_exactly_once(
    bus: Bus, migrated: str, settings: Settings
) -> None:
    partitions = 6
    run_settings = storage_settings(settings, migrated, partitions)
    stops = {name: asyncio.Event() for name in ("s1", "s2", "s3")}
    counters = {name: Counter() for name in stops}

    def start(name: str) -> asyncio.Task[None]:
        worker = timeseries_service.run(run_settings, stop=stops[name], counters=counters[name], member=name)
        return asyncio.create_task(worker)

    def owners_are(*expected: str) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            held = await get_many(bus.redis, [lease_key(STORAGE_GROUP, p) for p in range(partitions)])
            return {owner for owner in held if owner} == set(expected) and all(held)

        return check

    workers = [start("s1"), start("s2")]
    try:
        await publish_ticks(bus, ticks(3000), partitions)
        await wait_until(owners_are("s1", "s2"), timeout=60, what="s1 and s2 to share the leases")
        workers.append(start("s3"))
        await wait_until(owners_are("s1", "s2", "s3"), timeout=60, what="s3 to take its share")
        await publish_ticks(bus, ticks(3000, first=3000), partitions)
        stops["s3"].set()
        await workers[2]
        await wait_until(owners_are("s1", "s2"), timeout=60, what="s1 and s2 to take s3's share")
        await publish_ticks(bus, ticks(3000, first=6000), partitions)

        async def all_stored() -> bool:
            return (await stored_ticks(migrated))[0] >= 9000

        await wait_until(all_stored, timeout=120, what="every tick to be stored")
        assert await stored_ticks(migrated) == (9000, 9000)
        assert sum(c["rows_ticks"] for c in counters.values()) == 9000
        assert all(c["partitions_acquired"] for c in counters.values())
        await wait_until(lambda: _caught_up(bus, partitions), timeout=30, what="every group to reach its stream's end")
        await assert_caught_up(bus, partitions)
    finally:
        for stop in stops.values():
            stop.set()
        await asyncio.gather(*workers, return_exceptions=True)


async def test_storage_takes_over_what_an_older_release_left_pending(
    bus: Bus, pool: asyncpg.Pool, migrated: str, settings: Settings
) -> None:
    """A release that read with XREADGROUP left entries pending (delivered, never stored) behind one
    it had stored and acked: they are stored after the upgrade, in order, and leave the pending list."""
    stream = tick_stream(0)
    await publish_ticks(bus, ticks(100), 1)
    await bus.ensure_group(stream, STORAGE_GROUP)
    await bus.read([stream], STORAGE_GROUP, "oldhost-1", count=30, block_ms=None)  # it died holding these
    stored = await bus.read([stream], STORAGE_GROUP, "oldhost-2", count=30, block_ms=None)
    await write_events(pool, [delivery.event for delivery in stored])
    await bus.ack(STORAGE_GROUP, stored)
    assert (await bus.health(stream, STORAGE_GROUP)).pending == 30

    counters: Counter = Counter()
    run_settings = storage_settings(settings, migrated, 1, burst=True)
    await timeseries_service.run(run_settings, stop=asyncio.Event(), counters=counters)
    assert await stored_ticks(migrated) == (100, 100)
    assert (counters["rows_ticks"], counters["duplicates"]) == (70, 30)  # those after the oldest pending, again
    await assert_caught_up(bus, 1)


async def _caught_up(bus: Bus, partitions: int) -> bool:
    streams = [stream for p in range(partitions) for stream in storage_partition_streams(p)]
    return await bus.backlog(streams, STORAGE_GROUP) == 0


async def test_signals_orders_and_fills_are_stored_as_pydantic_reads_them_and_the_invalid_dead_lettered(
    bus: Bus, pool: asyncpg.Pool, migrated: str
) -> None:
    """The storage reader's strict decoders (codec.wire_event) and pydantic agree on every entry:
    what the strict one takes is stored with pydantic's values, what only pydantic's lax rules
    accept (a price as text, a seventh fractional digit, a limit order) is stored as pydantic reads
    it, and what pydantic refuses is dead-lettered with pydantic's reason."""
    config = PartitionSettings(STORAGE_GROUP, 1, storage_partition_streams, batch_size=50, block_ms=50)
    signal = Signal(
        id="sig-1", symbol="AAPL", timestamp=START, side="buy", price=101.5, confidence=0.25, strategy="m", tick_id="t"
    )
    order = Order.from_signal(signal, 3.0)
    fill = OrderEvent(
        id="fill-1", symbol="AAPL", timestamp=START, client_order_id=order.id, status="filled", side="buy",
        quantity=3.0, price=101.52, commission=0.01,
    )  # fmt: skip
    lax = [
        (signal_stream(0), "Signal", {**json.loads(encode_event(signal)), "id": "sig-2", "price": "101.5"}),
        (
            signal_stream(0),
            "Signal",
            {**json.loads(encode_event(signal)), "id": "sig-3", "timestamp": "2024-03-11T14:30:00.1234569Z"},
        ),
        (
            ORDERS_NEW,
            "Order",
            {**json.loads(encode_event(order)), "id": "co-2", "order_type": "limit", "limit_price": 100.0},
        ),
        (
            ORDER_EVENTS,
            "OrderEvent",
            {**json.loads(encode_event(fill)), "id": "fill-2", "timestamp": "2024-03-11T10:30:00-04:00"},
        ),
    ]
    invalid = [
        (signal_stream(0), "Signal", {**json.loads(encode_event(signal)), "id": "sig-4", "confidence": 2}),
        (ORDERS_NEW, "Order", {**json.loads(encode_event(order)), "id": "co-3", "quantity": -1}),
        (ORDER_EVENTS, "OrderEvent", {**json.loads(encode_event(fill)), "id": "fill-3", "price": None}),
        (ORDER_EVENTS, "OrderEvent", {**json.loads(encode_event(fill)), "id": "fill-4", "colour": "red"}),
    ]
    await bus.publish([(signal_stream(0), signal), (ORDERS_NEW, order), (ORDER_EVENTS, fill)])
    sent: dict[tuple[str, str], dict[str, str]] = {}
    malformed = {"v": SCHEMA_VERSION, "type": "Order", "data": "{not json"}
    for stream, kind, fields in [*lax, *invalid, (ORDERS_NEW, "", {})]:
        entry = {"v": SCHEMA_VERSION, "type": kind, "data": json.dumps(fields)} if kind else malformed
        sent[stream, await bus.redis.xadd(stream, entry)] = entry
    await bus.redis.set(lease_key(STORAGE_GROUP, 0), "owner")
    counters: Counter = Counter()
    reader = StoragePartitionReader(
        bus, config, "owner", 0, timeseries_service.event_writer(pool, counters), counters, idle_consumer_ms=60_000
    )
    assert await reader.run(asyncio.Event(), burst=True, max_messages=None) is ReaderEnd.DRAINED

    stored = {table: await stored_rows(pool, table) for table in ("signals", "orders", "fills")}
    valid = [signal, order, fill, *(decode({"v": SCHEMA_VERSION, "type": k, "data": json.dumps(f)}) for _, k, f in lax)]
    await pool.execute("TRUNCATE signals, orders, fills")
    await write_events(pool, valid)  # the same events as pydantic reads them, written as they always were
    assert stored == {table: await stored_rows(pool, table) for table in ("signals", "orders", "fills")}
    assert [len(rows) for rows in stored.values()] == [3, 2, 2]

    records = [
        (stream, record)
        for stream in (signal_stream(0), ORDERS_NEW, ORDER_EVENTS)
        for record in await bus.dead_letters(dead_letter_stream(stream))
    ]
    assert len(records) == 5
    for stream, record in records:
        with pytest.raises(ValueError, match=r"^invalid ") as refused:
            decode(sent[stream, record.entry_id])
        assert record.reason == str(refused.value)
    assert {record.reason.split(":")[0] for _, record in records} == {
        "invalid Signal",
        "invalid Order",
        "invalid OrderEvent",
    }
    await assert_caught_up(bus, 1)


async def stored_rows(pool: asyncpg.Pool, table: str) -> list[tuple[object, ...]]:
    """Every row of ``table`` in id order, each value as its text (what PostgreSQL stores, exactly)."""
    rows = await pool.fetch(f"SELECT * FROM {table} ORDER BY id")
    return [tuple(None if value is None else str(value) for value in row.values()) for row in rows]
