"""Gap repair: after a live feed (re)connects, the minutes it missed come from REST history.

Each symbol has a watermark: the start of the first minute the live feed has not shown to be
complete. A trade at 10:05:30 leaves it at 10:05 (that minute may still get trades); a 10:05 minute
bar moves it to 10:06. The watermark is kept in memory and committed to Redis together with the
events that advanced it (``watermark_key``), so it survives a restart.

On every successful connection the feed calls :meth:`GapRepairer.on_connected`. The repair window
of a symbol is [watermark, start of the current minute): the current minute needs no repair,
because the minute-bar subscription delivers its complete bar when it closes. The repaired 1-minute
bars are published like live bars (same source, same ids), so storage writes them idempotently and
a minute that did arrive live is simply replaced by the provider's own bar. Nothing is repaired on
the very first start (no watermark yet: that is the backfill's job), and at most
``MAX_REPAIR_WINDOW`` back.

Where the provider serves historical trades (both Alpaca and Polygon do), the trades of the same
window come too, up to the moment of the (re)connection (the seconds of the current minute before
it were missed as well), fetched ``TRADE_CHUNK`` at a time so a long window never sits in memory
whole. A repaired trade has the id and timestamp its live print would have had (the provider's
trade id and exchange), so a trade that did arrive live, or a repair done twice, is stored once.
They go to the ``price.ticks.repaired`` stream, which only storage reads: the strategies never
trade on prints minutes old (they saw the gap as a gap; their checkpoints stay as they were).

The new connection's live events move the watermark past the gap long before the repair (which
waits ``REPAIR_SETTLE_S``, then asks REST) has published anything. So every repair is also
recorded as a **repair marker** (``repair_key``: the start of the earliest repair not yet
published), committed no later than the first live events of the connection, and cleared only by
the commit that publishes the repaired bars (see :class:`PendingRepairs`). A repair that is
stopped, cancelled, killed or fails leaves its marker, and the next repair starts at
min(watermark, marker): the gap is fetched after the next connection or restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Protocol

from tradebot.common.lifecycle import wait_or_stop
from tradebot.common.models import Bar, Tick
from tradebot.market_data.mock_feed import Clock, utc_now
from tradebot.storage.buckets import floor_bucket, next_bucket

log = logging.getLogger(__name__)

MAX_REPAIR_WINDOW = timedelta(days=7)  # longer outages: run `tradebot backfill`
# Wait this long after connecting before asking REST: the minute that just closed needs a moment
# to appear there (and its live bar may have been emitted just before we subscribed).
REPAIR_SETTLE_S = 5.0
WATERMARK_PREFIX = "watermark:"
REPAIR_PREFIX = "repair_from:"
NO_REPAIR = ""  # a cleared repair marker (a bus commit sets keys; it does not delete them)

TRADE_CHUNK = timedelta(minutes=5)  # trades are fetched and published this much at a time

FetchMinuteBars = Callable[[list[str], datetime, datetime], Awaitable[list[Bar]]]
"""Provider 1-minute bars of ``symbols`` with start <= timestamp < end."""
FetchTrades = Callable[[list[str], datetime, datetime], Awaitable[list[Tick]]]
"""Provider historical trades of ``symbols`` with start <= timestamp < end."""


def watermark_key(source: str, symbol: str) -> str:
    """Redis key of a symbol's watermark for one live source (an ISO-8601 UTC minute)."""
    return f"{WATERMARK_PREFIX}{source}:{symbol}"


def repair_key(source: str, symbol: str) -> str:
    """Redis key of a symbol's repair marker: the first minute a pending repair must still fetch
    (an ISO-8601 UTC minute), or ``NO_REPAIR``."""
    return f"{REPAIR_PREFIX}{source}:{symbol}"


def watermark_after(event: Tick | Bar) -> datetime | None:
    """The first minute ``event`` does not show to be complete (None: says nothing about minutes)."""
    if isinstance(event, Tick):
        return floor_bucket(event.timestamp, "1m")
    if event.timeframe == "1m":
        return next_bucket(event.timestamp, "1m")
    return None


def repair_starts(
    watermarks: Mapping[str, datetime], symbols: Iterable[str], end: datetime, max_window: timedelta = MAX_REPAIR_WINDOW
) -> dict[str, datetime]:
    """Where each symbol's repair starts; symbols without a watermark, or already complete, are left out."""
    earliest = end - max_window
    starts = {}
    for symbol in symbols:
        mark = watermarks.get(symbol)
        if mark is not None and mark < end:
            starts[symbol] = max(mark, earliest)
    return starts


def earliest(*moments: datetime | None) -> datetime | None:
    """The earliest of the moments given (None: none given)."""
    return min((moment for moment in moments if moment is not None), default=None)


def group_by_start(starts: Mapping[str, datetime]) -> dict[datetime, list[str]]:
    """Symbols sharing a start go into one request (most symbols of a feed share their last minute)."""
    groups: dict[datetime, list[str]] = {}
    for symbol, start in sorted(starts.items(), key=lambda item: (item[1], item[0])):
        groups.setdefault(start, []).append(symbol)
    return groups


class PendingRepairs:
    """The repairs whose bars are not committed yet, per symbol, and the repair markers they imply.

    A symbol's marker is the earliest start among its pending repairs. Every repair starts at or
    before the marker of its time and ends later than the repairs before it, so it covers them
    (within ``MAX_REPAIR_WINDOW``): once its bars are committed, it and every earlier repair of
    that symbol are done.

    The publisher writes the markers with its commits: one that changed since the last commit goes
    out with the next commit (no later than the first live events after the change), and the
    completion of a repair in the commit that carries its last bars. The repair from the last run
    (``load``) is repair 0.
    """

    def __init__(self) -> None:
        self._starts: dict[str, dict[int, datetime]] = {}
        self._changed: set[str] = set()
        self._last_id = 0

    def load(self, symbol: str, start: datetime) -> None:
        """The marker the last run left (its repair did not publish)."""
        self._starts.setdefault(symbol, {})[0] = start

    def marker(self, symbol: str) -> datetime | None:
        """Where the pending repairs of ``symbol`` start; None if there are none."""
        return min(self._starts.get(symbol, {}).values(), default=None)

    def register(self, starts: Mapping[str, datetime]) -> int:
        """A new repair of each symbol from its start; returns the repair's id."""
        self._last_id += 1
        for symbol, start in starts.items():
            self._starts.setdefault(symbol, {})[self._last_id] = start
            self._changed.add(symbol)
        return self._last_id

    def to_commit(self, done: Mapping[str, int]) -> dict[str, datetime | None]:
        """The markers a commit must write, given the repair (id) of each symbol whose last bars it
        carries: each changed or completed symbol's marker once those repairs are done."""
        markers = {}
        for symbol in self._changed | done.keys():
            finished = done.get(symbol, -1)
            markers[symbol] = min(
                (start for repair, start in self._starts.get(symbol, {}).items() if repair > finished), default=None
            )
        self._changed.difference_update(markers)
        return markers

    def committed(self, done: Mapping[str, int]) -> None:
        """The commit is in Redis: forget the repairs it completed."""
        for symbol, finished in done.items():
            starts = self._starts.get(symbol, {})
            for repair in [repair for repair in starts if repair <= finished]:
                del starts[repair]

    def not_committed(self, markers: Iterable[str]) -> None:
        """The commit was not written: its markers are still to write."""
        self._changed.update(markers)


class Watermarked(Protocol):
    """What the repairer needs from the publisher."""

    seen: dict[str, datetime]
    repairs: PendingRepairs

    async def put(self, event: Tick | Bar) -> None: ...

    async def put_repaired(self, tick: Tick) -> None: ...

    async def repair_done(self, symbol: str, minute: datetime, repair: int) -> None: ...


class GapRepairer:
    """Fills the minutes a live feed missed, from REST history, after each (re)connection."""

    def __init__(
        self,
        publisher: Watermarked,
        fetch: FetchMinuteBars,
        symbols: list[str],
        *,
        stop: asyncio.Event,
        counters: Counter[str],
        clock: Clock = utc_now,
        settle_s: float = REPAIR_SETTLE_S,
        fetch_trades: FetchTrades | None = None,
    ):
        self.publisher = publisher
        self.fetch = fetch
        self.fetch_trades = fetch_trades
        self.symbols = symbols
        self.stop = stop
        self.counters = counters
        self.clock = clock
        self.settle_s = settle_s
        self._tasks: set[asyncio.Task[None]] = set()

    def on_connected(self) -> None:
        """Snapshot the watermarks and markers now (before new data moves them), record the repair
        (its marker goes out before the new connection's events), and repair in the background."""
        now = self.clock()
        end = floor_bucket(now, "1m")
        marks = {
            symbol: mark
            for symbol in self.symbols
            if (mark := earliest(self.publisher.seen.get(symbol), self.publisher.repairs.marker(symbol))) is not None
        }
        starts = repair_starts(marks, self.symbols, end)
        if starts:
            self._start(starts, end, now)

    def _start(self, starts: dict[str, datetime], end: datetime, now: datetime) -> int:
        """Record the repair (its marker goes out with the next commit) and run it in the background:
        bars up to ``end`` (the current minute's start), trades up to ``now``."""
        repair = self.publisher.repairs.register(starts)
        task = asyncio.create_task(self._repair(repair, starts, end, now), name="gap-repair")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return repair

    def repair_gap(self, symbols: list[str], first: datetime) -> int | None:
        """Repair a gap the publisher recorded (events of ``symbols`` not published since ``first``).

        The minutes from the one of ``first`` up to the current one come from REST (the current
        minute's live bar arrives when it closes). Returns the repair's id (None: nothing to do).
        """
        now = self.clock()
        end = floor_bucket(now, "1m")
        starts = repair_starts({symbol: floor_bucket(first, "1m") for symbol in symbols}, symbols, end)
        if not starts:
            return None
        return self._start(starts, end, now)

    async def close(self) -> None:
        """Cancel running repairs; their markers stay, so the next start repairs those minutes."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _repair(self, repair: int, starts: dict[str, datetime], end: datetime, now: datetime) -> None:
        if await wait_or_stop(self.stop, self.settle_s):
            return
        for start, symbols in group_by_start(starts).items():
            try:
                await self._repair_group(repair, symbols, starts, end, now)
            except Exception as error:  # noqa: BLE001 - a failed repair must never stop the live feed
                self.counters["gap_repair_failures"] += 1
                log.warning(
                    "gap repair of %d symbol(s) from %s failed (%s); their repair marker stays, so the "
                    "next connection or restart tries again",
                    len(symbols),
                    start.isoformat(),
                    error,
                )

    async def _repair_group(
        self, repair: int, symbols: list[str], starts: Mapping[str, datetime], end: datetime, now: datetime
    ) -> None:
        """Bars, then trades, of symbols sharing a start; then (committed after them) their repair done."""
        start = min(starts[symbol] for symbol in symbols)
        bars = await self.fetch(symbols, start, end)
        wanted = [bar for bar in bars if bar.symbol in starts and starts[bar.symbol] <= bar.timestamp < end]
        for bar in sorted(wanted, key=lambda bar: (bar.symbol, bar.timestamp)):
            await self.publisher.put(bar)
        self.counters["gap_bars"] += len(wanted)
        trades = await self._repair_trades(symbols, starts, start, now) if self.fetch_trades else 0
        for symbol in symbols:  # after its bars and trades: committed with (or after) the last of them
            await self.publisher.repair_done(symbol, end, repair)
        log.info(
            "gap repair: %d minute bar(s) and %d trade(s) for %d symbol(s) between %s and %s",
            len(wanted),
            trades,
            len(symbols),
            start.isoformat(),
            end.isoformat(),
        )

    async def _repair_trades(
        self, symbols: list[str], starts: Mapping[str, datetime], start: datetime, now: datetime
    ) -> int:
        """The trades of [start, now), a chunk at a time; how many were published."""
        assert self.fetch_trades is not None
        published = 0
        while start < now:
            until = min(start + TRADE_CHUNK, now)
            ticks = await self.fetch_trades(symbols, start, until)
            wanted = [tick for tick in ticks if tick.symbol in starts and starts[tick.symbol] <= tick.timestamp < until]
            for tick in sorted(wanted, key=lambda tick: (tick.timestamp, tick.id)):
                await self.publisher.put_repaired(tick)
            published += len(wanted)
            self.counters["gap_trades"] += len(wanted)
            start = until
        return published
