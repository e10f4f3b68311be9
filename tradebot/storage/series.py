"""SQL for one continuous OHLCV series per symbol and timeframe, out of stored bars and ticks.

Precedence, bucket by bucket (no bucket is ever counted from two sources):

1. A stored bar of exactly the requested timeframe (e.g. a backfilled daily bar for 1d) wins its
   bucket once the bucket has closed.
2. Otherwise the bucket is rolled up from the 1-minute series, in which a stored 1-minute bar
   (backfill or provider) of a closed minute wins that minute over its live ticks: a provider's
   bar is complete, whereas the ticks may have gaps (reconnects, late start).
3. Minutes without a stored bar are aggregated from ticks.
4. A stored bar of a bucket that is still open (its end is after ``now``, e.g. today's daily bar
   from a backfill at 11:00) is a snapshot of part of the bucket: it fills the bucket only when
   the finer series has nothing there, so live ticks and minutes are never hidden behind it.

Among stored bars of one bucket from several sources, the one with the most volume (the more
complete feed, e.g. SIP over IEX) wins, then the source name, so the choice is deterministic.
Which sources take part at all is chosen before (queries.chosen_sources: real data wins over mock,
or one requested source); a chosen subset is passed as a text[] parameter and filters every ticks
and bars scan, and then the rollups and the kept series, which mix every source, are not used.

The aggregation of ticks (``aggregates``) comes from the continuous aggregates ``ohlcv_<tf>``
("rollups", TimescaleDB), from the kept series ``ohlcv_kept_1m`` / ``ohlcv_kept_1d`` ("kept", plain
PostgreSQL: kept by a trigger in the statement that writes the ticks, see
migrations/postgresql/0022_kept_series.sql; 5m, 15m and 1h roll up its minutes) or from
``date_bin`` / New York ``date_trunc`` over the ticks on the fly ("ticks"); buckets that contain
stored minutes are rebuilt from minutes each way, so every way returns the same bars. The kept way
reads closed 1h and 1d buckets that hold stored minutes from ``ohlcv_mixed_1h`` / ``ohlcv_mixed_1d``,
the same rollup of the merged minutes kept at write time (migrations/postgresql/0026_mixed_series.sql):
only the still open bucket is rebuilt from its minutes there.
Every query takes $1 = symbol, the bucket-aligned range [$2, $3) and $4 = now (which buckets
have closed).

Arithmetic is double precision, like the continuous aggregates (numeric would be about nine times
slower on the tick aggregates). Stored values whose products or sums leave its range raise
asyncpg.DataError (22003, value out of range); see queries.StoredDataError.
"""

from __future__ import annotations

from functools import cache
from typing import Literal

from tradebot.storage.buckets import TIMEFRAMES, bucket_end_sql, bucket_sql

Aggregates = Literal["rollups", "kept", "ticks"]
KEPT_TIMEFRAMES = ("1m", "1d")  # the kept series; the others roll up its minutes
# Kept rollups of the buckets that hold stored minutes (migrations/postgresql/0026_mixed_series.sql).
KEPT_MIXED_TIMEFRAMES = ("1h", "1d")

COLUMNS = "bucket, open, high, low, close, volume, trade_count, notional"
HOURLY_PARTIAL_TIMEFRAMES = ("1h", "1d")

# Ties at the same timestamp are broken by id; notional = sum(price * size) gives the vwap. Open
# and close are the first and last of one array: PostgreSQL computes an aggregate written twice
# once, and its input already comes in (ts, id) order from the primary key, so nothing is sorted
# per bucket (a second array in DESC order sorted every bucket's ticks again: ~40 % of a query).
_TICK_AGGREGATE = """(array_agg(price ORDER BY ts, id))[1] AS open, max(price) AS high, min(price) AS low,
           (array_agg(price ORDER BY ts, id))[count(*)] AS close, sum(size) AS volume,
           count(*)::numeric AS trade_count, sum(price * size) AS notional"""

# The kept series stores trade_count as bigint; the other parts of a series carry numeric.
_KEPT_COLUMNS = "bucket, open, high, low, close, volume, trade_count::numeric AS trade_count, notional"

# A rolled-up vwap is only known when every part's is; one missing part makes it NULL.
_ROLLUP_AGGREGATE = """(array_agg(open ORDER BY bucket))[1] AS open, max(high) AS high, min(low) AS low,
           (array_agg(close ORDER BY bucket DESC))[1] AS close, sum(volume) AS volume,
           sum(trade_count) AS trade_count,
           CASE WHEN count(notional) = count(*) THEN sum(notional) END AS notional"""


def _only(sources: str | None, alias: str = "") -> str:
    """The condition that keeps rows of the allowed sources (``sources`` names a text[] parameter)."""
    return f" AND {alias}source = ANY({sources}::text[])" if sources else ""


def _stored_bars(timeframe: str, sources: str | None, since: str = "") -> str:
    """One stored bar per bucket (most volume, then source name), and whether the bucket has closed;
    ``since``: only bars at or after that SQL time."""
    since = f" AND ts >= {since}" if since else ""
    return f"""
    SELECT {COLUMNS}, {bucket_end_sql("bucket", timeframe)} <= $4 AS closed
    FROM (
        SELECT DISTINCT ON (1) {bucket_sql("ts", timeframe)} AS bucket, open, high, low, close, volume,
               trade_count::numeric AS trade_count,
               coalesce(vwap * volume, CASE WHEN volume = 0 THEN 0 END) AS notional
        FROM bars
        WHERE symbol = $1 AND timeframe = '{timeframe}' AND ts >= $2 AND ts < $3{since}{_only(sources)}
        ORDER BY 1, volume DESC, source
    ) winners"""


def _tick_buckets(timeframe: str, aggregates: Aggregates, sources: str | None) -> str:
    if aggregates == "rollups":
        return f"""
    SELECT {COLUMNS} FROM ohlcv_{timeframe} WHERE symbol = $1 AND bucket >= $2 AND bucket < $3"""
    if aggregates == "kept" and timeframe in KEPT_TIMEFRAMES:
        return f"""
    SELECT {_KEPT_COLUMNS} FROM ohlcv_kept_{timeframe} WHERE symbol = $1 AND bucket >= $2 AND bucket < $3"""
    if aggregates == "kept":
        return f"""
    SELECT {bucket_sql("bucket", timeframe)} AS bucket,
           {_ROLLUP_AGGREGATE}
    FROM ohlcv_kept_1m WHERE symbol = $1 AND bucket >= $2 AND bucket < $3
    GROUP BY 1"""
    if timeframe in HOURLY_PARTIAL_TIMEFRAMES:
        return _tick_buckets_from_hours(timeframe, sources)
    return f"""
    SELECT {bucket_sql("ts", timeframe)} AS bucket,
           {_TICK_AGGREGATE}
    FROM ticks WHERE symbol = $1 AND ts >= $2 AND ts < $3{_only(sources)}
    GROUP BY 1"""


def _tick_buckets_from_hours(timeframe: str, sources: str | None) -> str:
    """Long buckets on the fly, about twice as fast: sums and extremes per UTC hour (cheap
    date_bin, no per-row time-zone conversion), hours into buckets (a New York day is whole UTC
    hours), then open and close by two primary-key probes per bucket instead of sorting every tick."""
    end = bucket_end_sql("b.bucket", timeframe)
    return f"""
    SELECT b.bucket, first_tick.price AS open, b.high, b.low, last_tick.price AS close,
           b.volume, b.trade_count, b.notional
    FROM (
        SELECT {bucket_sql("hour", timeframe)} AS bucket, max(high) AS high, min(low) AS low,
               sum(volume) AS volume, sum(trade_count) AS trade_count, sum(notional) AS notional
        FROM (
            SELECT {bucket_sql("ts", "1h")} AS hour, max(price) AS high, min(price) AS low,
                   sum(size) AS volume, count(*)::numeric AS trade_count, sum(price * size) AS notional
            FROM ticks WHERE symbol = $1 AND ts >= $2 AND ts < $3{_only(sources)}
            GROUP BY 1
        ) hours
        GROUP BY 1
    ) b
    CROSS JOIN LATERAL (
        SELECT price FROM ticks t WHERE t.symbol = $1 AND t.ts >= b.bucket AND t.ts < {end}{_only(sources, "t.")}
        ORDER BY t.ts, t.id LIMIT 1) first_tick
    CROSS JOIN LATERAL (
        SELECT price FROM ticks t WHERE t.symbol = $1 AND t.ts >= b.bucket AND t.ts < {end}{_only(sources, "t.")}
        ORDER BY t.ts DESC, t.id DESC LIMIT 1) last_tick"""


def _tick_minutes_of_mixed_buckets(aggregates: Aggregates, sources: str | None) -> str:
    if aggregates != "ticks":
        table = "ohlcv_1m" if aggregates == "rollups" else "ohlcv_kept_1m"
        return f"""
    SELECT o.bucket, o.open, o.high, o.low, o.close, o.volume, o.trade_count::numeric, o.notional
    FROM mixed_buckets m
    JOIN {table} o ON o.symbol = $1 AND o.bucket >= m.bucket AND o.bucket < m.bucket_end"""
    return f"""
    SELECT {bucket_sql("t.ts", "1m")} AS bucket,
           {_TICK_AGGREGATE}
    FROM mixed_buckets m
    JOIN ticks t ON t.symbol = $1 AND t.ts >= m.bucket AND t.ts < m.bucket_end{_only(sources, "t.")}
    GROUP BY 1"""


def _unless_in(first: str, second: str, key_source: str) -> str:
    """All rows of ``first``, plus rows of ``second`` whose bucket is not in ``key_source``."""
    return f"""
    SELECT {COLUMNS} FROM {first}
    UNION ALL
    SELECT {COLUMNS} FROM {second} x WHERE NOT EXISTS (SELECT 1 FROM {key_source} k WHERE k.bucket = x.bucket)"""


def _stored_over(stored: str, finer: str, fragments: bool = False) -> str:
    """Stored bars (with ``closed``) over a finer series: a stored bar of a closed bucket wins it;
    the finer series has every other bucket; a stored bar of a still open bucket (a partial
    snapshot) only fills a bucket the finer series lacks. ``fragments``: the finer series' rows
    carry ``fragment`` (their JSON, bars_json.py), a stored bar's is NULL (spelled when read)."""
    none, own = (", NULL::text AS fragment", ", fragment") if fragments else ("", "")
    return f"""
    SELECT {COLUMNS}{none} FROM {stored} WHERE closed
    UNION ALL
    SELECT {COLUMNS}{own} FROM {finer} x
    WHERE NOT EXISTS (SELECT 1 FROM {stored} k WHERE k.bucket = x.bucket AND k.closed)
    UNION ALL
    SELECT {COLUMNS}{none} FROM {stored} s
    WHERE NOT s.closed AND NOT EXISTS (SELECT 1 FROM {finer} f WHERE f.bucket = s.bucket)"""


def series_ctes(timeframe: str, aggregates: Aggregates, sources: str | None = None, fragments: bool = False) -> str:
    """``WITH`` clauses ending in ``series(bucket, open, high, low, close, volume, trade_count, notional)``.

    ``sources`` names a text[] parameter (e.g. ``$6``) that keeps only those sources' ticks and bars;
    the rollups and the kept series aggregate every source, so they serve only unfiltered series.
    ``fragments`` (the kept 1-minute series only): ``series`` also has ``fragment``, the JSON of a
    kept minute spelled before (storage/fragments.py), NULL where a stored bar wins or none is kept."""
    if fragments and (timeframe, aggregates) != ("1m", "kept"):
        raise ValueError("only the kept 1-minute series keeps its bars' JSON")
    if aggregates != "ticks" and sources:
        raise ValueError(f"the {aggregates} aggregates mix every source: filter by source on the fly (ticks)")
    if timeframe not in TIMEFRAMES:  # it is spliced into SQL: only the known literals may pass
        raise ValueError(f"unknown timeframe {timeframe!r}; one of {', '.join(TIMEFRAMES)}")
    # The kept mixed buckets serve the closed ones: only the still open bucket is built from minutes.
    kept_mixed = aggregates == "kept" and timeframe in KEPT_MIXED_TIMEFRAMES
    open_bucket = bucket_sql("$4::timestamptz", timeframe) if kept_mixed else ""
    ctes = {"bar_minutes": _stored_bars("1m", sources, since=open_bucket)}
    if timeframe == "1m":
        ctes["tick_buckets"] = _tick_buckets("1m", aggregates, sources)
        if fragments:
            ctes["tick_buckets"] = f"""
    SELECT {_KEPT_COLUMNS}, bar_json AS fragment
    FROM ohlcv_kept_1m WHERE symbol = $1 AND bucket >= $2 AND bucket < $3"""
        ctes["series"] = _stored_over("bar_minutes", "tick_buckets", fragments)
    else:
        ctes["mixed_buckets"] = f"""
    SELECT bucket, {bucket_end_sql("bucket", timeframe)} AS bucket_end
    FROM (SELECT DISTINCT {bucket_sql("bucket", timeframe)} AS bucket FROM bar_minutes) b"""
        ctes["tick_minutes"] = _tick_minutes_of_mixed_buckets(aggregates, sources)
        ctes["merged_minutes"] = _stored_over("bar_minutes", "tick_minutes")
        ctes["mixed"] = f"""
    SELECT {bucket_sql("bucket", timeframe)} AS bucket,
           {_ROLLUP_AGGREGATE}
    FROM merged_minutes GROUP BY 1"""
        if kept_mixed:
            ctes["mixed"] += f"""
    UNION ALL
    SELECT {_KEPT_COLUMNS} FROM ohlcv_mixed_{timeframe}
    WHERE symbol = $1 AND bucket >= $2 AND bucket < $3 AND bucket < {open_bucket}"""
        ctes["tick_buckets"] = _tick_buckets(timeframe, aggregates, sources)
        # (the kept mixed buckets: every one has a row in ``mixed``, which holds the closed ones)
        ctes["rolled_up"] = _unless_in("mixed", "tick_buckets", "mixed" if kept_mixed else "mixed_buckets")
        ctes["stored"] = _stored_bars(timeframe, sources)
        ctes["series"] = _stored_over("stored", "rolled_up")
    return "WITH " + ",\n".join(f"{name} AS ({body}\n)" for name, body in ctes.items())


@cache
def history_sql(
    timeframe: str, aggregates: Aggregates, newest_first: bool, filtered: bool = False, fragments: bool = False
) -> str:
    """Bars of the series in [$2, $3), oldest (or newest) first, at most $5; ``filtered``: only the
    sources in $6; ``fragments``: with each bar's ``fragment`` (see series_ctes)."""
    order = "DESC" if newest_first else "ASC"
    return f"""{series_ctes(timeframe, aggregates, "$6" if filtered else None, fragments)}
SELECT bucket AS ts, open, high, low, close, volume, trade_count::bigint AS trade_count,
       notional / NULLIF(volume, 0) AS vwap{", fragment" if fragments else ""}
FROM series ORDER BY bucket {order} LIMIT $5"""


def stats_sql(aggregates: Aggregates, filtered: bool = False) -> str:
    """Summary of the daily series in [$2, $3): range, OHLCV, vwap, daily return mean and volatility;
    ``filtered``: only the sources in $5."""
    return f"""{series_ctes("1d", aggregates, "$5" if filtered else None)},
daily AS (
    SELECT {COLUMNS}, close / lag(close) OVER (ORDER BY bucket) - 1 AS daily_return FROM series
)
SELECT count(*) AS days, min(bucket) AS first_day, max(bucket) AS last_day,
       (array_agg(open ORDER BY bucket))[1] AS open, max(high) AS high, min(low) AS low,
       (array_agg(close ORDER BY bucket DESC))[1] AS close, sum(volume) AS volume,
       sum(trade_count)::bigint AS trade_count,
       CASE WHEN count(notional) = count(*) THEN sum(notional) END / NULLIF(sum(volume), 0) AS vwap,
       avg(daily_return) AS mean_daily_return, stddev_samp(daily_return) AS daily_return_stdev
FROM daily"""
