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
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Protocol

from tradebot.common.models import Bar, Tick
from tradebot.common.runtime import wait_or_stop
from tradebot.market_data.mock_feed import Clock, utc_now

log = logging.getLogger(__name__)

MINUTE = timedelta(minutes=1)
MAX_REPAIR_WINDOW = timedelta(days=7)  # longer outages: run `tradebot backfill`
# Wait this long after connecting before asking REST: the minute that just closed needs a moment
# to appear there (and its live bar may have been emitted just before we subscribed).
REPAIR_SETTLE_S = 5.0
WATERMARK_PREFIX = "watermark:"

FetchMinuteBars = Callable[[list[str], datetime, datetime], Awaitable[list[Bar]]]
"""Provider 1-minute bars of ``symbols`` with start <= timestamp < end."""


def watermark_key(source: str, symbol: str) -> str:
    """Redis key of a symbol's watermark for one live source (an ISO-8601 UTC minute)."""
    return f"{WATERMARK_PREFIX}{source}:{symbol}"


def floor_minute(moment: datetime) -> datetime:
    """The start of the minute ``moment`` falls in."""
    return moment.replace(second=0, microsecond=0)


def watermark_after(event: Tick | Bar) -> datetime | None:
    """The first minute ``event`` does not show to be complete (None: says nothing about minutes)."""
    if isinstance(event, Tick):
        return floor_minute(event.timestamp)
    if event.timeframe == "1m":
        return event.timestamp + MINUTE
    return None


def repair_starts(watermarks: Mapping[str, datetime], symbols: Iterable[str], end: datetime,
                  max_window: timedelta = MAX_REPAIR_WINDOW) -> dict[str, datetime]:
    """Where each symbol's repair starts; symbols without a watermark, or already complete, are left out."""
    earliest = end - max_window
    starts = {}
    for symbol in symbols:
        mark = watermarks.get(symbol)
        if mark is not None and mark < end:
            starts[symbol] = max(mark, earliest)
    return starts


def group_by_start(starts: Mapping[str, datetime]) -> dict[datetime, list[str]]:
    """Symbols sharing a start go into one request (most symbols of a feed share their last minute)."""
    groups: dict[datetime, list[str]] = {}
    for symbol, start in sorted(starts.items(), key=lambda item: (item[1], item[0])):
        groups.setdefault(start, []).append(symbol)
    return groups


class Watermarked(Protocol):
    """What the repairer needs from the publisher."""

    seen: dict[str, datetime]

    async def put(self, event: Tick | Bar) -> None: ...

    async def put_watermark(self, symbol: str, minute: datetime) -> None: ...


class GapRepairer:
    """Fills the minutes a live feed missed, from REST history, after each (re)connection."""

    def __init__(self, publisher: Watermarked, fetch: FetchMinuteBars, symbols: list[str], *,
                 stop: asyncio.Event, counters: Counter, clock: Clock = utc_now,
                 settle_s: float = REPAIR_SETTLE_S):
        self.publisher = publisher
        self.fetch = fetch
        self.symbols = symbols
        self.stop = stop
        self.counters = counters
        self.clock = clock
        self.settle_s = settle_s
        self._tasks: set[asyncio.Task] = set()

    def on_connected(self) -> None:
        """Snapshot the watermarks now (before new data moves them) and repair in the background."""
        end = floor_minute(self.clock())
        starts = repair_starts(self.publisher.seen, self.symbols, end)
        if not starts:
            return
        task = asyncio.create_task(self._repair(starts, end), name="gap-repair")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Cancel running repairs; what they did not publish is repaired after the next start."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _repair(self, starts: dict[str, datetime], end: datetime) -> None:
        if await wait_or_stop(self.stop, self.settle_s):
            return
        for start, symbols in group_by_start(starts).items():
            try:
                bars = await self.fetch(symbols, start, end)
            except Exception as error:  # noqa: BLE001 - a failed repair must never stop the live feed
                self.counters["gap_repair_failures"] += 1
                log.warning("gap repair of %d symbol(s) from %s failed (%s); the watermark stays, so the next "
                            "connection or restart tries again", len(symbols), start.isoformat(), error)
                continue
            await self._publish(symbols, starts, bars, end)

    async def _publish(self, symbols: list[str], starts: Mapping[str, datetime], bars: list[Bar],
                       end: datetime) -> None:
        wanted = [bar for bar in bars if bar.symbol in starts and starts[bar.symbol] <= bar.timestamp < end]
        for bar in sorted(wanted, key=lambda bar: (bar.symbol, bar.timestamp)):
            await self.publisher.put(bar)
        for symbol in symbols:
            await self.publisher.put_watermark(symbol, end)
        self.counters["gap_bars"] += len(wanted)
        log.info("gap repair: %d minute bar(s) for %d symbol(s) between %s and %s", len(wanted), len(symbols),
                 min(starts[s] for s in symbols).isoformat(), end.isoformat())
