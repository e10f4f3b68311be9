"""Stored ticks and bars for a backtest or a replay, in the order the live system saw them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from tradebot.common.db import Executor, connection
from tradebot.common.models import Bar, built
from tradebot.storage.queries import UnknownSymbolError, history
from tradebot.strategy.batch import TickColumns

# Within one timestamp, ticks keep their id order; their symbol order does not matter to a
# strategy (per-symbol state), and the live feed interleaves symbols the same way.
_TICKS_SQL = """
SELECT symbol, ts, id, price, size, source FROM ticks
WHERE symbol = ANY($1::text[]) AND ts >= $2 AND ts < $3
ORDER BY ts, symbol, id"""
MAX_BARS = 10_000_000


class BacktestInputError(ValueError):
    """The request cannot run (no data, an empty range, a bad strategy); the message says what to fix."""


def check_range(symbols: Sequence[str], start: datetime, end: datetime) -> None:
    if not symbols:
        raise BacktestInputError("no symbols: pass --symbols AAPL,MSFT")
    if start >= end:
        raise BacktestInputError(f"empty date range: --start {start.isoformat()} is not before --end {end.isoformat()}")


async def load_ticks(executor: Executor, symbols: Sequence[str], start: datetime, end: datetime) -> TickColumns:
    """Every stored tick of ``symbols`` in [start, end), oldest first; a symbol without any is an error.

    As columns (a sequence of Ticks to anything else): stored rows were validated when they arrived,
    and the backtester reads the columns, building only the Ticks it needs (see TickColumns).
    """
    check_range(symbols, start, end)
    async with connection(executor) as conn:
        rows = await conn.fetch(_TICKS_SQL, list(symbols), start, end)
    found: list[list[Any]] = [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in range(6)]
    symbol, ts, tick_id, price, size, source = found  # the query's column order
    ticks = TickColumns(tick_id, symbol, ts, price, size, source)
    _require_each(symbols, set(ticks.symbols), "ticks", start, end)
    return ticks


async def load_bars(
    executor: Executor, symbols: Sequence[str], timeframe: str, start: datetime, end: datetime
) -> list[Bar]:
    """The one continuous bar series of each symbol (stored bars and tick rollups), merged by time."""
    check_range(symbols, start, end)
    bars: list[Bar] = []
    for symbol in symbols:
        try:
            rows = await history(executor, symbol, timeframe, start=start, end=end, limit=MAX_BARS, now=end)
        except UnknownSymbolError:
            rows = []
        bars += [  # stored and validated when they arrived: built without validating again
            built(
                Bar, id=Bar.bar_id("history", symbol, timeframe, r["ts"]), symbol=symbol, timestamp=r["ts"],
                timeframe=timeframe, open=r["open"], high=r["high"], low=r["low"], close=r["close"],
                volume=r["volume"], trade_count=r["trade_count"], vwap=r["vwap"], source="history",
            )
            for r in rows
        ]  # fmt: skip
    _require_each(symbols, {b.symbol for b in bars}, f"{timeframe} bars", start, end)
    bars.sort(key=lambda bar: (bar.timestamp, bar.symbol))
    return bars


def _require_each(symbols: Sequence[str], found: set[str], what: str, start: datetime, end: datetime) -> None:
    missing = [s for s in symbols if s not in found]
    if missing:
        raise BacktestInputError(
            f"no stored {what} of {', '.join(missing)} between {start.isoformat()} and {end.isoformat()}: "
            "pick another range or backfill first (--backfill)"
        )
