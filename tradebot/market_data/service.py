"""The mock market-data worker: publishes the seeded mock feed to the partitioned tick streams.

MOCK_TICKS_PER_SECOND is the total rate across all symbols. Each batch is published together with
the feed's cursor in one atomic commit, so a restarted (even ``kill -9``-ed) feed continues the
same sequence with no tick repeated or skipped. MOCK_MAX_TICKS counts ticks over the life of the
cursor: a restarted feed finishes the same N-tick sequence and then stops. Past the Redis memory
budget the feed waits (it can: its ticks are generated, not received) until consumers catch up. The cursor carries the
feed's clock too (``mock_feed.FeedClock``, one tick every 1/MOCK_TICKS_PER_SECOND s), so ticks
regenerated from an older cursor — Redis lost its last writes — are byte-identical to the first.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import Counter

from tradebot.common import runtime
from tradebot.common.bus import RECOVERABLE_REDIS_ERRORS, Bus, Commit
from tradebot.common.config import ReadySettings, Settings
from tradebot.common.lifecycle import Backoff, wait_or_stop
from tradebot.common.models import Event
from tradebot.common.streams import Role, producer_cursor_key, retained_streams, tick_stream_for
from tradebot.market_data.mock_feed import Clock, MockFeed, step_for, utc_now
from tradebot.universe import resolve_symbols

log = logging.getLogger("tradebot.market_data")  # not __name__: that is "__main__" under python -m

ROLE = Role.MARKET_DATA
CURSOR_NAME = "mock"
PUBLISH_INTERVAL_S = 0.1  # batches per second = 10 at any rate, so latency stays ~100 ms


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


async def load_feed(bus: Bus, symbols: list[str], settings: Settings, clock: Clock = utc_now) -> tuple[MockFeed, str]:
    """The feed positioned at the last committed cursor (or at the start), and that cursor's text."""
    saved = await bus.redis.get(producer_cursor_key(CURSOR_NAME)) or ""
    cursor = json.loads(saved) if saved else None
    step = step_for(settings.mock_ticks_per_second)
    return MockFeed(symbols, settings.mock_seed, clock=clock, cursor=cursor, step=step), saved


async def publish_batch(bus: Bus, feed: MockFeed, count: int, partitions: int, committed: str) -> str | None:
    """Generate ``count`` ticks and commit them with the advanced cursor.

    The commit applies only if the cursor still reads ``committed`` (compare-and-set), so a second
    feed, or a retry of a commit that already landed, can never publish the same ticks twice.
    Returns the new cursor text, or None when the cursor had moved on (reload and continue).
    """
    ticks = feed.take(count)
    publish: list[tuple[str, Event]] = [(tick_stream_for(tick.symbol, partitions), tick) for tick in ticks]
    cursor = json.dumps(feed.cursor())
    key = producer_cursor_key(CURSOR_NAME)
    applied = await bus.commit("", Commit(publish=publish, state={key: cursor}, guard=(key, committed)))
    return cursor if applied else None


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
    while not stop.is_set():
        count = batch if limit is None else min(batch, limit - feed.produced)
        if count <= 0:
            log.info("mock feed reached MOCK_MAX_TICKS=%d", limit)
            return
        if not await bus.wait_for_room(retained, stop, "mock feed"):  # past the memory budget: wait
            return
        cursor = await publish_batch(bus, feed, count, settings.tick_partitions, committed)
        if cursor is None:  # another feed (or our own lost-reply commit) moved the cursor: follow it
            counters["cursor_conflicts"] += 1
            feed, committed = await load_feed(bus, symbols, settings, clock)
            continue
        committed = cursor
        counters["published"] += count
        if pace:
            await pacer.wait(count, stop)


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
