"""The storage worker: every tick partition, bars, signals and order streams into PostgreSQL.

Stateless, so any number of copies share the ``storage`` consumer group. Each batch is written
atomically (one INSERT ... ON CONFLICT per table, see writer.py) and acked only after the commit;
a batch redelivered after a crash writes nothing twice. A database that cannot take writes for now (down,
disk full, read-only, out of memory, lock timeout, cancelled: ``TRANSIENT_DB_ERRORS``) is an
outage: the batch waits and is retried, loudly, and never counts as a failed delivery. Storage
also trims every stream below what all groups still need (retention follows the consumers).
Migrations run at start-up (advisory-locked, so copies starting together are safe).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import asyncpg

from tradebot.common.bus import Bus, Delivery
from tradebot.common.config import ReadySettings
from tradebot.common.consumer import GroupConsumer
from tradebot.common.db import TRANSIENT_DB_ERRORS, create_pool
from tradebot.common.lifecycle import Backoff
from tradebot.common.runtime import consumer_name
from tradebot.common.runtime import main as run_worker
from tradebot.common.streams import STORAGE_GROUP, Role, retained_streams, storage_streams
from tradebot.storage.retention import retention_loop
from tradebot.storage.schema import apply_migrations
from tradebot.storage.timescale import TimescaleOptions, database_mode
from tradebot.storage.writer import write_events

log = logging.getLogger(__name__)
ROLE = Role.STORAGE


async def run(settings: ReadySettings, *, stop: asyncio.Event, counters: Counter[str] | None = None) -> None:
    """Persist stream entries until ``stop`` (or burst / max-messages end)."""
    counters = counters if counters is not None else Counter()
    pool = await _connect_when_ready(settings, stop)
    if pool is None:
        return
    bus = Bus.from_settings(settings)

    async def handle(batch: list[Delivery]) -> None:
        written = await write_events(pool, [delivery.event for delivery in batch])
        new_rows = sum(written.values())
        counters.update({f"rows_{table}": rows for table, rows in written.items()})
        counters["duplicates"] += len(batch) - new_rows

    consumer = GroupConsumer(
        bus,
        storage_streams(settings.tick_partitions),
        STORAGE_GROUP,
        consumer_name(),
        batch_size=settings.bus_batch_size,
        block_ms=settings.bus_block_ms,
        claim_idle_ms=settings.claim_idle_ms,
        counters=counters,
        transient_errors=TRANSIENT_DB_ERRORS,
        retained=retained_streams(settings.tick_partitions),
    )
    retention = await _start_retention(pool, settings, stop, counters)
    try:
        await consumer.run(handle, stop=stop, max_messages=settings.max_messages, burst=settings.burst)
    finally:
        if retention is not None:
            retention.cancel()
        await bus.close()
        await pool.close()


async def _start_retention(
    pool: asyncpg.Pool, settings: ReadySettings, stop: asyncio.Event, counters: Counter[str]
) -> asyncio.Task[None] | None:
    """On plain PostgreSQL with TICK_RETENTION set, the retention job (TimescaleDB has a policy)."""
    if settings.tick_retention is None or settings.burst or await database_mode(pool) != "postgresql":
        return None
    return asyncio.create_task(retention_loop(pool, settings.tick_retention, stop, counters))


async def _connect_when_ready(settings: ReadySettings, stop: asyncio.Event) -> asyncpg.Pool | None:
    """Migrate and open the pool, waiting out a database that is down or restarting; None if stopped."""
    backoff = Backoff("postgresql (storage start-up)")
    while not stop.is_set():
        try:
            await apply_migrations(settings.database_url, options=TimescaleOptions.from_settings(settings))
            return await create_pool(settings.database_url, max_size=2, application_name="tradebot-storage")
        except TRANSIENT_DB_ERRORS as error:
            await backoff.wait(error, stop)
    return None


def main() -> None:
    """Run the storage worker as a process."""
    run_worker(ROLE, run)


if __name__ == "__main__":
    main()
