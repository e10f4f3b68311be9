"""Read-only market history: bars, the same bars by column, summary statistics, symbols."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
from fastapi import APIRouter

from tradebot.api.deps import BarQuery, BarQueryDep, ModeDep, NowDep, ReadPoolDep, SymbolDep, TimeRangeDep
from tradebot.api.schemas import BarOut, ErrorOut, HistoryOut, OhlcvOut, StatsOut, SymbolOut, SymbolsOut
from tradebot.storage import queries

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "no data was ever stored for this symbol"},
    422: {
        "model": ErrorOut,
        "description": "invalid symbol, timeframe, dates or limit; or stored data in the "
        "range that cannot be aggregated (values out of range: the detail "
        "says which symbol and why; a range without those rows works)",
    },
}

router = APIRouter(tags=["history"])


async def _bars(pool: asyncpg.Pool, query: BarQuery, mode: str, now: datetime) -> Sequence[asyncpg.Record]:
    return await queries.history(
        pool,
        query.symbol,
        query.timeframe,
        start=query.range.start,
        end=query.range.end,
        limit=query.limit,
        rollups=mode == "timescaledb",
        now=now,
    )


@router.get("/history/{symbol}", response_model=HistoryOut, responses=ERRORS)
async def history(query: BarQueryDep, pool: ReadPoolDep, mode: ModeDep, now: NowDep) -> HistoryOut:
    """OHLCV bars of one continuous series (stored bars and ticks merged), oldest first.

    With ``start``: the first ``limit`` bars starting at or after it. Without: the latest ``limit``
    bars starting before ``end`` (default now, including the current, still open bar).
    """
    rows = await _bars(pool, query, mode, now)
    bars = [
        BarOut(
            timestamp=r["ts"],
            open=r["open"],
            high=r["high"],
            low=r["low"],
            close=r["close"],
            volume=r["volume"],
            trade_count=r["trade_count"],
            vwap=r["vwap"],
        )
        for r in rows
    ]
    return HistoryOut(symbol=query.symbol, timeframe=query.timeframe, mode=mode, count=len(bars), bars=bars)


@router.get("/ohlcv/{symbol}", response_model=OhlcvOut, responses=ERRORS)
async def ohlcv(query: BarQueryDep, pool: ReadPoolDep, mode: ModeDep, now: NowDep) -> OhlcvOut:
    """The bars of /history as parallel arrays (same parameters, same bars)."""
    rows = await _bars(pool, query, mode, now)
    column = {
        name: [r[name] for r in rows] for name in ("open", "high", "low", "close", "volume", "trade_count", "vwap")
    }
    return OhlcvOut(
        symbol=query.symbol, timeframe=query.timeframe, count=len(rows), timestamp=[r["ts"] for r in rows], **column
    )


@router.get("/stats/{symbol}", response_model=StatsOut, responses=ERRORS)
async def stats(symbol: SymbolDep, window: TimeRangeDep, pool: ReadPoolDep, mode: ModeDep, now: NowDep) -> StatsOut:
    """Summary statistics of the daily series between ``start`` and ``end`` (default: all history)."""
    row = await queries.stats(pool, symbol, start=window.start, end=window.end, rollups=mode == "timescaledb", now=now)
    change = row["close"] - row["open"] if row["days"] else None
    change_pct = change / row["open"] * 100 if change is not None else None
    if change_pct is not None and not math.isfinite(change_pct):  # JSON has no Infinity
        raise queries.StoredDataError(symbol, f"change_pct overflows (open {row['open']!r}, close {row['close']!r})")
    return StatsOut(symbol=symbol, change=change, change_pct=change_pct, **dict(row))


@router.get("/symbols", response_model=SymbolsOut)
async def symbols(pool: ReadPoolDep) -> SymbolsOut:
    """Every symbol with stored ticks or bars, its first and last time, and the counts."""
    rows = await queries.symbols(pool)
    found = [
        SymbolOut(symbol=r["symbol"], first=r["first_ts"], last=r["last_ts"], ticks=r["ticks"], bars=r["bars"])
        for r in rows
    ]
    return SymbolsOut(count=len(found), symbols=found)
