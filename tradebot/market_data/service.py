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
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import Counter

from tradebot.common import runtime
from tradebot.common.bus import Bus
from tradebot.common.bus.connection import RECOVERABLE_REDIS_ERRORS
from tradebot.common.bus.publishing import Commit
from tradebot.common.config import ReadySettings, Settings
from tradebot.common.lifecycle import Backoff, wait_or_stop
from tradebot.common.models import Event
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
PUBLISH_INTERVAL_S = 0.1  # batches per second = 10 at any rate, so latency stays ~100 ms
# How often the feed-wide cursor is written: a restart regenerates (without publishing) at most this
# many ticks, a few milliseconds of work, against ~3.5 KB of append-only file per write at 100 symbols.
SNAPSHOT_EVERY_TICKS = 10_000


class Pacer:
    """Holds a long-run average rate by sleeping until the next batch is due."""

    def __init__(self, ticks_per_second: float):
        self.ticks_per_second = ticks_per_second
        self.due = time.monotonic()

    async def wait(self, ticks: int, stop: asyncio.Event) -> None:
        """Sleep off the time ``ticks`` ticks take at the configured rate (cut short by ``stop``)."""
        self.due += ticks / self.ticks_per_second
        delay = self.due - time.monotonic()
        if delay > 0:
            await wait_or_stop(stop, delay)
        elif delay < -1.0:
            self.due = time.monotonic()  # after a stall, carry on at the rate instead of bursting


def ticks_per_batch(settings: Settings) -> int:
    """How many ticks go into one commit at the configured rate."""
    return max(1, min(settings.bus_batch_size, math.ceil(settings.mock_ticks_per_second * PUBLISH_INTERVAL_S)))


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
    ticks = feed.take(count)
    cursor = json.dumps({"produced": feed.produced})
    shares: list[list[tuple[str, Event]]] = [[] for _ in committed]
    done = [_produced(text) for text in committed]
    for position, tick in enumerate(ticks, start=first):
        partition = partition_for(tick.symbol, len(committed))
        if position >= done[partition]:
            shares[partition].append((tick_stream(partition), tick))
    for partition, share in enumerate(shares):
        if done[partition] >= feed.produced:
            continue
        key = partition_cursor_key(CURSOR_NAME, partition)
        guard = (key, committed[partition])
        if not await bus.commit("", Commit(publish=share, state={key: cursor}, guard=guard)):
            return False
        committed[partition] = cursor
        counters["published"] += len(share)
    if snapshot:
        await write_snapshot(bus, feed)
    return True


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
    while not stop.is_set():
        count = batch if limit is None else min(batch, limit - feed.produced)
        if count <= 0:
            log.info("mock feed reached MOCK_MAX_TICKS=%d", limit)
            return
        if not await bus.wait_for_room(retained, stop, "mock feed"):  # past the memory budget: wait
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
        if pace:
            await pacer.wait(count, stop)
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
