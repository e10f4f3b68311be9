"""Storage as the lease owner of a partition: XREAD from its group's position, write, move the group.

Each storage worker is a member of role ``storage`` (tradebot/common/partitions.py): it holds the
leases of its share of the partitions and reads each owned partition's streams (ticks, signals,
orders; all in the partition's slot) with XREAD from the ``storage`` group's last-delivered id. A
batch goes to PostgreSQL (the idempotent writer, ON CONFLICT) and only after the database commit
does a lease-fenced script move the group past it (XGROUP SETID) and write the dead-letter records
of the entries set aside. Nothing is ever pending, so Redis writes no XCLAIM per entry read to its
append-only file; a crash between the database commit and the move re-reads the batch, and the
writer stores nothing twice. A worker that lost its lease moves nothing. The group stays, so
retention, lag and /health see storage as before.

While a batch is written, the next one is read (at most one batch ahead, from where the current one
ends): the worker decodes while PostgreSQL works. The readers of one worker share a bound on the
batches read and not yet committed (``in_flight``, tradebot/common/in_flight.py: the writer's
connections plus one), so eight partitions behind do not hold sixteen decoded batches of up to
BUS_BATCH_SIZE × BUS_TICKS_PER_ENTRY ticks while two connections write; a reader that finds no
permit free reads its next batch after its commit instead of ahead. A database that cannot take
writes for now
(``TRANSIENT_DB_ERRORS``) is waited out, the batch held; an entry the database rejects on its own
(tried ``max_deliveries`` times) is dead-lettered with the reason, in the commit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable

from tradebot.common.bus import Bus
from tradebot.common.bus.connection import RECOVERABLE_REDIS_ERRORS
from tradebot.common.bus.dead_letters import dead_letter_record
from tradebot.common.bus.publishing import Commit
from tradebot.common.bus.wire import Delivery, RawEntry, encode
from tradebot.common.consumer import RETENTION_INTERVAL_S
from tradebot.common.db import TRANSIENT_DB_ERRORS
from tradebot.common.in_flight import InFlight, Taken
from tradebot.common.lifecycle import Backoff
from tradebot.common.partitions import PartitionSettings, ReaderEnd
from tradebot.common.streams import lease_key, readers_of
from tradebot.storage.batch import Read, StorageBatch, read_batch

log = logging.getLogger(__name__)

Write = Callable[[StorageBatch], Awaitable[None]]


class StoragePartitionReader:
    """Persists one owned partition's streams (a :class:`PartitionRunner`); see the module docstring."""

    def __init__(
        self,
        bus: Bus,
        config: PartitionSettings,
        member: str,
        partition: int,
        write: Write,
        counters: Counter[str],
        *,
        idle_consumer_ms: int,
        in_flight: InFlight | None = None,
    ):
        self.bus = bus
        self.config = config
        self.partition = partition
        self.write = write
        self.counters = counters
        self.streams = config.streams_for(partition)
        self.lease = (lease_key(config.role, partition), member)
        self.idle_consumer_ms = idle_consumer_ms
        # Batches read and not yet committed, shared by the worker's readers (default: this reader's
        # own two, the batch and the one read ahead): what bounds the decoded ticks in memory.
        self.in_flight = in_flight if in_flight is not None else InFlight(2)
        self._db_backoff = Backoff(f"postgresql ({config.role} partition {partition})")
        self._next_retention = 0.0

    async def run(self, stop: asyncio.Event, *, burst: bool, max_messages: int | None) -> ReaderEnd:
        """Persist until stopped; on a Redis error it ends and the worker takes the partition up again."""
        try:
            return await self._drain(stop, burst=burst, max_messages=max_messages)
        except RECOVERABLE_REDIS_ERRORS as error:
            log.warning(
                "storage partition %d: redis error (%s); the partition will be taken up again", self.partition, error
            )
            return ReaderEnd.ERROR

    async def _drain(self, stop: asyncio.Event, *, burst: bool, max_messages: int | None) -> ReaderEnd:
        role = self.config.role
        for stream in self.streams:
            await self.bus.ensure_group(stream, role)
        # entries an older release (XREADGROUP) left pending come first, in order
        positions = await self.bus.take_positions(self.streams, role, self.lease)
        ahead: asyncio.Task[Read | None] | None = None
        permits = Taken(self.in_flight)  # one per batch read and not yet committed
        try:
            while not stop.is_set():
                if max_messages is not None and self.counters["handled"] >= max_messages:
                    return ReaderEnd.STOPPED
                if ahead is None and not await permits.take(stop):
                    break  # stopped while waiting for room: nothing read
                read, ahead = await (ahead if ahead is not None else self._read(positions)), None
                if read is None:
                    return self._lost()
                batch, rejected, ended = read
                if not ended:
                    permits.give()
                    if burst or time.monotonic() >= self._next_retention:
                        await self._keep_retention()
                    if burst:
                        return ReaderEnd.DRAINED
                    await self.bus.wait_for_entries(positions, self.config.block_ms, stop)
                    continue
                after = {**positions, **ended}
                ahead = await self._read_ahead(permits, after)
                failed = await self._write(batch, stop)
                if failed is None:
                    return ReaderEnd.STOPPED  # stopped while the database was away: the group did not move
                if not await self._commit(batch, [*rejected, *failed], ended):
                    return self._lost()
                del batch, read  # its memory goes before the next read comes in
                permits.give()
                positions = after
                await self._keep_retention_when_due()
            return ReaderEnd.STOPPED
        finally:
            if ahead is not None:
                ahead.cancel()
                await asyncio.gather(ahead, return_exceptions=True)
            permits.give_all()

    async def _read_ahead(self, permits: Taken, after: dict[str, str]) -> asyncio.Task[Read | None] | None:
        """The next batch read while this one is written, if a permit is free right now (never
        waiting for one: this batch is ready to write); else it is read after the commit."""
        if not permits.take_if_free():
            return None
        return asyncio.create_task(self._read(after))

    async def _read(self, positions: dict[str, str]) -> Read | None:
        return await read_batch(self.bus, positions, self.lease, count=self.config.batch_size)

    def _lost(self) -> ReaderEnd:
        log.warning("storage lost the lease on partition %d; leaving it to the new owner", self.partition)
        self.counters["fenced"] += 1
        return ReaderEnd.LOST

    async def _write(self, batch: StorageBatch, stop: asyncio.Event) -> list[tuple[RawEntry, str]] | None:
        """Write the batch, waiting out database outages; returns the entries the database rejects
        on their own (for the dead-letter stream), or None if stopped before it could write."""
        while True:
            try:
                failed = await self._effect(batch)
                self._db_backoff.succeeded()
                return failed
            except TRANSIENT_DB_ERRORS as error:
                if stop.is_set():
                    return None
                self.counters["effect_retries"] += 1
                await self._db_backoff.wait(error, stop)

    async def _effect(self, batch: StorageBatch) -> list[tuple[RawEntry, str]]:
        """The whole batch at once, or, when it fails, entry by entry to set the culprit aside.

        Transient errors propagate from either path: they say nothing about the entries.
        """
        if not batch:
            return []
        try:
            await self.write(batch)
            return []
        except TRANSIENT_DB_ERRORS:
            raise
        except Exception as error:  # noqa: BLE001 - isolate the entry the database rejects below
            log.warning("batch of %d failed (%s); retrying entry by entry", len(batch), error)
        failed = []
        for delivery in batch.deliveries():
            reason = await self._write_alone(delivery)
            if reason is not None:  # the wire form, so `tradebot dlq replay` can re-publish it
                entry = RawEntry(delivery.stream, delivery.entry_id, encode(delivery.event), delivery.index)
                failed.append((entry, reason))
        return failed

    async def _write_alone(self, delivery: Delivery) -> str | None:
        """None once the entry is written; the reason after ``max_deliveries`` rejections."""
        attempts = max(1, self.bus.max_deliveries)
        for attempt in range(1, attempts + 1):
            try:
                await self.write(StorageBatch.of([delivery]))
                return None
            except TRANSIENT_DB_ERRORS:
                raise
            except Exception as error:  # noqa: BLE001 - a deterministic failure would repeat forever
                self.counters["failed"] += 1
                if attempt == attempts:
                    return f"rejected {attempts} times by the database; last error: {type(error).__name__}: {error}"
        return None

    async def _commit(self, batch: StorageBatch, failed: list[tuple[RawEntry, str]], ended: dict[str, str]) -> bool:
        """Move the group of each stream read to where its read ended (only those: a retried commit
        tells it already applied by the first one's position) and record the batch's dead letters,
        only while the lease is ours."""
        role = self.config.role
        records = [dead_letter_record(e.stream, e.entry_id, role, why, e.fields, e.row) for e, why in failed]
        if not await self.bus.commit(role, Commit(positions=ended, records=records), lease=self.lease):
            return False
        for entry, reason in failed:
            self.bus.stats["dead_lettered"] += 1
            tick = "" if entry.row is None else f" tick {entry.row}"
            log.warning("dead-lettered %s %s%s (group %s): %s", entry.stream, entry.entry_id, tick, role, reason)
        self.counters["handled"] += len(batch)
        return True

    async def _keep_retention_when_due(self) -> None:
        if time.monotonic() >= self._next_retention:
            await self._keep_retention()

    async def _keep_retention(self) -> None:
        """Trim what every group has finished, and forget the consumers of an older release (this
        reader is none: XREAD and XGROUP SETID name no consumer)."""
        self._next_retention = time.monotonic() + RETENTION_INTERVAL_S
        for stream in self.streams:
            self.counters["trimmed"] += await self.bus.trim_consumed(stream, readers_of(stream, self.config.partitions))
            self.counters["idle_consumers_removed"] += await self.bus.remove_idle_consumers(
                stream, self.config.role, idle_ms=self.idle_consumer_ms, keep=""
            )
