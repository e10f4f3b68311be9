"""The storage worker: every tick partition, bars, signals and order streams into PostgreSQL.

Any number of copies run side by side. The partitioned streams (ticks, signals, orders, order
events) are read by lease: each worker owns a share of the partitions (role ``storage``), reads
them with XREAD from the ``storage`` group's position and moves the group after the database commit
(partition_reader.py), so Redis keeps no pending entry, and no XCLAIM in its append-only file, per
tick. The rare streams no partition owns (bars, repaired ticks, gaps, control, equity) are shared
through the same ``storage`` consumer group with XREADGROUP, acked after the commit. Either way a
batch is written atomically (one INSERT ... ON CONFLICT per table, see writer.py), and a batch read
again after a crash writes nothing twice. A database that cannot take writes for now (down, disk
full, read-only, out of memory, lock timeout, cancelled: ``TRANSIENT_DB_ERRORS``) is an outage: the
batch waits and is retried, loudly, and never counts as a failed delivery. Storage also trims every
stream below what all groups still need (retention follows the consumers). Migrations run at
start-up (advisory-locked, so copies starting together are safe).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable

import asyncpg

from tradebot.common.bus import Bus
from tradebot.common.bus.wire import Delivery
from tradebot.common.config import ReadySettings
from tradebot.common.consumer import IDLE_CONSUMER_CLAIMS, GroupConsumer
from tradebot.common.db import TRANSIENT_DB_ERRORS, create_pool
from tradebot.common.in_flight import InFlight
from tradebot.common.lifecycle import Backoff
from tradebot.common.partitions import PartitionedWorker, PartitionSettings, PartitionState
from tradebot.common.runtime import consumer_name, settle_gc
from tradebot.common.runtime import main as run_worker
from tradebot.common.streams import (
    STORAGE_GROUP,
    Role,
    retained_streams,
    storage_group_streams,
    storage_partition_streams,
)
from tradebot.storage.batch import StorageBatch
from tradebot.storage.fragments import spell_loop
from tradebot.storage.partition_reader import StoragePartitionReader, Write
from tradebot.storage.retention import retention_loop
from tradebot.storage.schema import apply_migrations
from tradebot.storage.timescale import TimescaleOptions, database_mode
from tradebot.storage.writer import write_batch

log = logging.getLogger(__name__)
ROLE = Role.STORAGE
POOL_SIZE = 2  # connections to PostgreSQL: the partition readers' writes and the consumer group's
# Batches read and not yet committed across the worker's partition readers: one being written per
# connection and one decoded, ready for the next free one. More would only hold memory.
BATCHES_IN_FLIGHT = POOL_SIZE + 1


async def run(
    settings: ReadySettings, *, stop: asyncio.Event, counters: Counter[str] | None = None, member: str | None = None
) -> None:
    """Persist stream entries until ``stop`` (or burst / max-messages end); ``member`` names this
    worker among the partition owners (default: host and pid)."""
    counters = counters if counters is not None else Counter()
    pool = await _connect_when_ready(settings, stop)
    if pool is None:
        return
    bus = Bus.from_settings(settings)
    bus.commit_together()  # partitions whose writes end in the same turn commit in one script call
    handle = event_writer(pool, counters)
    name = member or consumer_name()
    consumer = GroupConsumer(
        bus,
        storage_group_streams(settings.tick_partitions),
        STORAGE_GROUP,
        name,
        batch_size=settings.bus_batch_size,
        block_ms=settings.bus_block_ms,
        claim_idle_ms=settings.claim_idle_ms,
        counters=counters,
        transient_errors=TRANSIENT_DB_ERRORS,
        retained=retained_streams(settings.tick_partitions),
    )
    owner = partition_owner(bus, settings, name, handle, counters)
    retention = await _start_retention(pool, settings, stop, counters)
    spelling = await _start_spelling(pool, settings, stop, counters)
    # Started: start-up's objects frozen out of every collection, young ones collected less often. Not
    # for a burst run: it drains and ends, often inside its caller (tests, the storage bench), whose
    # whole heap the first full collection would walk (~0.2 s for the bench's 200,000 ticks).
    if not settings.burst:
        settle_gc()
    try:
        most, burst = settings.max_messages, settings.burst
        readers = [
            asyncio.create_task(consumer.run(handle, stop=stop, max_messages=most, burst=burst)),
            asyncio.create_task(owner.run(stop=stop, max_messages=most, burst=burst)),
        ]
        try:
            await asyncio.gather(*readers)
        finally:  # one failed: the other stops too (hands its leases back)
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
    finally:
        jobs = [job for job in (retention, spelling) if job is not None]
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)  # their connections closed before the pool
        await bus.close()
        await pool.close()


def event_writer(
    pool: asyncpg.Pool, counters: Counter[str]
) -> Callable[[StorageBatch | list[Delivery]], Awaitable[None]]:
    """Writes a batch (a partition reader's, or the consumer group's deliveries) idempotently,
    counting new rows per table and duplicates."""

    async def write(batch: StorageBatch | list[Delivery]) -> None:
        if not isinstance(batch, StorageBatch):  # the consumer group's deliveries (the rare streams)
            batch = StorageBatch.of(batch)
        written = await write_batch(pool, batch.ticks, batch.events)
        counters.update({f"rows_{table}": rows for table, rows in written.items()})
        counters["duplicates"] += len(batch) - sum(written.values())

    return write


def partition_owner(
    bus: Bus, settings: ReadySettings, member: str, write: Write, counters: Counter[str]
) -> PartitionedWorker:
    """The lease owner of this worker's share of the partitions, each read by a StoragePartitionReader."""
    config = PartitionSettings(
        role=STORAGE_GROUP,
        partitions=settings.tick_partitions,
        streams_for=storage_partition_streams,
        batch_size=settings.bus_batch_size,
        block_ms=settings.bus_block_ms,
        lease_ttl_ms=settings.lease_ttl_ms,
        positioned=True,
    )

    in_flight = InFlight(BATCHES_IN_FLIGHT, counters, "batches_in_flight_peak")  # shared by every partition it owns

    def new_reader(partition: int) -> StoragePartitionReader:
        idle_ms = settings.claim_idle_ms * IDLE_CONSUMER_CLAIMS
        return StoragePartitionReader(
            bus, config, member, partition, write, counters, idle_consumer_ms=idle_ms, in_flight=in_flight
        )

    return PartitionedWorker(bus, config, member, _no_state, counters, new_reader=new_reader)


def _no_state(partition: int) -> PartitionState:
    raise AssertionError(f"storage keeps no state for partition {partition}: StoragePartitionReader reads it")


async def _start_retention(
    pool: asyncpg.Pool, settings: ReadySettings, stop: asyncio.Event, counters: Counter[str]
) -> asyncio.Task[None] | None:
    """On plain PostgreSQL with TICK_RETENTION set, the retention job (TimescaleDB has a policy)."""
    if settings.tick_retention is None or settings.burst or await database_mode(pool) != "postgresql":
        return None
    return asyncio.create_task(retention_loop(pool, settings.tick_retention, stop, counters))


async def _start_spelling(
    pool: asyncpg.Pool, settings: ReadySettings, stop: asyncio.Event, counters: Counter[str]
) -> asyncio.Task[None] | None:
    """On plain PostgreSQL, the kept minutes' JSON spelled as they close (storage/fragments.py)."""
    if settings.burst or await database_mode(pool) != "postgresql":
        return None
    return asyncio.create_task(spell_loop(settings.database_url, stop, counters))


async def _connect_when_ready(settings: ReadySettings, stop: asyncio.Event) -> asyncpg.Pool | None:
    """Migrate and open the pool, waiting out a database that is down or restarting; None if stopped."""
    backoff = Backoff("postgresql (storage start-up)")
    while not stop.is_set():
        try:
            await apply_migrations(settings.database_url, options=TimescaleOptions.from_settings(settings))
            return await create_pool(settings.database_url, max_size=POOL_SIZE, application_name="tradebot-storage")
        except TRANSIENT_DB_ERRORS as error:
            await backoff.wait(error, stop)
    return None


def main() -> None:
    """Run the storage worker as a process."""
    run_worker(ROLE, run)


if __name__ == "__main__":
    main()
