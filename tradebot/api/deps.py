"""Dependencies of the routes: app state and validated query parameters, as ``Annotated`` aliases.

Every check here answers bad input with a 422 whose detail says what to fix. Every dependency is
``async def`` although none awaits: FastAPI runs a plain ``def`` dependency in its thread pool, a
thread hand-off each (a /history request has eight), which cost more than the checks themselves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, get_args

import asyncpg
import redis.asyncio as aioredis
from fastapi import Depends, HTTPException, Path, Query, Request
from pydantic import TypeAdapter, ValidationError

from tradebot.common.config import Settings
from tradebot.common.models import SYMBOL_PATTERN, SYMBOL_PATTERN_ANY_CASE, Timeframe
from tradebot.storage.timescale import Mode

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
# Outside this range no market data exists, and bucket arithmetic must not overflow.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
_SYMBOL = re.compile(SYMBOL_PATTERN)


async def get_pool(request: Request) -> asyncpg.Pool:
    """The pool on the primary (DATABASE_URL) the lifespan opened."""
    return request.app.state.pool


async def get_read_pool(request: Request) -> asyncpg.Pool:
    """The pool every read route queries: the replica (DATABASE_READ_URL), or the primary's pool."""
    return request.app.state.read_pool


async def get_mode(request: Request) -> Mode:
    """The storage mode detected at start-up (decides rollups vs on-the-fly aggregation)."""
    mode: Mode = request.app.state.mode
    return mode


async def get_redis(request: Request) -> aioredis.Redis | None:
    """The Redis client for /health, or None when REDIS_URL is not configured."""
    return request.app.state.redis


async def get_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    settings: Settings = request.app.state.settings
    return settings


async def current_time() -> datetime:
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


def normalized_symbol(symbol: str) -> str:
    """The symbol, upper-cased, if it is a valid ticker (else a 422 that says what one looks like)."""
    normalized = symbol.strip().upper()
    if not _SYMBOL.fullmatch(normalized):
        raise unprocessable(
            f"symbol {symbol!r} is not a valid ticker: 1-10 characters (A-Z, 0-9, '.', '-') "
            "starting with a letter, e.g. AAPL or BRK.B"
        )
    return normalized


# the pattern is stated for clients; normalized_symbol gives the readable error
SymbolPath = Annotated[
    str,
    Path(description="ticker, e.g. AAPL (case-insensitive)", json_schema_extra={"pattern": SYMBOL_PATTERN_ANY_CASE}),
]


async def valid_symbol(symbol: SymbolPath) -> str:
    """The path's symbol, upper-cased, if it is a valid ticker."""
    return normalized_symbol(symbol)


_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")
# What the OpenAPI schema promises start/end accept (the parser takes more): a date, or a date-time
# with an optional offset. Stated so a schema-valid request is never refused (bar the 1970-2100 bound).
TIME_PATTERN = (
    r"^(19|20)\d{2}-(0[1-9]|1[0-2])-(0[1-9]|1\d|2[0-8])"
    r"(T([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d{1,6})?)?(Z|[+-](0\d|1[0-3]):[0-5]\d)?)?$"
)
_DATETIME = TypeAdapter(datetime)


def _parse_time(name: str, given: str | None, *, whole_day_end: bool = False) -> datetime | None:
    """An ISO 8601 date or date-time as UTC. A date alone is midnight UTC, or for an end the
    midnight after it, so ``end=2026-12-01`` includes all of that day."""
    if given is None:
        return None
    text = given.strip()
    try:
        value = _DATETIME.validate_python(text)
    except ValidationError as error:
        raise unprocessable(
            f"{name}: {error.errors()[0]['msg']} (got {given!r}); use a date (2026-12-01) or an "
            f"ISO 8601 date-time (2026-12-01T14:30:00Z){_plus_hint(text)}"
        ) from None
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)  # no offset given: UTC
    if not EARLIEST <= aware <= LATEST:
        raise unprocessable(f"{name} must be between {EARLIEST.date()} and {LATEST.date()}, got {value.isoformat()}")
    if whole_day_end and _DATE_ONLY.fullmatch(text):
        aware = min(LATEST, aware + timedelta(days=1))
    return aware.astimezone(UTC)


def _plus_hint(given: str) -> str:
    # An unencoded '+' in a query string arrives as a space: "...T10:00:00 05:00".
    return " - encode '+' as %2B, or give the time in UTC with 'Z'" if re.search(r"\d \d\d:?\d\d$", given) else ""


@dataclass(frozen=True)
class TimeRange:
    """Validated start and end (UTC); either may be open. ``end`` is exclusive."""

    start: datetime | None
    end: datetime | None


StartQuery = Annotated[
    str | None,
    Query(
        description="ISO 8601 date or date-time, UTC unless an offset is given (encode '+' as %2B): "
        "from this time on, inclusive. A date alone means its midnight (UTC).",
        examples=["2026-12-01", "2026-12-01T14:30:00Z"],
        json_schema_extra={"pattern": TIME_PATTERN},
    ),
]
EndQuery = Annotated[
    str | None,
    Query(
        description="ISO 8601 date or date-time: up to this time, exclusive (default: now). A date alone "
        "means the whole day: end=2026-12-01 includes everything on 2026-12-01 (UTC).",
        examples=["2026-12-01", "2026-12-01T21:00:00Z"],
        json_schema_extra={"pattern": TIME_PATTERN},
    ),
]


def parsed_range(start: str | None, end: str | None) -> TimeRange:
    """Start and end in UTC, within range, start not after end."""
    start_utc = _parse_time("start", start)
    end_utc = _parse_time("end", end, whole_day_end=True)
    if start_utc and end_utc:
        whole_day = end is not None and _DATE_ONLY.fullmatch(end.strip()) is not None
        if start_utc > end_utc or (whole_day and start_utc == end_utc):
            shown = f"{end.strip()}, i.e. before {end_utc.isoformat()}" if whole_day else end_utc.isoformat()  # type: ignore[union-attr]
            raise unprocessable(f"start ({start_utc.isoformat()}) is after end ({shown})")
    return TimeRange(start_utc, end_utc)


async def time_range(start: StartQuery = None, end: EndQuery = None) -> TimeRange:
    """Start and end in UTC, within range, start not after end."""
    return parsed_range(start, end)


SymbolDep = Annotated[str, Depends(valid_symbol)]
TimeRangeDep = Annotated[TimeRange, Depends(time_range)]


@dataclass(frozen=True)
class BarQuery:
    """A validated request for bars."""

    symbol: str
    timeframe: Timeframe
    range: TimeRange
    limit: int
    source: str | None = None


_SOURCE = re.compile(r"[a-z0-9_.\-]{1,40}")


SourceQuery = Annotated[
    str | None,
    Query(
        description="only data of this source (mock, alpaca, polygon, ...; see /symbols). Without it, "
        "real data wins: mock ticks are left out of a symbol that has any other source, and shown "
        "only for a symbol that has nothing else. Sources never merge into one bar.",
        examples=["mock", "alpaca"],
        json_schema_extra={"pattern": r"^[A-Za-z0-9_.\-]{1,40}$"},  # normalized_source lower-cases first
    ),
]


def normalized_source(source: str | None) -> str | None:
    """The source, lower-cased, if it looks like one."""
    if source is None:
        return None
    normalized = source.strip().lower()
    if not _SOURCE.fullmatch(normalized):
        raise unprocessable(f"source {source!r} is not a source name: 1-40 of a-z, 0-9, '_', '.', '-', e.g. mock")
    return normalized


async def valid_source(source: SourceQuery = None) -> str | None:
    """The source, lower-cased, if it looks like one."""
    return normalized_source(source)


SourceDep = Annotated[str | None, Depends(valid_source)]


TIMEFRAMES: tuple[str, ...] = get_args(Timeframe)


TimeframeQuery = Annotated[
    str,
    Query(
        description=f"bucket width, one of {', '.join(TIMEFRAMES)} (case-insensitive: 1D = 1d)",
        json_schema_extra={"enum": list(TIMEFRAMES)},
    ),
]
LimitQuery = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="most bars returned; without start, the latest ones")]


def normalized_timeframe(timeframe: str) -> Timeframe:
    """The timeframe, lower-cased, if it is one we serve."""
    normalized = timeframe.strip().lower()
    if normalized not in TIMEFRAMES:
        raise unprocessable(
            f"timeframe: Input should be one of {', '.join(TIMEFRAMES)} (case-insensitive), got {timeframe!r}"
        )
    return normalized  # type: ignore[return-value]


async def bar_query(
    symbol: SymbolPath,
    start: StartQuery = None,
    end: EndQuery = None,
    timeframe: TimeframeQuery = "1m",
    limit: LimitQuery = DEFAULT_LIMIT,
    source: SourceQuery = None,
) -> BarQuery:
    """Symbol, timeframe, range, limit and source of a bars request. One dependency with every
    parameter, not one per parameter: FastAPI's cost per dependency is most of a cached
    /history response's."""
    return BarQuery(
        normalized_symbol(symbol),
        normalized_timeframe(timeframe),
        parsed_range(start, end),
        limit,
        normalized_source(source),
    )


BarQueryDep = Annotated[BarQuery, Depends(bar_query)]
