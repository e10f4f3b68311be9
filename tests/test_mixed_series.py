"""Buckets that hold stored 1-minute bars ("mixed"): a backfill's whole days of minutes, a live
feed's bar for every closed minute next to its ticks, a few scattered minutes. Plain PostgreSQL keeps
their 1h and 1d rollups at write time (migrations/postgresql/0026_mixed_series.sql); whatever order
ticks and bars arrive in, and after bars are corrected or deleted and ticks dropped, the kept series
answers the same bars as the ticks on the fly and as the independent reference, and so do the
TimescaleDB rollups (TEST_TIMESCALE_DSN)."""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from tests.storage_fixtures import (
    DAYS,
    RANGE_END,
    RANGE_START,
    TIMEFRAMES,
    RefBar,
    bucket_of,
    migrated_database,
    minute_bar,
    reference_bars,
    session_database,
    session_ticks,
)
from tradebot.common.db import drop_database
from tradebot.common.models import Bar, Tick
from tradebot.maintenance.sources import drop_source
from tradebot.storage import queries
from tradebot.storage.writer import write_events

TIMESCALE_DSN = os.environ.get("TEST_TIMESCALE_DSN")
MIX = session_ticks("MIX", seed=7)  # every day: backfilled, then live
FEW = session_ticks("FEW", seed=8, step_s=53)  # a few scattered stored minutes
TICKS = MIX + FEW


def _session_minutes(day: datetime) -> list[datetime]:
    opening = day.replace(hour=9, minute=30).astimezone(UTC)
    return [opening + timedelta(minutes=m) for m in range(390)]


def _backfill() -> list[Bar]:
    """Whole sessions of minutes: one source without vwap for part of a day (its hours and day have
    none either), two sources over another day (most volume wins), a minute with no trades."""
    bars = []
    for n, start in enumerate(_session_minutes(DAYS[0])):
        bars.append(minute_bar("MIX", start, "alpaca", 100 + n % 7, 1000 + n, vwap=None if n < 45 else 100.5 + n % 7))
    for n, start in enumerate(_session_minutes(DAYS[1])):
        bars.append(minute_bar("MIX", start, "polygon", 110 + n % 5, 2000 + n, vwap=110.5 + n % 5))
        if n % 4 == 0:
            bars.append(minute_bar("MIX", start, "alpaca", 90, 2500 if n % 8 == 0 else 10, vwap=90.5))
    bars.append(minute_bar("MIX", DAYS[1].replace(hour=19, minute=45).astimezone(UTC), "polygon", 111, 0))
    return bars


def _live() -> list[Bar]:
    """The provider's bar of every minute that had a trade, on the last day (as a live feed stores them)."""
    minutes = sorted({bucket_of(t.timestamp, "1m") for t in MIX if bucket_of(t.timestamp, "1d") == _day(DAYS[2])})
    return [minute_bar("MIX", m, "alpaca", 120 + n % 3, 500 + n, vwap=120.5) for n, m in enumerate(minutes)]


def _day(day: datetime) -> datetime:
    return day.astimezone(UTC)


SCATTERED = [
    minute_bar("FEW", _session_minutes(day)[n], "alpaca", 95, 7e3, vwap=95.5)
    for day, n in ((DAYS[0], 0), (DAYS[0], 389), (DAYS[1], 31), (DAYS[1], 200), (DAYS[2], 60))
]
STORED = [*_backfill(), *_live(), *SCATTERED]
# Inside the last session: its day and hour are still open, and so are the minutes after it.
MID_SESSION = DAYS[2].replace(hour=11, minute=7, second=30).astimezone(UTC)


def _batches(order: str) -> list[list[Tick | Bar]]:
    """The ticks and bars as a writer may see them: bars first (a backfill before the live ticks of
    the same days are stored), ticks first (a backfill of days already traded), or interleaved as
    a live feed's (each minute's ticks, then the bar of the minute before) with some again."""
    rng = random.Random(order)
    ticks = list(TICKS)
    rng.shuffle(ticks)
    tick_batches: list[list[Tick | Bar]] = [list(ticks[i : i + 300]) for i in range(0, len(ticks), 300)]
    bar_batches: list[list[Tick | Bar]] = [list(STORED[i : i + 250]) for i in range(0, len(STORED), 250)]
    if order == "bars first":
        return [*bar_batches, *tick_batches]
    if order == "ticks first":
        return [*tick_batches, *bar_batches]
    by_minute: dict[datetime, list[Tick | Bar]] = {}
    for tick in TICKS:
        by_minute.setdefault(bucket_of(tick.timestamp, "1m"), []).append(tick)
    for bar in STORED:
        by_minute.setdefault(bar.timestamp + timedelta(minutes=1), []).append(bar)
    interleaved = [by_minute[m] for m in sorted(by_minute)]
    late = interleaved[::7]  # some of each again (a redelivery writes nothing new)
    return [*interleaved, *late]


@pytest.fixture
async def dsn(database_url: str) -> AsyncIterator[str]:
    dsn = await migrated_database(database_url, "mixed_series_test")
    yield dsn
    await drop_database(database_url, "mixed_series_test")


def _rounded(rows: Sequence[asyncpg.Record]) -> list[tuple[object, ...]]:
    """Rows with floats to 9 significant digits (sums added in another order differ in the last bits)."""
    return [tuple(float(f"{v:.9g}") if isinstance(v, float) else v for v in row.values()) for row in rows]


def _assert_reference(rows: Sequence[asyncpg.Record], expected: Sequence[RefBar], context: object) -> None:
    assert [row["ts"] for row in rows] == [bar.timestamp for bar in expected], context
    for row, bar in zip(rows, expected, strict=True):
        assert (row["open"], row["high"], row["low"], row["close"]) == (bar.open, bar.high, bar.low, bar.close), context
        assert row["trade_count"] == bar.trade_count, context
        assert row["volume"] == pytest.approx(bar.volume, rel=1e-12), context
        assert row["vwap"] == (None if bar.vwap is None else pytest.approx(bar.vwap, rel=1e-9)), context


async def _history(conn: asyncpg.Connection, symbol: str, timeframe: str, now: datetime | None, **way: bool) -> list:
    return list(
        await queries.history(
            conn, symbol, timeframe, start=RANGE_START, end=RANGE_END, limit=10_000, now=now or RANGE_END, **way
        )
    )


async def assert_every_way_agrees(conn: asyncpg.Connection, stored: Sequence[Bar], **way: bool) -> None:
    """``way`` (kept or rollups) equals the ticks on the fly and the reference, all closed and mid-session."""
    for symbol in ("MIX", "FEW"):
        ticks = [t for t in TICKS if t.symbol == symbol and t.timestamp < RANGE_END]
        bars = [b for b in stored if b.symbol == symbol]
        for timeframe in TIMEFRAMES:
            for now in (None, MID_SESSION):
                context = (symbol, timeframe, now)
                got = await _history(conn, symbol, timeframe, now, **way)
                assert _rounded(got) == _rounded(await _history(conn, symbol, timeframe, now)), context
                _assert_reference(got, reference_bars(ticks, timeframe, bars, now or RANGE_END), context)
            # windows up to the limit-th bucket, newest first and from a start
            for window in ({"end": MID_SESSION, "limit": 3}, {"start": DAYS[1].astimezone(UTC), "limit": 4}):
                got = await queries.history(conn, symbol, timeframe, now=RANGE_END, **window, **way)  # type: ignore[arg-type]
                assert _rounded(got) == _rounded(
                    await queries.history(conn, symbol, timeframe, now=RANGE_END, **window)
                )  # type: ignore[arg-type]


async def _mixed_tables(conn: asyncpg.Connection) -> list[list[tuple[object, ...]]]:
    return [
        _rounded(await conn.fetch(f"SELECT * FROM ohlcv_mixed_{tf} ORDER BY symbol, bucket")) for tf in ("1h", "1d")
    ]


async def assert_kept_as_if_rebuilt(conn: asyncpg.Connection) -> None:
    """What the triggers kept is what building the mixed buckets from scratch gives."""
    kept = await _mixed_tables(conn)
    rebuild = conn.transaction()
    await rebuild.start()
    try:
        await conn.execute(
            "SELECT mixed_series_rebuild(s, '-infinity', 'infinity') FROM unnest($1::text[]) s", ["MIX", "FEW"]
        )
        assert await _mixed_tables(conn) == kept
    finally:
        await rebuild.rollback()  # the next steps go on from what the triggers kept


@pytest.mark.parametrize("order", ["bars first", "ticks first", "interleaved"])
async def test_mixed_buckets_read_the_same_bars_whatever_the_write_order(dsn: str, order: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for batch in _batches(order):
            await write_events(conn, batch)
        mixed_days = {(b.symbol, bucket_of(b.timestamp, "1d")) for b in STORED}
        assert {
            (r["symbol"], r["bucket"]) for r in await conn.fetch("SELECT symbol, bucket FROM ohlcv_mixed_1d")
        } == mixed_days
        await assert_kept_as_if_rebuilt(conn)
        await assert_every_way_agrees(conn, STORED, kept=True)
    finally:
        await conn.close()


async def test_corrected_and_deleted_bars_and_dropped_ticks_keep_the_buckets_right(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for batch in _batches("interleaved"):
            await write_events(conn, batch)
        # a correction: a newer version of a backfilled minute (an UPDATE of the stored bar)
        old = next(b for b in STORED if b.source == "polygon" and b.timestamp == _session_minutes(DAYS[1])[100])
        corrected = old.model_copy(update={"open": 150.0, "high": 160.0, "close": 155.0, "version": 1})
        await write_events(conn, [corrected])
        stored = [corrected if b is old else b for b in STORED]
        await assert_kept_as_if_rebuilt(conn)
        await assert_every_way_agrees(conn, stored, kept=True)
        # a source's bars deleted: the minutes alpaca won go back to polygon or the ticks
        await drop_source(conn, "alpaca", "MIX")
        stored = [b for b in stored if not (b.symbol == "MIX" and b.source == "alpaca")]
        await assert_kept_as_if_rebuilt(conn)
        await assert_every_way_agrees(conn, stored, kept=True)
        # the scattered symbol's ticks dropped (kept_series_rebuild): its buckets are the bars alone
        await conn.execute("DELETE FROM ticks WHERE symbol = 'FEW' AND ts < $1", DAYS[1].astimezone(UTC))
        rows = await _history(conn, "FEW", "1d", None, kept=True)
        assert _rounded(rows) == _rounded(await _history(conn, "FEW", "1d", None))
        assert rows[0]["ts"] == _day(DAYS[0])
        assert rows[0]["trade_count"] == 2 * 700  # the two stored minutes
        await assert_kept_as_if_rebuilt(conn)
        # ticks truncated: the stored minutes alone are the mixed buckets
        await conn.execute("TRUNCATE ticks")
        await assert_kept_as_if_rebuilt(conn)
        assert await conn.fetchval("SELECT count(*) FROM ohlcv_mixed_1d") == len(
            {(b.symbol, bucket_of(b.timestamp, "1d")) for b in stored}
        )
    finally:
        await conn.close()


@pytest.mark.timescale
@pytest.mark.skipif(not TIMESCALE_DSN, reason="set TEST_TIMESCALE_DSN to a TimescaleDB server")
async def test_the_rollups_read_the_same_bars_with_stored_minutes_everywhere() -> None:
    assert TIMESCALE_DSN
    name = session_database("tradebot_mixed_timescale_test")
    dsn = await migrated_database(TIMESCALE_DSN, name)
    conn = await asyncpg.connect(dsn)
    try:
        for batch in _batches("interleaved"):
            await write_events(conn, batch)
        await assert_every_way_agrees(conn, STORED, rollups=True)
    finally:
        await conn.close()
        await drop_database(TIMESCALE_DSN, name)
