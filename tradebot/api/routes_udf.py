"""TradingView UDF datafeed under /udf: the same bars as /history, in the protocol's table format.

Every answer is JSON (the adapter JSON-parses even /time). Errors carry ``{"s": "error",
"errmsg": ...}`` - with a 4xx status, which the adapter ignores (it reads the body) and every other
client understands. Bar times are Unix seconds; a daily bar is stamped 00:00 UTC of its New York
session date, as the protocol asks; ``nextTime`` (with ``no_data``) is in milliseconds, as the
official UDF page documents.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from tradebot.api.deps import MAX_LIMIT, ModeDep, NowDep, ReadPoolDep
from tradebot.common.models import SYMBOL_PATTERN, SYMBOL_PATTERN_ANY_CASE
from tradebot.storage import queries
from tradebot.storage.buckets import MARKET_TZ

router = APIRouter(prefix="/udf", tags=["tradingview"])

# UDF resolution -> our timeframe. "D" and "1D" are both used for daily.
RESOLUTIONS = {"1": "1m", "5": "5m", "15": "15m", "60": "1h", "1D": "1d", "D": "1d"}
SUPPORTED = ["1", "5", "15", "60", "1D"]
# Bars older than this cannot exist; a `to` before it has no data to point at.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
Seconds = Annotated[int, Query(ge=0, le=4_102_444_800, description="Unix seconds (UTC)")]
SymbolQuery = Annotated[
    str,
    Query(
        min_length=1,
        max_length=10,
        description="ticker, e.g. AAPL (case-insensitive)",
        json_schema_extra={"pattern": SYMBOL_PATTERN_ANY_CASE},
    ),
]
ResolutionQuery = Annotated[
    str, Query(description="bar width: 1, 5, 15, 60 or 1D (D too)", json_schema_extra={"enum": [*RESOLUTIONS]})
]
_TICKER = re.compile(SYMBOL_PATTERN)


def udf_error(status: int, message: str) -> JSONResponse:
    """The protocol's error object."""
    return JSONResponse(status_code=status, content={"s": "error", "errmsg": message})


def ticker_of(symbol: str) -> str | None:
    """The upper-cased ticker, or None if ``symbol`` is not one."""
    ticker = symbol.strip().upper()
    return ticker if _TICKER.fullmatch(ticker) else None


def bad_ticker(symbol: str) -> JSONResponse:
    """The error for a symbol that is not a ticker."""
    return udf_error(422, f"symbol {symbol!r} is not a valid ticker (1-10 of A-Z, 0-9, '.', '-'; e.g. AAPL)")


@router.get("/config", summary="Datafeed configuration (the library's onReady)")
async def config() -> dict[str, Any]:
    """What this datafeed supports."""
    return {
        "supports_search": True,
        "supports_group_request": False,
        "supported_resolutions": SUPPORTED,
        "supports_marks": True,
        "supports_timescale_marks": False,
        "supports_time": True,
        "exchanges": [{"value": "", "name": "All exchanges", "desc": ""}],
        "symbols_types": [{"name": "Stock", "value": "stock"}],
    }


@router.get("/time", summary="Server time, Unix seconds")
async def server_time(now: NowDep) -> int:
    """The server's clock (the adapter parses a bare number)."""
    return int(now.timestamp())


def symbol_info(symbol: str) -> dict[str, Any]:
    """A SymbolInfo for a US stock quoted in cents, traded 09:30-16:00 New York time."""
    return {
        "name": symbol,
        "ticker": symbol,
        "description": symbol,
        "type": "stock",
        "session": "0930-1600",
        "timezone": "America/New_York",
        "exchange": "US",
        "listed_exchange": "US",
        "minmov": 1,
        "pricescale": 100,
        "has_intraday": True,
        "has_daily": True,
        "intraday_multipliers": ["1", "5", "15", "60"],
        "supported_resolutions": SUPPORTED,
        "volume_precision": 0,
        "data_status": "streaming",
        "format": "price",
    }


async def _stored_symbols(pool: ReadPoolDep) -> list[str]:
    return [row["symbol"] for row in await queries.symbols(pool)]


@router.get("/symbols", summary="Symbol information")
async def symbols(symbol: SymbolQuery, pool: ReadPoolDep) -> Any:
    """SymbolInfo of a stored symbol; ``s: error`` for one without data."""
    ticker = ticker_of(symbol)
    if ticker is None:
        return bad_ticker(symbol)
    if ticker not in await _stored_symbols(pool):
        return udf_error(404, f"unknown symbol {ticker}: nothing stored for it; see /symbols")
    return symbol_info(ticker)


@router.get("/search", summary="Symbol search")
async def search(
    pool: ReadPoolDep,
    query: Annotated[str, Query(max_length=20, description="text to look for (case-insensitive)")] = "",
    type: Annotated[str, Query(max_length=20, description="symbol type; only 'stock' exists")] = "",
    exchange: Annotated[str, Query(max_length=20)] = "",
    limit: Annotated[int, Query(ge=1, le=1000)] = 30,
) -> list[dict[str, str]]:
    """Stored symbols containing ``query`` (those starting with it first)."""
    if type not in ("", "stock"):
        return []
    needle = query.strip().upper()
    found = [s for s in await _stored_symbols(pool) if needle in s]
    found.sort(key=lambda s: (not s.startswith(needle), s))
    return [
        {"symbol": s, "full_name": s, "description": s, "exchange": "US", "ticker": s, "type": "stock"}
        for s in found[:limit]
    ]


def _bar_time(ts: datetime, timeframe: str) -> int:
    if timeframe == "1d":  # 00:00 UTC of the New York session date
        day = ts.astimezone(MARKET_TZ).date()
        return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
    return int(ts.timestamp())


@router.get("/history", summary="Bars as UDF columns")
async def history(
    pool: ReadPoolDep,
    mode: ModeDep,
    now: NowDep,
    symbol: SymbolQuery,
    resolution: ResolutionQuery,
    to: Seconds,
    from_: Annotated[int, Query(alias="from", ge=0, le=4_102_444_800, description="Unix seconds")] = 0,
    countback: Annotated[int | None, Query(ge=1, le=MAX_LIMIT, description="bars ending at `to`")] = None,
) -> Any:
    """Bars in [from, to) - or the ``countback`` bars before ``to``, which then takes priority."""
    timeframe = RESOLUTIONS.get(resolution.upper())
    if timeframe is None:
        return udf_error(422, f"resolution {resolution!r} is not supported; use one of {', '.join(SUPPORTED)}")
    ticker = ticker_of(symbol)
    if ticker is None:
        return bad_ticker(symbol)
    if countback is None and from_ >= to:
        return udf_error(422, f"from ({from_}) must be before to ({to})")
    end = datetime.fromtimestamp(to, UTC)
    try:
        rows = await queries.history(
            pool,
            ticker,
            timeframe,
            end=end,
            limit=countback or MAX_LIMIT,
            rollups=mode == "timescaledb",
            kept=mode == "postgresql",
            now=now,
        )
    except queries.UnknownSymbolError:
        return udf_error(404, f"unknown symbol {ticker}: nothing stored for it")
    if countback is None:
        start = datetime.fromtimestamp(from_, UTC)
        rows = [r for r in rows if r["ts"] >= start]
    if not rows:
        return await _no_data(
            pool, mode, now, ticker, timeframe, datetime.fromtimestamp(from_ if not countback else to, UTC)
        )
    return {
        "s": "ok",
        "t": [_bar_time(r["ts"], timeframe) for r in rows],
        "o": [r["open"] for r in rows],
        "h": [r["high"] for r in rows],
        "l": [r["low"] for r in rows],
        "c": [r["close"] for r in rows],
        "v": [r["volume"] for r in rows],
    }


async def _no_data(pool: ReadPoolDep, mode: str, now: datetime, symbol: str, timeframe: str, before: datetime) -> Any:
    """``no_data``, with ``nextTime`` (ms) pointing at the latest bar before the requested range."""
    if before <= EARLIEST:
        return {"s": "no_data"}
    earlier = await queries.history(
        pool, symbol, timeframe, end=before, limit=1, rollups=mode == "timescaledb", kept=mode == "postgresql", now=now
    )
    if not earlier:
        return {"s": "no_data"}
    return {"s": "no_data", "nextTime": _bar_time(earlier[-1]["ts"], timeframe) * 1000}


_MARKS_SQL = """
SELECT id, ts, side, quantity, price FROM fills
WHERE symbol = $1 AND status = 'filled' AND ts >= $2 AND ts < $3
ORDER BY ts LIMIT $4"""


@router.get("/marks", summary="Fills as chart marks")
async def marks(
    pool: ReadPoolDep,
    symbol: SymbolQuery,
    to: Seconds,
    from_: Annotated[int, Query(alias="from", ge=0, le=4_102_444_800)] = 0,
    resolution: Annotated[str, Query(max_length=10, description="ignored: marks are placed by time")] = "1",
) -> Any:
    """Every fill of ``symbol`` in [from, to): green B for buys, red S for sells."""
    ticker = ticker_of(symbol)
    if ticker is None:
        return bad_ticker(symbol)
    if from_ > to:
        return udf_error(422, f"from ({from_}) must not be after to ({to})")
    start, end = datetime.fromtimestamp(from_, UTC), datetime.fromtimestamp(to, UTC) + timedelta(seconds=1)
    rows = await pool.fetch(_MARKS_SQL, ticker, start, end, MAX_LIMIT)
    buy = [r["side"] == "buy" for r in rows]
    return {
        "id": [r["id"] for r in rows],
        "time": [int(r["ts"].timestamp()) for r in rows],
        "color": ["green" if b else "red" for b in buy],
        "text": [f"{r['side']} {r['quantity']:g} @ {r['price']:.2f}" for r in rows],
        "label": ["B" if b else "S" for b in buy],
        "labelFontColor": ["white"] * len(rows),
        "minSize": [14] * len(rows),
    }
