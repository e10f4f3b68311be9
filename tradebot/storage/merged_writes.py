"""The batches of a storage worker's partition readers written together: group commit.

Each statement has a fixed cost besides its rows (PostgreSQL's executor and the tick triggers'
per-symbol upserts, the worker's round trip and encoding): in 450-tick batches ~1.8 µs a tick of
PostgreSQL and ~0.9 µs of the worker more than in 1,800-tick ones (docs/BENCHMARKS.md, "Tenth
round, e2e"). So the batches that a worker's partition readers hand over while its statements run
(at most two at once, one per connection of its pool) wait for the next one to end and are
written by one statement, as one batch. A batch that finds a writer free is written at once,
alone: nothing waits for a timer; under light load each batch is its own statement, under load
they merge, and while statements run every partition's read grows. (One statement at a time
merged more, but a statement's wall time on a loaded machine is several times its CPU: one
writer then bounded storage at ~25,000 ticks/s, below the feed.)

Every reader still sees its own batch's outcome. The merged statement is atomic; if the database
refuses it for a reason of its own (an entry it rejects), each of its batches is written again
alone, and each reader gets the result of its own write, exactly as without merging (the reader
then isolates the culprit entry by entry). An outage (``TRANSIENT_DB_ERRORS``) is every merged
reader's, which each waits out and retries. Batches of different partitions hold different
symbols, so merging never puts two copies of a key in one statement that would not have been
there anyway; the writer is idempotent either way. A reader that is cancelled while its batch
waits (stopped, lease lost) takes the batch out: it is not written for nobody.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from tradebot.common.db import TRANSIENT_DB_ERRORS
from tradebot.storage.batch import StorageBatch
from tradebot.storage.partition_reader import Write


class MergedWrites:
    """Writes batches through ``write``, at most ``writers`` statements at once, merging the ones
    that wait (see the module docstring); :meth:`write` is the readers' ``Write``."""

    def __init__(self, write: Write, writers: int, counters: Counter[str] | None = None):
        if writers < 1:
            raise ValueError(f"merged writes need at least one writer, not {writers}")
        self._write = write
        self.writers = writers
        # "merged_writes": statements that wrote several batches; "batches_merged": the batches in them
        self.counters = counters if counters is not None else Counter()
        self._waiting: list[tuple[StorageBatch, asyncio.Future[None]]] = []
        self._running: set[asyncio.Task[None]] = set()

    async def write(self, batch: StorageBatch) -> None:
        """Write ``batch`` (alone or with others); raises what writing it alone would."""
        done = asyncio.get_running_loop().create_future()
        self._waiting.append((batch, done))
        if len(self._running) < self.writers:
            self._running.add(asyncio.create_task(self._write_waiting()))
        await done  # cancelled: the batch is left out of a write still to come (see _take)

    async def _write_waiting(self) -> None:
        """Write what waits, all of it at each turn, until nothing does. The writer leaves the
        running ones in the same step as it finds nothing waiting (not in a done callback, which
        runs a loop turn later): a batch handed over in between would wait for a writer that has
        ended."""
        try:
            while taken := self._take():
                try:
                    await self._write_merged(taken)
                except BaseException:  # the writer cancelled (the worker stopping): so are its batches' writes
                    for _, done in taken:
                        done.cancel()
                    raise
        finally:
            self._running.discard(asyncio.current_task())

    def _take(self) -> list[tuple[StorageBatch, asyncio.Future[None]]]:
        taken = [(batch, done) for batch, done in self._waiting if not done.done()]
        self._waiting.clear()
        return taken

    async def _write_merged(self, taken: list[tuple[StorageBatch, asyncio.Future[None]]]) -> None:
        if len(taken) > 1:
            self.counters["merged_writes"] += 1
            self.counters["batches_merged"] += len(taken)
            try:
                await self._write(StorageBatch.joined([batch for batch, _ in taken]))
            except TRANSIENT_DB_ERRORS as error:
                _settle(taken, error)
                return
            except Exception:  # noqa: BLE001 - the database refused something: each batch alone says which
                pass
            else:
                _settle(taken, None)
                return
        for batch, done in taken:
            try:
                await self._write(batch)
            except Exception as error:  # noqa: BLE001 - its reader's to handle, as without merging
                _settle([(batch, done)], error)
            else:
                _settle([(batch, done)], None)


def _settle(taken: list[tuple[StorageBatch, asyncio.Future[None]]], error: Exception | None) -> None:
    for _, done in taken:
        if done.done():  # its reader was cancelled meanwhile
            continue
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)
