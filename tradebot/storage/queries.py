"""Read side of the history API: bars, summary statistics and the symbol list, in either mode.

``rollups`` and ``kept`` select the source of tick aggregates: TimescaleDB's continuous aggregates
(``rollups``), plain PostgreSQL's kept 1-minute and daily series (``kept``), on-the-fly ``date_bin``
aggregation of the ticks otherwise (see series.py); results are the same. ``now``
decides which buckets have closed (a stored bar of a still open bucket does not hide the live
series); it defaults to the current time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cache
from typing import NamedTuple, TypeVar

import asyncpg

from tradebot.common.db import Executor, connection
from tradebot.storage.bars_json import bars_json_sql, first_kept_minutes_json_sql, kept_minutes_json_sql
from tradebot.storage.buckets import TIMEFRAMES, WIDTHS, ceil_bucket, floor_bucket, next_bucket
from tradebot.storage.series import KEPT_TIMEFRAMES, Aggregates, history_sql, stats_sql
from tradebot.storage.timescale import GENERIC_PLAN_TIMEFRAMES, generic_plans

# Before every stored time (the API accepts 1970-2100): the lower end of an unbounded kept-edge scan.
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
# A window grows this much when it held fewer bars than asked for (gaps: nights, weekends).
WINDOW_GROWTH = 4

_SYMBOLS_SQL = """
SELECT symbol, min(first_ts) AS first_ts, max(last_ts) AS last_ts,
       sum(ticks)::bigint AS ticks, sum(bars)::bigint AS bars,
       coalesce((SELECT array_agg(source ORDER BY source) FROM symbol_sources s WHERE s.symbol = per_table.symbol),
                '{}') AS sources
FROM (
    SELECT symbol, min(ts) AS first_ts, max(ts) AS last_ts, count(*) AS ticks, 0 AS bars
    FROM ticks GROUP BY symbol
    UNION ALL
    SELECT symbol, min(ts), max(ts), 0, count(*) FROM bars GROUP BY symbol
) per_table
GROUP BY symbol ORDER BY symbol"""


MOCK_SOURCE = "mock"


class UnknownSymbolError(LookupError):
    """No tick or bar of this symbol was ever stored."""


class UnknownSourceError(LookupError):
    """Nothing of this symbol is stored from the requested source."""

    def __init__(self, symbol: str, source: str, stored: Sequence[str]):
        super().__init__(
            f"no data of source {source!r} stored for {symbol}; stored sources: {', '.join(stored) or 'none'}"
        )


async def stored_sources(conn: asyncpg.Connection, symbol: str) -> list[str]:
    """The sources holding ticks or bars of ``symbol``, by name."""
    rows = await conn.fetch("SELECT source FROM symbol_sources WHERE symbol = $1 ORDER BY source", symbol)
    return [row["source"] for row in rows]


async def chosen_sources(conn: asyncpg.Connection, symbol: str, requested: str | None) -> tuple[list[str], bool]:
    """Which sources make up the series of ``symbol``, and whether that is a subset of what is stored.

    Mock and real data never merge: ``requested`` picks one source; without it, real data wins
    (every source but mock) and mock data shows only for a symbol that has nothing else."""
    return choose_sources(symbol, await stored_sources(conn, symbol), requested)


def choose_sources(symbol: str, stored: Sequence[str], requested: str | None) -> tuple[list[str], bool]:
    """``chosen_sources`` out of the ``stored`` sources (sorted by name)."""
    if requested is not None:
        if requested not in stored:
            raise UnknownSourceError(symbol, requested, stored)
        chosen = [requested]
    else:
        chosen = [source for source in stored if source != MOCK_SOURCE] or list(stored)
    return chosen, chosen != list(stored)


class StoredDataError(ValueError):
    """Stored ticks or bars of ``symbol`` cannot be aggregated: a product or sum of their values
    leaves the range of double precision (e.g. price * size of a 1e200 tick overflows). The same
    request fails until those rows are deleted; a range that leaves them out works."""

    def __init__(self, symbol: str, reason: str) -> None:
        super().__init__(f"stored data for {symbol} cannot be aggregated: {reason}")
        self.symbol = symbol
        self.reason = reason


@contextmanager
def _aggregating(symbol: str) -> Iterator[None]:
    """Turn the database's data errors (class 22: out of range, division by zero) into StoredDataError."""
    try:
        yield
    except asyncpg.DataError as error:
        raise StoredDataError(symbol, str(error)) from error


async def series_sources(executor: Executor, symbol: str, requested: str | None) -> list[str]:
    """The sources the series of ``symbol`` is built from (see ``chosen_sources``)."""
    async with connection(executor) as conn:
        return (await chosen_sources(conn, symbol, requested))[0]


# The bars' ends one timeframe at a time: each is one step down the primary key (symbol, timeframe,
# ts, ...), where min(ts) over the symbol alone reads every bar it has (90 ms for a year of minutes).
_BARS_END = (
    "(SELECT {0}((SELECT {0}(ts) FROM bars WHERE symbol = $1 AND timeframe = tf)) FROM unnest($2::text[]) AS tf)"
)


@cache
def _range_sql(
    rollups: bool, with_sources: bool = False, kept: bool = False, edge: str | None = None, newest_first: bool = False
) -> str:
    """Earliest and latest stored time of $1 ($2: the timeframes), with ``with_sources`` its
    stored sources, with ``kept`` whether its kept series is off (ticks that overflow), and with
    ``edge`` (a table of tick buckets: a kept series or a continuous aggregate) ``edge``: its $5-th
    bucket (from 0) in [$3, $4), from the oldest or with ``newest_first`` from the newest. What a
    history request needs first, in one round trip."""
    firsts = ["(SELECT min(ts) FROM ticks WHERE symbol = $1)", _BARS_END.format("min")]
    if rollups:
        firsts.append("(SELECT min(bucket) FROM ohlcv_1d WHERE symbol = $1)")
    sources = (
        ", coalesce((SELECT array_agg(source ORDER BY source) FROM symbol_sources WHERE symbol = $1), '{}') AS sources"
        if with_sources
        else ""
    )
    off = ", EXISTS (SELECT 1 FROM kept_series_off WHERE symbol = $1) AS kept_off" if kept else ""
    if edge:
        off += (
            f", (SELECT bucket FROM {edge} WHERE symbol = $1 AND bucket >= $3 AND bucket < $4 "
            f"ORDER BY bucket {'DESC' if newest_first else 'ASC'} OFFSET $5 LIMIT 1) AS edge"
        )
    return (
        f"SELECT least({', '.join(firsts)}) AS first, "
        f"greatest((SELECT max(ts) FROM ticks WHERE symbol = $1), {_BARS_END.format('max')}) AS last{sources}{off}"
    )


async def data_range(conn: asyncpg.Connection, symbol: str, rollups: bool) -> tuple[datetime | None, datetime | None]:
    """Earliest and latest stored time of ``symbol`` (ticks, bars, and rollups that outlive ticks)."""
    row = await conn.fetchrow(_range_sql(rollups), symbol, list(TIMEFRAMES))
    return row["first"], row["last"]


async def kept_series_off(conn: asyncpg.Connection, symbol: str) -> bool:
    """Whether the kept series of ``symbol`` is off (its ticks overflow: aggregate them on the fly)."""
    off: bool = await conn.fetchval("SELECT EXISTS (SELECT 1 FROM kept_series_off WHERE symbol = $1)", symbol)
    return off


def aggregates(rollups: bool, kept: bool, filtered: bool) -> Aggregates:
    """Where a series' tick aggregates come from: both prepared kinds mix every source, so a
    series of a subset of the stored sources aggregates its ticks on the fly."""
    if filtered:
        return "ticks"
    return "rollups" if rollups else "kept" if kept else "ticks"


class HistoryStamp(NamedTuple):
    """What a cached /history response of a symbol was computed under (api/history_cache.py):
    its history version (None: no row, never cached) and frontier
    (storage/migrations/postgresql/0024_history_versions.sql), its stored sources and whether its
    kept series is off, the facts besides the bars that shape a response."""

    version: int | None
    frontier: datetime | None
    sources: tuple[str, ...]
    kept_off: bool

    @property
    def facts(self) -> tuple[int | None, tuple[str, ...], bool]:
        """What a kept response must match (the frontier moves with writes past it: no change)."""
        return self.version, self.sources, self.kept_off


# The HistoryStamp of $1, as columns of any statement (plain PostgreSQL only: four index probes).
_STAMP_COLUMNS = """(SELECT version FROM history_versions WHERE symbol = $1) AS version,
       (SELECT CASE WHEN isfinite(frontier) THEN frontier END FROM history_versions WHERE symbol = $1) AS frontier,
       coalesce((SELECT array_agg(source ORDER BY source) FROM symbol_sources WHERE symbol = $1), '{}') AS sources,
       EXISTS (SELECT 1 FROM kept_series_off WHERE symbol = $1) AS kept_off"""


def _stamp_of(row: asyncpg.Record) -> HistoryStamp:
    return HistoryStamp(row["version"], row["frontier"], tuple(row["sources"]), row["kept_off"])


async def history_stamp(conn: asyncpg.Connection, symbol: str) -> HistoryStamp:
    """The HistoryStamp of ``symbol`` now (plain PostgreSQL only)."""
    row = await conn.fetchrow(f"SELECT {_STAMP_COLUMNS}", symbol)
    assert row is not None
    return _stamp_of(row)


class Series(NamedTuple):
    """Bars of one series, and the sources they are built from; with ``encoded`` (series(...,
    encoded=True)) the bars as PostgreSQL spelled them instead of ``rows``: their JSON objects
    joined by commas, oldest first (see bars_json.py)."""

    rows: Sequence[asyncpg.Record]
    sources: list[str]
    encoded: str | None = None
    bar_count: int = 0
    last: datetime | None = None  # the newest bar's time (None: no bars)
    stamp: HistoryStamp | None = None  # with series(..., stamped=True): read before or with the bars


Found = TypeVar("Found")


async def history(
    executor: Executor,
    symbol: str,
    timeframe: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int = 1000,
    rollups: bool = False,
    kept: bool = False,
    now: datetime | None = None,
    source: str | None = None,
) -> Sequence[asyncpg.Record]:
    """Bars (oldest first) starting at or after ``start``; without ``start``, the latest ``limit``
    bars starting before ``end`` (default: now, so the current, still open bucket is included).

    Only the sources ``chosen_sources`` picks make up the series. Raises UnknownSymbolError when
    nothing of ``symbol`` is stored, UnknownSourceError when nothing of ``source`` is, and
    StoredDataError when stored values in range cannot be aggregated."""
    found = await series(
        executor,
        symbol,
        timeframe,
        start=start,
        end=end,
        limit=limit,
        rollups=rollups,
        kept=kept,
        now=now,
        source=source,
    )
    return found.rows


async def series(
    executor: Executor,
    symbol: str,
    timeframe: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int = 1000,
    rollups: bool = False,
    kept: bool = False,
    now: datetime | None = None,
    source: str | None = None,
    encoded: bool = False,
    stamped: bool = False,
) -> Series:
    """``history``'s bars together with the sources they are built from: two queries, or for the
    rollups three when their edge is not used (none near the anchored end, a series of some
    sources); the kept 1-minute series' JSON in one query where no stored bar lies in the window.

    ``encoded``: the bars as JSON built by the query (``Series.encoded``), unless a bar's values
    are not plain (bars_json.py), then as rows like without it (one more query). ``stamped``
    (plain PostgreSQL): with ``Series.stamp``, the symbol's HistoryStamp read in the same
    statement as the bars or before them."""
    now = now or datetime.now(UTC)
    kept = kept and not rollups
    edge_table = _edge_table(timeframe, rollups, kept)
    newest_first = start is None
    edge_window = _edge_window(timeframe, start, end or now, limit, rollups)
    async with connection(executor) as conn:
        stamp = None
        if kept and encoded and timeframe == "1m":
            found, stamp = await _first_kept_minutes(conn, symbol, edge_window, limit, source, newest_first)
            if found is not None:
                return found._replace(stamp=stamp if stamped else None)
        elif stamped:
            stamp = await history_stamp(conn, symbol)
        found = await _series_from_facts(
            conn, symbol, timeframe, start, end, limit, rollups, kept, now, source, encoded, edge_table, edge_window
        )
        return found._replace(stamp=stamp if stamped else None)


async def _first_kept_minutes(
    conn: asyncpg.Connection,
    symbol: str,
    window: tuple[datetime, datetime],
    limit: int,
    source: str | None,
    newest_first: bool,
) -> tuple[Series | None, HistoryStamp]:
    """The encoded 1-minute series of ``symbol`` from the kept minutes and its HistoryStamp, in one
    statement (bars_json.first_kept_minutes_json_sql); the Series is None (read it the long way,
    under that stamp) unless the answer is that plain: kept minutes found, no stored 1-minute bar
    among them, every source's series (the kept series mixes them), the kept series on, every bar
    plain. (For a series of some sources or a kept series switched off the statement reads no
    minutes: only the stamp costs anything then.)"""
    with _aggregating(symbol):
        row = await conn.fetchrow(_first_kept_minutes_sql(newest_first), symbol, *window, limit, source)
    assert row is not None  # an aggregate without GROUP BY always returns one row
    stamp = _stamp_of(row)
    if not row["count"] or row["stored_minutes"] or not row["plain"]:
        return None, stamp
    sources, filtered = choose_sources(symbol, row["sources"], source)
    if filtered or row["kept_off"]:  # the statement's condition already excluded these
        return None, stamp
    return Series([], sources, encoded=row["bars"], bar_count=row["count"], last=row["last"]), stamp


# Whether the series of $1 from the source $5 (NULL: chosen_sources' choice) is of every stored
# source, and its kept series is on: when the kept minutes may answer (as choose_sources decides).
_KEPT_MINUTES_ANSWER = f"""NOT EXISTS (SELECT 1 FROM kept_series_off WHERE symbol = $1) AND (
        SELECT CASE WHEN $5::text IS NULL
                    THEN NOT coalesce(bool_or(source = '{MOCK_SOURCE}') AND bool_or(source <> '{MOCK_SOURCE}'), false)
                    ELSE coalesce(bool_and(source = $5), false) END
        FROM symbol_sources WHERE symbol = $1)"""


@cache
def _first_kept_minutes_sql(newest_first: bool) -> str:
    return first_kept_minutes_json_sql(newest_first, _KEPT_MINUTES_ANSWER, f", {_STAMP_COLUMNS}")


async def _series_from_facts(
    conn: asyncpg.Connection,
    symbol: str,
    timeframe: str,
    start: datetime | None,
    end: datetime | None,
    limit: int,
    rollups: bool,
    kept: bool,
    now: datetime,
    source: str | None,
    encoded: bool,
    edge_table: str | None,
    edge_window: tuple[datetime, datetime],
) -> Series:
    """``series`` the general way: the facts first (the data's range, the sources, the kept-series
    switch and the edge, or for the rollups the edge alone), then the bars of the window they give."""
    newest_first = start is None
    generic = rollups and timeframe in GENERIC_PLAN_TIMEFRAMES
    if rollups:
        # The edge and the bars in one transaction on their generic plans (the edge query planned
        # per request cost ~0.5 ms of backend CPU on the bench's 10M-tick table); the range query
        # of the fallback below is planned per request outside it.
        async with generic_plans(conn, generic):
            found = await conn.fetchrow(_rollups_edge_sql(timeframe, newest_first), symbol, *edge_window, limit - 1)
            sources, filtered = choose_sources(symbol, found["sources"], source)
            # The edge counts the buckets of every source: a series of some sources has fewer.
            edge = None if filtered else found["edge"]
            if edge is not None:
                # The window up to the rollups' limit-th bucket holds the answer; the data's range
                # only clamps windows, so it is not asked for (min and max of the ticks are planned
                # over every chunk of the hypertable: ~0.1 ms a compressed one).
                lower, upper = (
                    (edge, edge_window[1]) if newest_first else (edge_window[0], next_bucket(edge, timeframe))
                )
                return await _window_bars(
                    conn,
                    symbol,
                    timeframe,
                    "rollups",
                    lower,
                    upper,
                    limit,
                    now,
                    sources,
                    False,
                    edge,
                    encoded,
                    newest_first,
                )
    probe = None if rollups else edge_table  # the rollups' edge was looked for above
    facts = await conn.fetchrow(
        _range_sql(rollups, with_sources=True, kept=kept, edge=probe, newest_first=newest_first),
        symbol,
        list(TIMEFRAMES),
        *((*edge_window, limit - 1) if probe else ()),
    )
    first, last = facts["first"], facts["last"]
    if first is None or last is None:
        raise UnknownSymbolError(symbol)
    sources, filtered = choose_sources(symbol, facts["sources"], source)
    # Clamped to the data, so growing windows never scan years of nothing (or of everything).
    lower = floor_bucket(first, timeframe)
    if start is not None:
        lower = max(lower, ceil_bucket(start, timeframe))
    upper = min(ceil_bucket(end or now, timeframe), next_bucket(floor_bucket(last, timeframe), timeframe))
    if lower >= upper:
        return Series([], sources)
    kept = kept and not facts["kept_off"]
    chosen = aggregates(rollups, kept, filtered)
    # The edge counts the buckets of every source: a series of some sources has fewer.
    edge = facts["edge"] if probe and chosen == "kept" else None
    async with generic_plans(conn, generic and chosen == "rollups"):
        return await _window_bars(
            conn, symbol, timeframe, chosen, lower, upper, limit, now, sources, filtered, edge, encoded, newest_first
        )


async def _window_bars(
    conn: asyncpg.Connection,
    symbol: str,
    timeframe: str,
    chosen: Aggregates,
    lower: datetime,
    upper: datetime,
    limit: int,
    now: datetime,
    sources: list[str],
    filtered: bool,
    edge: datetime | None,
    encoded: bool,
    newest_first: bool,
) -> Series:
    """The bars of the series from ``chosen`` in [lower, upper) up to the ``edge`` (see ``_fetch``)."""
    sql = history_sql(timeframe, chosen, newest_first=newest_first, filtered=filtered)
    extra = (sources,) if filtered else ()
    if encoded:
        # The kept minutes' JSON is spelled once off the read path (storage/fragments.py).
        kept_minutes = chosen == "kept" and timeframe == "1m"
        spelled = history_sql(timeframe, chosen, newest_first, filtered, kept_minutes) if kept_minutes else sql
        found = await _fetch(
            conn,
            bars_json_sql(spelled, timeframe == "1d", kept_minutes),
            symbol,
            timeframe,
            lower,
            upper,
            limit,
            now,
            extra,
            edge,
            newest_first,
            _kept_minutes_encoded(newest_first) if kept_minutes else _encoded,
        )
        if found[0] is not None:
            bars, newest = found[0]
            return Series([], sources, encoded=bars, bar_count=found[1], last=newest)
    rows, _ = await _fetch(conn, sql, symbol, timeframe, lower, upper, limit, now, extra, edge, newest_first, _rows)
    rows = rows if not newest_first else rows[::-1]
    return Series(rows, sources, last=rows[-1]["ts"] if rows else None)


@cache
def _rollups_edge_sql(timeframe: str, newest_first: bool) -> str:
    """The stored sources of $1 and the $4-th bucket (from 0) of its rollups in [$2, $3), from the
    oldest or with ``newest_first`` from the newest: a rollups request's first query."""
    return (
        "SELECT coalesce((SELECT array_agg(source ORDER BY source) FROM symbol_sources WHERE symbol = $1), '{}') "
        f"AS sources, (SELECT bucket FROM {_edge_table(timeframe, True, False)} WHERE symbol = $1 AND bucket >= $2 "
        f"AND bucket < $3 ORDER BY bucket {'DESC' if newest_first else 'ASC'} OFFSET $4 LIMIT 1) AS edge"
    )


def _edge_table(timeframe: str, rollups: bool, kept: bool) -> str | None:
    """The table whose buckets are each a bar of the series, when the series reads one: a
    continuous aggregate (every timeframe has its own) or a kept series (1m and 1d)."""
    if timeframe not in TIMEFRAMES:  # it is spliced into SQL: only the known literals may pass
        raise ValueError(f"unknown timeframe {timeframe!r}; one of {', '.join(TIMEFRAMES)}")
    if rollups:
        return f"ohlcv_{timeframe}"
    return f"ohlcv_kept_{timeframe}" if kept and timeframe in KEPT_TIMEFRAMES else None


def _edge_window(
    timeframe: str, start: datetime | None, end: datetime, limit: int, rollups: bool
) -> tuple[datetime, datetime]:
    """Where the edge is looked for: the request's whole range in a kept series (an index walk
    that stops at the edge); in the rollups only WINDOW_GROWTH windows of ``limit`` buckets from
    the end the bars start at, as a continuous aggregate's view sorts every bucket in the range
    (~0.4 s for a year of minutes). No edge there: the windows grow as without one."""
    lower, upper = ceil_bucket(start, timeframe) if start else EARLIEST, ceil_bucket(end, timeframe)
    if rollups:
        span = WIDTHS[timeframe] * limit * WINDOW_GROWTH
        if start is not None:
            upper = min(upper, ceil_bucket(lower + span, timeframe))
        else:
            lower = max(lower, floor_bucket(upper - span, timeframe))
    return lower, upper


async def _rows(conn: asyncpg.Connection, sql: str, args: tuple[object, ...]) -> tuple[Sequence[asyncpg.Record], int]:
    rows: Sequence[asyncpg.Record] = await conn.fetch(sql, *args)
    return rows, len(rows)


Encoded = tuple[tuple[str, datetime | None] | None, int]


async def _encoded(conn: asyncpg.Connection, sql: str, args: tuple[object, ...]) -> Encoded:
    """The bars' JSON and the newest bar's time, or None when a bar is not plain (encode the rows instead)."""
    row = await conn.fetchrow(sql, *args)
    assert row is not None  # an aggregate without GROUP BY always returns one row
    return _encoded_row(row)


def _encoded_row(row: asyncpg.Record) -> Encoded:
    return ((row["bars"], row["last"]) if row["plain"] else None), row["count"]


def _kept_minutes_encoded(
    newest_first: bool,
) -> Callable[[asyncpg.Connection, str, tuple[object, ...]], Awaitable[Encoded]]:
    """``_encoded`` of the 1-minute series from the kept minutes alone where no stored 1-minute bar
    lies in the window (bars_json.kept_minutes_json_sql), else of ``sql``, the whole series."""
    kept_sql = kept_minutes_json_sql(newest_first)

    async def fetch(conn: asyncpg.Connection, sql: str, args: tuple[object, ...]) -> Encoded:
        symbol, lower, upper, _, limit = args  # the series is unfiltered: no sources
        row = await conn.fetchrow(kept_sql, symbol, lower, upper, limit)
        assert row is not None
        if row["stored_minutes"]:
            return await _encoded(conn, sql, args)
        return _encoded_row(row)

    return fetch


async def _fetch(
    conn: asyncpg.Connection,
    sql: str,
    symbol: str,
    timeframe: str,
    lower: datetime,
    upper: datetime,
    limit: int,
    now: datetime,
    extra: tuple[object, ...],
    edge: datetime | None,
    newest_first: bool,
    fetch: Callable[[asyncpg.Connection, str, tuple[object, ...]], Awaitable[tuple[Found, int]]],
) -> tuple[Found, int]:
    """``fetch`` of the bars in [lower, upper): one query over the window up to the ``edge`` (the
    limit-th bucket of the kept series or rollups) when there is one, else windows growing until
    they hold ``limit`` bars."""
    with _aggregating(symbol):
        if edge is not None:
            # Each bucket of the ticks' aggregates is a bar of the series (its own or a stored bar's
            # that wins it), so the window up to the limit-th one holds the answer: one query, no growing.
            window = (max(lower, edge), upper) if newest_first else (lower, min(upper, next_bucket(edge, timeframe)))
            return await fetch(conn, sql, (symbol, *window, now, limit, *extra))
        return await _fetch_growing(
            conn, sql, symbol, timeframe, lower, upper, limit, now, extra, fetch, from_start=not newest_first
        )


async def _fetch_growing(
    conn: asyncpg.Connection,
    sql: str,
    symbol: str,
    timeframe: str,
    lower: datetime,
    upper: datetime,
    limit: int,
    now: datetime,
    extra: tuple[object, ...],
    fetch: Callable[[asyncpg.Connection, str, tuple[object, ...]], Awaitable[tuple[Found, int]]],
    *,
    from_start: bool,
) -> tuple[Found, int]:
    """Query a window of ``limit`` buckets at one end of [lower, upper), growing it until it holds
    ``limit`` bars or covers the range: the work stays near that of the bars returned, however
    much data lies beyond them."""
    span = WIDTHS[timeframe] * limit
    while True:
        if span >= upper - lower:
            return await fetch(conn, sql, (symbol, lower, upper, now, limit, *extra))
        if from_start:
            window = (lower, ceil_bucket(lower + span, timeframe))
        else:
            window = (floor_bucket(upper - span, timeframe), upper)
        found = await fetch(conn, sql, (symbol, *window, now, limit, *extra))
        if found[1] >= limit:
            return found
        span *= WINDOW_GROWTH


async def stats(
    executor: Executor,
    symbol: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    rollups: bool = False,
    kept: bool = False,
    now: datetime | None = None,
    source: str | None = None,
) -> asyncpg.Record:
    """Summary statistics of the daily series between ``start`` and ``end`` (default: all of it).

    Raises UnknownSymbolError or StoredDataError like ``history``."""
    now = now or datetime.now(UTC)
    async with connection(executor) as conn:
        first, _ = await data_range(conn, symbol, rollups)
        if first is None:
            raise UnknownSymbolError(symbol)
        sources, filtered = await chosen_sources(conn, symbol, source)
        kept = kept and not await kept_series_off(conn, symbol)
        lower = ceil_bucket(start, "1d") if start else floor_bucket(first, "1d")
        upper = ceil_bucket(end or now, "1d")
        extra = (sources,) if filtered else ()
        with _aggregating(symbol):
            row = await conn.fetchrow(
                stats_sql(aggregates(rollups, kept, filtered), filtered), symbol, lower, max(lower, upper), now, *extra
            )
        assert row is not None  # an aggregate without GROUP BY always returns one row
        return row


async def symbols(executor: Executor) -> Sequence[asyncpg.Record]:
    """Every stored symbol with its first and last time and its tick and bar counts."""
    async with connection(executor) as conn:
        rows: Sequence[asyncpg.Record] = await conn.fetch(_SYMBOLS_SQL)
        return rows
