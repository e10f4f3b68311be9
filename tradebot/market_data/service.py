"""The mock market-data worker: publishes the seeded mock feed to the partitioned tick streams.

MOCK_TICKS_PER_SECOND is the total rate across all symbols. Each partition's share of a batch is
published together with that partition's cursor, in one atomic commit in the partition's slot (a
batch spans every partition, which on a Redis Cluster no single commit can). A partition's cursor
is only how many ticks of the feed's sequence it covers: the feed's whole position (every symbol's
count and price, the clock) is the feed-wide cursor, written after the partitions' commits once per
SNAPSHOT_EVERY_TICKS ticks (and at a run's first batch and its end), because rewriting it with
every batch was most of the feed's append-only-file bytes. A restarted (even ``kill -9``-ed) feed
resumes from the feed-wide cursor, regenerates what came after it, and publishes, per partition,
only the ticks that partition's cursor does not cover, so no tick is repeated or skipped.
MOCK_MAX_TICKS counts ticks over the life of the cursor: a restarted feed finishes the same N-tick
sequence and then stops. Past the Redis memory budget the feed waits (it can: its ticks are
generated, not received) until consumers catch up. The cursor carries the feed's clock too
(``mock_feed.FeedClock``, one tick every 1/MOCK_TICKS_PER_SECOND s), so ticks regenerated from an
older cursor — after a restart, or after Redis lost its last writes — are byte-identical to the first.
So are the entries they are grouped in when the cadence is the same (unpaced, or a feed keeping up
with its rate); a feed behind its rate grows its batches with its delay (below), so its regenerated
ticks may be grouped into entries differently, each tick still byte-identical (the same stored row).

A tick is never published before its own timestamp: a batch waits until the wall clock has reached
its last tick's time (and until the rate allows it). Batches are small while the feed keeps up
(one every MIN_PUBLISH_INTERVAL_S from STEADY_CADENCE_RATE ticks/s on, every FAST_PUBLISH_INTERVAL_S
from FAST_CADENCE_RATE on; below STEADY_CADENCE_RATE MIN_TICKS_PER_BATCH ticks, at most
MAX_PUBLISH_INTERVAL_S apart), so a tick waits milliseconds, not a tenth of a second, before it is
published; a feed that falls behind its rate takes everything already due, up to BUS_BATCH_SIZE,
so batches grow with the load like a live feed's. The partitions' commits of a batch run
concurrently (a round trip per batch, not one per partition), and a partition with no tick in a
batch is not committed at all.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import Counter
from datetime import datetime

from tradebot.common import runtime
from tradebot.common.bus import Bus
from tradebot.common.bus.connection import RECOVERABLE_REDIS_ERRORS
from tradebot.common.bus.publishing import Commit, CommitResult
from tradebot.common.bus.wire import tick_entries
from tradebot.common.codec import TickRow
from tradebot.common.config import ReadySettings, Settings
from tradebot.common.lifecycle import Backoff, wait_or_stop
from tradebot.common.streams import (
    Role,
    partition_cursor_key,
    partition_for,
    producer_cursor_key,
    retained_streams,
    tick_stream,
)
from tradebot.market_data.mock_feed import Clock, MockFeed, step_for, utc_now
from tradebot.universe import resolve_symbols

log = logging.getLogger("tradebot.market_data")  # not __name__: that is "__main__" under python -m

ROLE = Role.MARKET_DATA
CURSOR_NAME = "mock"
# The cadence while the feed keeps up. From STEADY_CADENCE_RATE ticks/s on, a batch every
# MIN_PUBLISH_INTERVAL_S, so a tick waits at most that long in the feed (1,000/s: 10 ticks every
# 10 ms); from FAST_CADENCE_RATE on every FAST_PUBLISH_INTERVAL_S (5,000/s: 25 ticks every 5 ms;
# 20,000/s: 100; 50,000/s: 250). A batch costs every reader a read and a commit whatever its size
# (the strategy ~2 ms of CPU); at 5,000/s that cost, once cut, is worth half the wait
# (docs/BENCHMARKS.md "Eighth round, latency"; in the fourth round, before the shared read and
# the commit together, 5 ms at 5,000/s cost more latency than it saved). Below that rate, batches of
# MIN_TICKS_PER_BATCH ticks, at most MAX_PUBLISH_INTERVAL_S apart: a slow feed's entries and cursor
# writes are the bulk of Redis's bytes per tick (the default 500 ticks/s: 25 ticks every 50 ms,
# 251 B/tick of append-only file; 10-tick batches there: 344, past issue 14's 300). At 1,000/s the
# 25-tick batches made a tick wait up to 25 ms (docs/BENCHMARKS.md "Sixth round, latency").
MIN_TICKS_PER_BATCH = 25
MAX_PUBLISH_INTERVAL_S = 0.05
MIN_PUBLISH_INTERVAL_S = 0.01
STEADY_CADENCE_RATE = 1_000
FAST_PUBLISH_INTERVAL_S = 0.005
FAST_CADENCE_RATE = 5_000
# How often the feed-wide cursor is written: a restart regenerates (without publishing) at most this
# many ticks, a few milliseconds of work, against ~3.5 KB of append-only file per write at 100 symbols.
SNAPSHOT_EVERY_TICKS = 10_000
# The memory budget is checked once per this many seconds (and at a run's first batch), not per
# batch: INFO costs a round trip, and between two checks the feed adds at most a fraction of a MB.
ROOM_CHECK_EVERY_S = 0.05


class Pacer:
    """Holds a long-run average rate, and never lets a tick out before its own timestamp."""

    def __init__(self, ticks_per_second: float, wall_clock: Clock = utc_now):
        self.ticks_per_second = ticks_per_second
        self.wall_clock = wall_clock
        self.due = time.monotonic()  # when the ticks taken so far are all due at the rate

    def behind(self) -> int:
        """Ticks the rate has already made due beyond those taken (0 while the feed keeps up)."""
        return max(0, int((time.monotonic() - self.due) * self.ticks_per_second))

    async def wait(self, ticks: int, last_stamp: datetime, stop: asyncio.Event) -> None:
        """Sleep until ``ticks`` more ticks are due at the rate and the wall clock has reached
        ``last_stamp``, the newest of them (cut short by ``stop``)."""
        self.due += ticks / self.ticks_per_second
        now = time.monotonic()
        if self.due < now - 1.0:
            self.due = now  # after a stall, carry on at the rate instead of bursting
        delay = max(self.due - now, (last_stamp - self.wall_clock()).total_seconds())
        if delay > 0:
            await wait_or_stop(stop, delay)


def ticks_per_batch(settings: Settings) -> int:
    """How many ticks go into one commit at the configured rate while the feed keeps up."""
    rate = settings.mock_ticks_per_second
    at_least = math.ceil(rate * (FAST_PUBLISH_INTERVAL_S if rate >= FAST_CADENCE_RATE else MIN_PUBLISH_INTERVAL_S))
    if rate >= STEADY_CADENCE_RATE:
        return max(1, min(settings.bus_batch_size, at_least))
    at_most = math.ceil(rate * MAX_PUBLISH_INTERVAL_S)
    return max(1, min(settings.bus_batch_size, max(at_least, min(MIN_TICKS_PER_BATCH, at_most))))


async def load_feed(
    bus: Bus, symbols: list[str], settings: Settings, clock: Clock = utc_now
) -> tuple[MockFeed, list[str]]:
    """The feed positioned at the last feed-wide cursor (or at the start), and each partition's
    cursor text as committed."""
    saved = await bus.redis.get(producer_cursor_key(CURSOR_NAME)) or ""
    cursor = json.loads(saved) if saved else None
    step = step_for(settings.mock_ticks_per_second)
    keys = [partition_cursor_key(CURSOR_NAME, p) for p in range(settings.tick_partitions)]
    committed = [await bus.redis.get(key) or "" for key in keys]  # one GET each: other slots
    return MockFeed(symbols, settings.mock_seed, clock=clock, cursor=cursor, step=step), committed


async def publish_batch(
    bus: Bus, feed: MockFeed, count: int, committed: list[str], counters: Counter[str], *, snapshot: bool = False
) -> bool:
    """Generate ``count`` ticks and commit each partition's share with that partition's cursor.

    A partition's commit applies only if its cursor still reads what was loaded (compare-and-set),
    so a second feed, or a retry of a commit that already landed, can never publish the same ticks
    twice; a partition whose cursor is already past a tick (an earlier run got further there) skips
    it. ``committed`` is updated in place, and ``counters["published"]`` by what this feed
    published. With ``snapshot`` the feed-wide cursor follows the partitions' commits. False when a
    cursor had moved on (reload and continue).
    """
    first = feed.produced
    rows = feed.rows(count)  # the ticks' values: encoded straight into entries, no Tick objects
    cursor = json.dumps({"produced": feed.produced})
    partition_of = {symbol: partition_for(symbol, len(committed)) for symbol in feed.symbols}
    shares: list[list[TickRow]] = [[] for _ in committed]
    done = [_produced(text) for text in committed]
    for position, row in enumerate(rows, start=first):
        partition = partition_of[row[1]]
        if position >= done[partition]:
            shares[partition].append(row)
    commits = [
        (partition, tick_entries(tick_stream(partition), share, bus.ticks_per_entry), len(share))
        for partition, share in enumerate(shares)
        if share  # a partition with nothing: no commit
    ]
    results = await asyncio.gather(
        *(_commit_share(bus, partition, entries, committed[partition], cursor) for partition, entries, _ in commits),
        return_exceptions=True,  # every commit settles before an error goes on (a reload must see them)
    )
    moved_on = False
    for (partition, _, ticks), result in zip(commits, results, strict=True):
        if result is CommitResult.APPLIED:
            committed[partition] = cursor
            counters["published"] += ticks
        elif not isinstance(result, BaseException):
            moved_on = True
    errors = [result for result in results if isinstance(result, BaseException)]
    if errors:
        raise errors[0]
    if moved_on:
        return False
    if snapshot:
        await write_snapshot(bus, feed)
    return True


async def _commit_share(
    bus: Bus, partition: int, entries: list[tuple[str, dict[str, str]]], loaded: str, cursor: str
) -> CommitResult:
    """One partition's share (its tick-batch entries) with its cursor, if that cursor still reads ``loaded``."""
    key = partition_cursor_key(CURSOR_NAME, partition)
    return await bus.commit("", Commit(entries=entries, state={key: cursor}, guard=(key, loaded)))


async def write_snapshot(bus: Bus, feed: MockFeed) -> None:
    """The feed-wide cursor: where a restarted feed regenerates from (after every partition's commit)."""
    await bus.commit("", Commit(state={producer_cursor_key(CURSOR_NAME): json.dumps(feed.cursor())}))


def _produced(cursor_text: str) -> int:
    """How many ticks a cursor's feed had produced (0 for none)."""
    return int(json.loads(cursor_text)["produced"]) if cursor_text else 0


async def produce(
    bus: Bus,
    settings: Settings,
    symbols: list[str],
    *,
    stop: asyncio.Event,
    counters: Counter[str],
    clock: Clock = utc_now,
    pace: bool = True,
) -> None:
    """Publish from the committed cursor until stopped or MOCK_MAX_TICKS is reached."""
    feed, committed = await load_feed(bus, symbols, settings, clock)
    pacer = Pacer(settings.mock_ticks_per_second)
    batch = ticks_per_batch(settings)
    limit = settings.mock_max_ticks
    retained = retained_streams(settings.tick_partitions)
    snapshotted: int | None = None  # where this run last wrote the feed-wide cursor (its first batch does)
    room_checked = -math.inf
    while not stop.is_set():
        count = max(batch, min(settings.bus_batch_size, pacer.behind())) if pace else batch
        count = count if limit is None else min(count, limit - feed.produced)
        if count <= 0:
            log.info("mock feed reached MOCK_MAX_TICKS=%d", limit)
            return
        if time.monotonic() - room_checked >= ROOM_CHECK_EVERY_S:
            if not await bus.wait_for_room(retained, stop, "mock feed"):  # past the memory budget: wait
                break
            room_checked = time.monotonic()
        if pace:  # not before the rate allows, nor before the last tick's own time
            await pacer.wait(count, feed.clock.at(feed.produced + count - 1), stop)
            if stop.is_set():
                break
        snapshot = (
            snapshotted is None
            or feed.produced + count - snapshotted >= SNAPSHOT_EVERY_TICKS
            or (limit is not None and feed.produced + count >= limit)
        )
        if not await publish_batch(bus, feed, count, committed, counters, snapshot=snapshot):
            # another feed (or our own lost-reply commit) moved a cursor: follow it
            counters["cursor_conflicts"] += 1
            feed, committed = await load_feed(bus, symbols, settings, clock)
            snapshotted = None
            continue
        if snapshot:
            snapshotted = feed.produced
    if snapshotted != feed.produced:  # stopped: the next run starts right here, regenerating nothing
        await write_snapshot(bus, feed)


async def run_feed(
    bus: Bus,
    settings: Settings,
    *,
    stop: asyncio.Event,
    counters: Counter[str],
    clock: Clock = utc_now,
    pace: bool = True,
) -> None:
    """Run the feed, riding out Redis outages by resuming from the committed cursor."""
    symbols = resolve_symbols(settings)
    log.info(
        "mock feed: %d symbols, %.0f ticks/s in total, seed %d",
        len(symbols),
        settings.mock_ticks_per_second,
        settings.mock_seed,
    )
    bus.commit_together()  # a batch's partition commits are made at once: they go in one script call
    backoff = Backoff("redis (mock feed)")
    while not stop.is_set():
        try:
            await produce(bus, settings, symbols, stop=stop, counters=counters, clock=clock, pace=pace)
            return
        except RECOVERABLE_REDIS_ERRORS as error:
            # The failed batch may or may not have landed; reloading the cursor tells which.
            counters["redis_retries"] += 1
            await backoff.wait(error, stop)


async def run(settings: ReadySettings, *, stop: asyncio.Event, counters: Counter[str]) -> None:
    """Worker entry: publish mock ticks until stopped."""
    bus = Bus.from_settings(settings)
    try:
        await run_feed(bus, settings, stop=stop, counters=counters)
    finally:
        await bus.close()


def main() -> None:
    """``python -m tradebot.market_data.service``."""
    runtime.main(ROLE, run)


if __name__ == "__main__":
    main()
