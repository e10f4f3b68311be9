"""Resuming: what is stored already decides which ranges a backfill still requests.

Per (symbol, timeframe) the stored range of this provider's bars is read, and only the rest of the
window is requested: the tail from the last stored bar on (inclusive, because that bar may have
been partial, e.g. today's daily bar), and the head before the first stored bar when the window
reaches further back (a first run that was interrupted keeps its prefix; a live feed may have
stored only recent minutes; a wider --days asks for older data). Requests of symbols sharing the
same range are batched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from tradebot.common.db import Executor, connection
from tradebot.common.models import Timeframe

StoredRange = tuple[datetime, datetime]

_STORED_RANGES_SQL = """
SELECT symbol, timeframe, min(ts) AS first, max(ts) AS last
FROM bars
WHERE source = $1 AND symbol = ANY($2::text[]) AND timeframe = ANY($3::text[])
GROUP BY symbol, timeframe"""


@dataclass(frozen=True)
class Request:
    """One REST request: bars of ``timeframe`` for ``symbols`` with start <= timestamp < end."""

    timeframe: Timeframe
    symbols: tuple[str, ...]
    start: datetime
    end: datetime


async def stored_ranges(
    executor: Executor, source: str, symbols: Sequence[str], timeframes: Sequence[str]
) -> dict[tuple[str, str], StoredRange]:
    """(first, last) bar start stored per (symbol, timeframe) for ``source``."""
    async with connection(executor) as conn:
        rows = await conn.fetch(_STORED_RANGES_SQL, source, list(symbols), list(timeframes))
    return {(row["symbol"], row["timeframe"]): (row["first"], row["last"]) for row in rows}


def missing_ranges(window_start: datetime, end: datetime, stored: StoredRange | None) -> list[StoredRange]:
    """The parts of [window_start, end) still to request, given the stored (first, last)."""
    if stored is None:
        return [(window_start, end)] if window_start < end else []
    first, last = stored
    ranges = [(window_start, first), (max(last, window_start), end)]
    return [(start, stop) for start, stop in ranges if start < stop]


def chunks(items: Sequence[str], size: int) -> Iterable[tuple[str, ...]]:
    """Consecutive slices of at most ``size`` items."""
    for start in range(0, len(items), size):
        yield tuple(items[start : start + size])


def plan_requests(
    symbols: Sequence[str],
    windows: Mapping[Timeframe, timedelta],
    end: datetime,
    stored: Mapping[tuple[str, str], StoredRange],
    batch_size: int,
) -> list[Request]:
    """Every request still needed, symbols sharing a range batched ``batch_size`` at a time."""
    by_range: dict[tuple[Timeframe, datetime, datetime], list[str]] = {}
    for timeframe, window in windows.items():
        for symbol in symbols:
            for start, stop in missing_ranges(end - window, end, stored.get((symbol, timeframe))):
                by_range.setdefault((timeframe, start, stop), []).append(symbol)
    return [
        Request(timeframe, batch, start, stop)
        for (timeframe, start, stop), members in by_range.items()
        for batch in chunks(members, batch_size)
    ]
