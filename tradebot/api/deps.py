"""Dependencies of the routes: app state and validated query parameters, as ``Annotated`` aliases.

Every check here answers bad input with a 422 whose detail says what to fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

import asyncpg
import redis.asyncio as aioredis
from fastapi import Depends, HTTPException, Path, Query, Request

from tradebot.common.config import Settings
from tradebot.common.models import SYMBOL_PATTERN, SYMBOL_PATTERN_ANY_CASE, Timeframe
from tradebot.storage.timescale import Mode

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
# Outside this range no market data exists, and bucket arithmetic must not overflow.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
_SYMBOL = re.compile(SYMBOL_PATTERN)


def get_pool(request: Request) -> asyncpg.Pool:
    """The pool on the primary (DATABASE_URL) the lifespan opened."""
    return request.app.state.pool


def get_read_pool(request: Request) -> asyncpg.Pool:
    """The pool every read route queries: the replica (DATABASE_READ_URL), or the primary's pool."""
    return request.app.state.read_pool


def get_mode(request: Request) -> Mode:
    """The storage mode detected at start-up (decides rollups vs on-the-fly aggregation)."""
    mode: Mode = request.app.state.mode
    return mode


def get_redis(request: Request) -> aioredis.Redis | None:
    """The Redis client for /health, or None when REDIS_URL is not configured."""
    return request.app.state.redis


def get_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    settings: Settings = request.app.state.settings
    return settings


def current_time() -> datetime:
    """Now (UTC): which buckets have closed. Tests override it via ``app.dependency_overrides``."""
    return datetime.now(UTC)


PoolDep = Annotated[asyncpg.Pool, Depends(get_pool)]
ReadPoolDep = Annotated[asyncpg.Pool, Depends(get_read_pool)]
ModeDep = Annotated[Mode, Depends(get_mode)]
RedisDep = Annotated[aioredis.Redis | None, Depends(get_redis)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
NowDep = Annotated[datetime, Depends(current_time)]


def unprocessable(message: str) -> HTTPException:
    """A 422 carrying one readable message."""
    return HTTPException(status_code=422, detail=message)


def valid_symbol(
    symbol: Annotated[
        str,
        # the pattern is stated for clients; the check below gives the readable error
        Path(
            description="ticker, e.g. AAPL (case-insensitive)", json_schema_extra={"pattern": SYMBOL_PATTERN_ANY_CASE}
        ),
    ],
) -> str:
    """The symbol, upper-cased, if it is a valid ticker."""
    normalized = symbol.strip().upper()
    if not _SYMBOL.fullmatch(normalized):
        raise unprocessable(
            f"symbol {symbol!r} is not a valid ticker: 1-10 characters (A-Z, 0-9, '.', '-') "
            "starting with a letter, e.g. AAPL or BRK.B"
        )
    return normalized


def _as_utc(name: str, value: datetime | None) -> datetime | None:
    if value is None:
        return None
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)  # no offset given: UTC
    if not EARLIEST <= aware <= LATEST:
        raise unprocessable(f"{name} must be between {EARLIEST.date()} and {LATEST.date()}, got {value.isoformat()}")
    return aware.astimezone(UTC)


@dataclass(frozen=True)
class TimeRange:
    """Validated start and end (UTC); either may be open."""

    start: datetime | None
    end: datetime | None


def time_range(
    start: Annotated[
        datetime | None,
        Query(description="ISO 8601 date or date-time (UTC unless an offset is given); bars that start at or after it"),
    ] = None,
    end: Annotated[datetime | None, Query(description="ISO 8601; bars that start before it (default: now)")] = None,
) -> TimeRange:
    """Start and end in UTC, within range, start not after end."""
    start_utc, end_utc = _as_utc("start", start), _as_utc("end", end)
    if start_utc and end_utc and start_utc > end_utc:
        raise unprocessable(f"start ({start_utc.isoformat()}) is after end ({end_utc.isoformat()})")
    return TimeRange(start_utc, end_utc)


SymbolDep = Annotated[str, Depends(valid_symbol)]
TimeRangeDep = Annotated[TimeRange, Depends(time_range)]


@dataclass(frozen=True)
class BarQuery:
    """A validated request for bars."""

    symbol: str
    timeframe: Timeframe
    range: TimeRange
    limit: int


def bar_query(
    symbol: SymbolDep,
    window: TimeRangeDep,
    timeframe: Annotated[Timeframe, Query(description="bucket width")] = "1m",
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description="most bars returned; without start, the latest ones")
    ] = DEFAULT_LIMIT,
) -> BarQuery:
    """Symbol, timeframe, range and limit of a bars request."""
    return BarQuery(symbol, timeframe, window, limit)


BarQueryDep = Annotated[BarQuery, Depends(bar_query)]
