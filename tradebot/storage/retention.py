"""Tick retention on plain PostgreSQL: ticks older than TICK_RETENTION become 1-minute bars, then go.

TimescaleDB drops old tick chunks itself (a retention policy; the continuous aggregates keep the
bars). Plain PostgreSQL has neither, so the storage worker runs this job every
RETENTION_CHECK_S: per symbol, in one transaction, the old ticks are rolled up into 1-minute bars
(source = the ticks' source; a stored provider bar of the same minute and source is kept, being
complete) and deleted. /history then serves those minutes from the bars, so every timeframe keeps
the same OHLCV, volume and VWAP; only tick-level detail is gone. Copies of the worker take turns
through an advisory lock, and a job cut short by a stop or a crash simply runs again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from datetime import datetime

import asyncpg

from tradebot.common.db import TRANSIENT_DB_ERRORS
from tradebot.common.lifecycle import wait_or_stop
from tradebot.storage.buckets import bucket_sql

log = logging.getLogger(__name__)

RETENTION_CHECK_S = 3600.0
RETENTION_LOCK_KEY = 7_466_133_871_060_292  # the migrations' key + 1: "tick retention"

# Every symbol through the primary key (a loose index scan), not a scan of all ticks.
_SYMBOLS_SQL = """
WITH RECURSIVE s AS (
    SELECT min(symbol) AS symbol FROM ticks
    UNION ALL
    SELECT (SELECT min(symbol) FROM ticks WHERE symbol > s.symbol) FROM s WHERE s.symbol IS NOT NULL
)
SELECT symbol FROM s WHERE symbol IS NOT NULL"""

_ROLL_UP_SQL = f"""
INSERT INTO bars (symbol, timeframe, ts, source, id, open, high, low, close, volume, trade_count, vwap)
SELECT symbol, '1m', minute, source, source || ':' || symbol || ':1m:' || to_char(minute AT TIME ZONE 'UTC',
           'YYYY-MM-DD"T"HH24:MI:SS"+00:00"'),
       open, high, low, close, volume, trade_count, notional / NULLIF(volume, 0)
FROM (
    SELECT symbol, source, {bucket_sql("ts", "1m")} AS minute,
           (array_agg(price ORDER BY ts, id))[1] AS open, max(price) AS high, min(price) AS low,
           (array_agg(price ORDER BY ts DESC, id DESC))[1] AS close, sum(size) AS volume,
           count(*) AS trade_count, sum(price * size) AS notional
    FROM ticks WHERE symbol = $1 AND ts < $2
    GROUP BY symbol, source, minute
) minutes
ON CONFLICT (symbol, timeframe, ts, source) DO NOTHING"""


async def retention_cutoff(conn: asyncpg.Connection, retention: str) -> datetime:
    """The minute before which ticks go: now minus TICK_RETENTION (a PostgreSQL interval)."""
    cutoff: datetime = await conn.fetchval("SELECT date_trunc('minute', now() - $1::text::interval)", retention)
    return cutoff


async def enforce_tick_retention(pool: asyncpg.Pool, retention: str) -> int:
    """Roll up and delete the ticks older than ``retention``; returns how many ticks went (0 if
    another worker holds the job)."""
    deleted = 0
    async with pool.acquire() as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", RETENTION_LOCK_KEY):
            return 0
        try:
            cutoff = await retention_cutoff(conn, retention)
            for row in await conn.fetch(_SYMBOLS_SQL):
                async with conn.transaction():
                    # the history version row first, as every writer of ticks and bars takes it
                    await conn.execute("SELECT history_versions_lock(ARRAY[$1])", row["symbol"])
                    await conn.execute(_ROLL_UP_SQL, row["symbol"], cutoff)
                    status = await conn.execute(
                        "DELETE FROM ticks WHERE symbol = $1 AND ts < $2", row["symbol"], cutoff
                    )
                deleted += int(status.rsplit(" ", 1)[-1])
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", RETENTION_LOCK_KEY)
    return deleted


async def retention_loop(pool: asyncpg.Pool, retention: str, stop: asyncio.Event, counters: Counter[str]) -> None:
    """Enforce ``retention`` now and every RETENTION_CHECK_S until ``stop``."""
    while not stop.is_set():
        try:
            removed = await enforce_tick_retention(pool, retention)
        except asyncpg.DataError as error:  # not an interval: say so once and stop trying
            log.error("TICK_RETENTION %r is not a PostgreSQL interval (%s); set it to e.g. '30 days'", retention, error)
            return
        except TRANSIENT_DB_ERRORS as error:
            log.warning("tick retention postponed: %s", error)
        else:
            counters["ticks_expired"] += removed
            if removed:
                log.info(
                    "tick retention (%s): %d old ticks rolled up into 1-minute bars and deleted", retention, removed
                )
        await wait_or_stop(stop, RETENTION_CHECK_S)
