"""Read-only market history: bars, the same bars by column, summary statistics, symbols."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import msgspec
from fastapi import APIRouter, Request, Response

from tradebot.api.deps import BarQuery, BarQueryDep, ModeDep, NowDep, ReadPoolDep, SourceDep, SymbolDep, TimeRangeDep
from tradebot.api.history_cache import CACHE_HEADER, HistoryCache, may_cache
from tradebot.api.schemas import BarOut, ErrorOut, HistoryOut, OhlcvOut, StatsOut, SymbolOut, SymbolsOut
from tradebot.common import rounding
from tradebot.storage import queries
from tradebot.storage.buckets import MARKET_TZ

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "no data was ever stored for this symbol (or from this source)"},
    422: {
        "model": ErrorOut,
        "description": "invalid symbol, timeframe, dates or limit; or stored data in the "
        "range that cannot be aggregated (values out of range: the detail "
        "says which symbol and why; a range without those rows works)",
    },
}

router = APIRouter(tags=["history"])


async def _bars(pool: asyncpg.Pool, query: BarQuery, mode: str, now: datetime) -> Sequence[asyncpg.Record]:
    return (await _series(pool, query, mode, now)).rows


async def _series(
    pool: asyncpg.Pool | asyncpg.Connection,
    query: BarQuery,
    mode: str,
    now: datetime,
    encoded: bool = False,
    stamped: bool = False,
) -> queries.Series:
    return await queries.series(
        pool,
        query.symbol,
        query.timeframe,
        start=query.range.start,
        end=query.range.end,
        limit=query.limit,
        rollups=mode == "timescaledb",
        kept=mode == "postgresql",
        now=now,
        source=query.source,
        encoded=encoded,
        stamped=stamped,
    )


def bar_out(row: asyncpg.Record, timeframe: str) -> BarOut:
    """A stored or aggregated bar as shown: prices as quoted, VWAP to 4 decimals, daily bars dated.
    The model's way, which ``history_json`` must match (tests/test_history_json.py)."""
    return BarOut(
        timestamp=row["ts"],
        session_date=row["ts"].astimezone(MARKET_TZ).date() if timeframe == "1d" else None,
        open=rounding.price(row["open"]),  # type: ignore[arg-type]
        high=rounding.price(row["high"]),  # type: ignore[arg-type]
        low=rounding.price(row["low"]),  # type: ignore[arg-type]
        close=rounding.price(row["close"]),  # type: ignore[arg-type]
        volume=row["volume"],
        trade_count=row["trade_count"],
        vwap=rounding.vwap(row["vwap"]),
    )


@router.get("/history/{symbol}", response_model=HistoryOut, responses=ERRORS)
async def history(query: BarQueryDep, now: NowDep, request: Request) -> Response:
    """OHLCV bars of one continuous series (stored bars and ticks merged), oldest first.

    With ``start``: the first ``limit`` bars starting at or after it. Without: the latest ``limit``
    bars starting before ``end`` (default now, including the current, still open bar). Prices are
    rounded as quoted (to the cent; 4 decimals below $1), VWAP to 4 decimals; a daily bar also
    carries its session date (America/New_York). A window whose bars have all closed may be served
    from the API's cache of encoded windows (header x-history-cache: hit), never after a write
    that changed it (see api/history_cache.py).
    """
    # The pool and the mode straight from the app's state (deps.get_read_pool, deps.get_mode): a
    # dependency each cost more than the route's own Python on a cache hit.
    state = request.app.state
    pool: asyncpg.Pool = state.read_pool
    mode: str = state.mode
    cache: HistoryCache | None = state.history_cache
    if cache is None or mode != "postgresql" or not may_cache(query):
        found = await _series(pool, query, mode, now, encoded=True)
        return Response(history_json(query.symbol, query.timeframe, mode, found), media_type="application/json")
    async with pool.acquire() as conn:
        if cache.holds(query):  # its stamp decides whether the kept bytes still hold: one query
            body = cache.get(query, await queries.history_stamp(conn, query.symbol), now)
            if body is not None:
                return Response(body, media_type="application/json", headers={CACHE_HEADER: "hit"})
        # The stamp read with the bars (or before them): bytes are kept under the stamp they were
        # computed under (a write in between changes the version, so they are never served under
        # a stamp they do not match). A window never served is one statement (queries.series).
        found = await _series(conn, query, mode, now, encoded=True, stamped=True)
    body = history_json(query.symbol, query.timeframe, mode, found)
    assert found.stamp is not None
    kept = cache.offer(query, found.stamp, found, now, body)
    return Response(body, media_type="application/json", headers={CACHE_HEADER: "miss" if kept else "fresh"})


_JSON = msgspec.json.Encoder()


def history_json(symbol: str, timeframe: str, mode: str, found: queries.Series) -> bytes:
    """The HistoryOut document of ``found``, encoded straight from the rows: the document
    ``HistoryOut(...).model_dump_json()`` gives (tests/test_history_json.py compares them), without
    a validated model per bar and a response model validating them all again. Bars the query
    already encoded (``found.encoded``, storage/bars_json.py) pass through as they are."""
    if found.encoded is not None:
        head = _JSON.encode(
            {"symbol": symbol, "timeframe": timeframe, "mode": mode, "sources": found.sources, "count": found.bar_count}
        )
        return b"".join((head[:-1], b',"bars":[', found.encoded.encode(), b"]}"))
    price, vwap, daily = rounding.price, rounding.vwap, timeframe == "1d"
    bars = [
        {
            "timestamp": r["ts"],
            "session_date": r["ts"].astimezone(MARKET_TZ).date() if daily else None,
            "open": price(r["open"]),
            "high": price(r["high"]),
            "low": price(r["low"]),
            "close": price(r["close"]),
            "volume": float(r["volume"]),
            "trade_count": r["trade_count"],
            "vwap": vwap(r["vwap"]),
        }
        for r in found.rows
    ]
    document = {
        "symbol": symbol,
        "timeframe": timeframe,
        "mode": mode,
        "sources": found.sources,
        "count": len(bars),
        "bars": bars,
    }
    return _JSON.encode(document)


@router.get("/ohlcv/{symbol}", response_model=OhlcvOut, responses=ERRORS)
async def ohlcv(query: BarQueryDep, pool: ReadPoolDep, mode: ModeDep, now: NowDep) -> OhlcvOut:
    """The bars of /history as parallel arrays (same parameters, same bars, same rounding)."""
    rows = await _bars(pool, query, mode, now)
    # Rounded as bar_out rounds, column by column: a model per bar would cost the dashboard's
    # first paint 20 ms per 1,000 bars.
    price = rounding.price
    column = {
        "timestamp": [r["ts"] for r in rows],
        **{name: [price(r[name]) for r in rows] for name in ("open", "high", "low", "close")},
        "volume": [r["volume"] for r in rows],
        "trade_count": [r["trade_count"] for r in rows],
        "vwap": [rounding.vwap(r["vwap"]) for r in rows],
    }
    dates = [r["ts"].astimezone(MARKET_TZ).date() for r in rows] if query.timeframe == "1d" else None
    return OhlcvOut(symbol=query.symbol, timeframe=query.timeframe, count=len(rows), session_date=dates, **column)


@router.get("/stats/{symbol}", response_model=StatsOut, responses=ERRORS)
async def stats(
    symbol: SymbolDep, window: TimeRangeDep, pool: ReadPoolDep, mode: ModeDep, now: NowDep, source: SourceDep = None
) -> StatsOut:
    """Summary statistics of the daily series between ``start`` and ``end`` (default: all history)."""
    row = await queries.stats(
        pool,
        symbol,
        start=window.start,
        end=window.end,
        rollups=mode == "timescaledb",
        kept=mode == "postgresql",
        now=now,
        source=source,
    )
    change = row["close"] - row["open"] if row["days"] else None
    change_pct = change / row["open"] * 100 if change is not None else None
    if change_pct is not None and not math.isfinite(change_pct):  # JSON has no Infinity
        raise queries.StoredDataError(symbol, f"change_pct overflows (open {row['open']!r}, close {row['close']!r})")
    shown = {name: rounding.price(row[name]) for name in ("open", "high", "low", "close")}
    return StatsOut(
        **{**dict(row), **shown, "vwap": rounding.vwap(row["vwap"])},
        symbol=symbol,
        change=rounding.price(change) if change is not None else None,
        change_pct=round(change_pct, 2) if change_pct is not None else None,
        first_session=row["first_day"].astimezone(MARKET_TZ).date() if row["first_day"] else None,
        last_session=row["last_day"].astimezone(MARKET_TZ).date() if row["last_day"] else None,
    )


@router.get("/symbols", response_model=SymbolsOut)
async def symbols(pool: ReadPoolDep) -> SymbolsOut:
    """Every symbol with stored ticks or bars, its first and last time, and the counts."""
    rows = await queries.symbols(pool)
    found = [
        SymbolOut(
            symbol=r["symbol"],
            first=r["first_ts"],
            last=r["last_ts"],
            ticks=r["ticks"],
            bars=r["bars"],
            sources=r["sources"],
        )
        for r in rows
    ]
    return SymbolsOut(count=len(found), symbols=found)
