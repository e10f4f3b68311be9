"""Partition batches written together (tradebot/storage/merged_writes.py): one statement at a time,
the batches that wait merged, and every reader seeing its own batch's outcome."""

from __future__ import annotations

import asyncio
from collections import Counter

import asyncpg
import pytest

from tests.helpers import wait_until
from tradebot.storage.batch import StorageBatch
from tradebot.storage.merged_writes import MergedWrites


class RefusedError(Exception):
    """The database refusing a batch for a reason of its own (an entry it rejects)."""


class Database:
    """A fake writer: records each statement's batch; a statement holding a refused event fails
    whole; ``hold`` keeps the next statement running until released."""

    def __init__(self, refused: frozenset[str] = frozenset()):
        self.statements: list[list[str]] = []
        self.refused = refused
        self.outage: Exception | None = None
        self.running = asyncio.Event()
        self.release = asyncio.Event()
        self.release.set()

    def hold(self) -> None:
        self.running.clear()
        self.release.clear()

    async def write(self, batch: StorageBatch) -> None:
        events = [str(event) for event in batch.events]
        self.statements.append(events)
        self.running.set()
        await self.release.wait()
        if self.outage is not None:
            raise self.outage
        if self.refused.intersection(events):
            raise RefusedError(f"refused: {sorted(self.refused.intersection(events))}")


def batch(*events: str) -> StorageBatch:
    return StorageBatch(events=list(events))  # type: ignore[arg-type] - the fake writer reads them as strings


async def test_a_batch_that_finds_no_statement_running_is_written_alone_and_the_waiting_ones_together() -> None:
    database = Database()
    counters: Counter[str] = Counter()
    merged = MergedWrites(database.write, writers=1, counters=counters)
    database.hold()
    first = asyncio.create_task(merged.write(batch("a1")))
    await database.running.wait()  # the first batch's statement runs
    waiting = [asyncio.create_task(merged.write(batch(f"{p}1", f"{p}2"))) for p in "bcd"]
    await wait_until(lambda: len(merged._waiting) == 3, what="three batches waiting")
    database.release.set()
    await asyncio.gather(first, *waiting)
    assert database.statements == [["a1"], ["b1", "b2", "c1", "c2", "d1", "d2"]]
    assert (counters["merged_writes"], counters["batches_merged"]) == (1, 3)
    await merged.write(batch("e1"))  # nothing running again: alone, at once
    assert database.statements[-1] == ["e1"]


async def test_a_merged_statement_refused_writes_each_batch_alone_and_each_reader_gets_its_own_outcome() -> None:
    database = Database(refused=frozenset({"c2"}))
    merged = MergedWrites(database.write, writers=1)
    database.hold()
    first = asyncio.create_task(merged.write(batch("a1")))
    await database.running.wait()
    waiting = [asyncio.create_task(merged.write(batch(f"{p}1", f"{p}2"))) for p in "bcd"]
    await wait_until(lambda: len(merged._waiting) == 3, what="three batches waiting")
    database.release.set()
    outcomes = await asyncio.gather(first, *waiting, return_exceptions=True)
    assert outcomes[:2] == [None, None]
    assert outcomes[3] is None
    assert isinstance(outcomes[2], RefusedError)
    assert database.statements == [
        ["a1"],
        ["b1", "b2", "c1", "c2", "d1", "d2"],
        ["b1", "b2"],
        ["c1", "c2"],
        ["d1", "d2"],
    ]


async def test_an_outage_is_every_merged_readers_and_a_cancelled_readers_batch_is_left_out() -> None:
    database = Database()
    merged = MergedWrites(database.write, writers=1)
    database.hold()
    first = asyncio.create_task(merged.write(batch("a1")))
    await database.running.wait()
    waiting = {p: asyncio.create_task(merged.write(batch(f"{p}1"))) for p in "bcd"}
    await wait_until(lambda: len(merged._waiting) == 3, what="three batches waiting")
    waiting["c"].cancel()  # its reader stopped (or lost its lease) while its batch waited
    database.outage = asyncpg.CannotConnectNowError("the database is starting up")
    database.release.set()
    outcomes = await asyncio.gather(first, *waiting.values(), return_exceptions=True)
    assert [type(outcome) for outcome in outcomes] == [
        asyncpg.CannotConnectNowError,
        asyncpg.CannotConnectNowError,
        asyncio.CancelledError,
        asyncpg.CannotConnectNowError,
    ]
    assert database.statements == [["a1"], ["b1", "d1"]]  # c's batch was written for nobody: not written


async def test_a_batch_handed_over_as_the_writer_ends_is_written() -> None:
    """The writer is forgotten in the step that finds nothing waiting: a batch handed over in the
    next loop turn starts a writer of its own instead of waiting for the one that ended."""
    database = Database()
    merged = MergedWrites(database.write, writers=1)
    for n in range(50):  # each write lands right as the previous writer ends
        await asyncio.wait_for(merged.write(batch(f"x{n}")), timeout=30)
    assert database.statements == [[f"x{n}"] for n in range(50)]


@pytest.mark.parametrize("ticks", [0, 3])
async def test_joined_batches_keep_each_kind_in_order(ticks: int) -> None:
    parts = [StorageBatch(ticks=[f"t{p}{i}" for i in range(ticks)], events=[f"e{p}"]) for p in "ab"]  # type: ignore[misc]
    joined = StorageBatch.joined(parts)
    assert joined.ticks == [f"t{p}{i}" for p in "ab" for i in range(ticks)]
    assert (joined.events, len(joined)) == (["ea", "eb"], 2 * ticks + 2)
