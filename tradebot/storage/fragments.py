"""The JSON of closed kept minutes, spelled once in the background instead of on every read.

Plain PostgreSQL only (migrations/postgresql/0025_kept_bar_json.sql): ``ohlcv_kept_1m.bar_json``
holds a minute's bar as /history spells it (storage/bars_json.py, the same SQL), '' for a minute
that is not plain, NULL until spelled; the ticks' trigger sets it to NULL whenever it changes the
minute. Reads join the stored strings and spell only the NULL ones (and stored bars), so a minute
is spelled once however often it is read.

The storage worker runs ``spell_loop``: every SPELL_CHECK_S it spells the minutes closed since,
newest first, SPELL_BATCH per statement until none is left. Each statement locks the rows it
spells with SKIP LOCKED, so it never waits for a writer (no deadlock with the trigger, which locks
kept rows in its own order) and two workers never spell the same minute; a writer that reaches a
locked minute waits for one statement. The values spelled are those of the locked row, so a
stored JSON is always that of the row's values. A minute whose spelling overflows double precision is marked '' (spelled
when read, failing there as without this) instead of stopping the pass.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import asyncpg

from tradebot.common.db import TRANSIENT_DB_ERRORS
from tradebot.common.lifecycle import wait_or_stop
from tradebot.storage.bars_json import spelled_bars_sql

log = logging.getLogger(__name__)

SPELL_CHECK_S = 10.0
SPELL_BATCH = 2000  # minutes per statement: a writer reaching one of them waits at most this long
# Minutes are spelled once closed for this long: a late tick of the minute just closed would
# only set it back to NULL.
SETTLE = "1 minute"

# The closed minutes not spelled that meet ``where``, at most $1 of them, newest first: locked,
# spelled, written back ('' where the bar is not plain: encoded from rows when read).
_UNSPELLED = "bar_json IS NULL AND bucket < date_trunc('minute', now()) - INTERVAL '" + SETTLE + "'"


def _spell_sql(where: str) -> str:
    return f"""
WITH picked AS (
    SELECT symbol, bucket AS ts, open, high, low, close, volume, trade_count, notional / NULLIF(volume, 0) AS vwap
    FROM ohlcv_kept_1m WHERE {_UNSPELLED} AND {where}
    ORDER BY bucket DESC LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE ohlcv_kept_1m k SET bar_json = CASE WHEN s.plain THEN s.bar ELSE '' END
FROM ({spelled_bars_sql("picked", daily=False, carried="symbol, ")}) s
WHERE k.symbol = s.symbol AND k.bucket = s.ts"""


_SPELL_SQL = _spell_sql("TRUE")
_SPELL_ONE_SQL = _spell_sql("symbol = $2 AND bucket = $3")
_KEYS_SQL = f"SELECT symbol, bucket FROM ohlcv_kept_1m WHERE {_UNSPELLED} ORDER BY bucket DESC LIMIT $1"
# A minute whose values its spelling cannot compute (a product or quotient out of double
# precision's range): spelled when read, where the same error says what it says today.
_UNSPELLABLE_SQL = "UPDATE ohlcv_kept_1m SET bar_json = '' WHERE symbol = $1 AND bucket = $2 AND bar_json IS NULL"


async def spell_minutes(conn: asyncpg.Connection, batch: int = SPELL_BATCH) -> int:
    """Spell up to ``batch`` closed kept minutes whose JSON is not stored; how many were."""
    try:
        return await _spelled(conn, _SPELL_SQL, batch)
    except asyncpg.DataError:  # some minute's values overflow: one at a time, those marked ''
        done = 0
        for key in await conn.fetch(_KEYS_SQL, batch):
            try:
                done += await _spelled(conn, _SPELL_ONE_SQL, 1, key["symbol"], key["bucket"])
            except asyncpg.DataError:
                done += int((await conn.execute(_UNSPELLABLE_SQL, key["symbol"], key["bucket"])).rsplit(" ", 1)[-1])
        return done


async def _spelled(conn: asyncpg.Connection, sql: str, *args: object) -> int:
    async with conn.transaction():
        # float8's shortest exact text, whatever the server's or role's setting (bars_json.py)
        await conn.execute("SET LOCAL extra_float_digits = 1")
        status = await conn.execute(sql, *args)
    return int(status.rsplit(" ", 1)[-1])


async def spell_all(conn: asyncpg.Connection, batch: int = SPELL_BATCH) -> int:
    """Spell every closed kept minute whose JSON is not stored; how many were."""
    total = 0
    while True:
        spelled = await spell_minutes(conn, batch)
        total += spelled
        if spelled < batch:
            return total


async def spell_loop(dsn: str, stop: asyncio.Event, counters: Counter[str]) -> None:
    """``spell_all`` now and every SPELL_CHECK_S until ``stop``, on a connection of its own (the
    writers' pool stays theirs)."""
    while not stop.is_set():
        try:
            conn = await asyncpg.connect(dsn, server_settings={"application_name": "tradebot-storage-spell"})
            try:
                while not stop.is_set():
                    counters["minutes_spelled"] += await spell_all(conn)
                    await wait_or_stop(stop, SPELL_CHECK_S)
            finally:
                await conn.close()
        except TRANSIENT_DB_ERRORS as error:
            log.warning("spelling kept minutes postponed: %s", error)
            await wait_or_stop(stop, SPELL_CHECK_S)
