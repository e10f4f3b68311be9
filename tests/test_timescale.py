"""TimescaleDB mode, against a real TimescaleDB server named by TEST_TIMESCALE_DSN (skipped otherwise).

    docker run -d -p 5433:5432 -e POSTGRES_PASSWORD=pw timescale/timescaledb:latest-pg16
    TEST_TIMESCALE_DSN=postgresql://postgres:pw@127.0.0.1:5433/postgres pytest tests/test_timescale.py

The history API tests (tests/test_history_api.py) also run against this server when it is set.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import cast

import asyncpg
import pytest

from tests.helpers import wait_until
from tests.storage_fixtures import (
    DAYS,
    RANGE_END,
    RANGE_START,
    TIMEFRAMES,
    bucket_of,
    migrated_database,
    minute_bar,
    reference_bars,
    session_database,
    session_ticks,
)
from tradebot.common.db import create_pool, drop_database, recreate_database
from tradebot.common.models import Tick
from tradebot.storage import queries
from tradebot.storage.buckets import WIDTHS
from tradebot.storage.schema import apply_migrations
from tradebot.storage.timescale import (
    TimescaleOptions,
    compression_paused,
    database_mode,
    refresh_aggregate,
    refreshes_paused,
)
from tradebot.storage.writer import write_events

TIMESCALE_DSN = os.environ.get("TEST_TIMESCALE_DSN")
pytestmark = [
    pytest.mark.timescale,
    pytest.mark.skipif(not TIMESCALE_DSN, reason="set TEST_TIMESCALE_DSN to a TimescaleDB server"),
]

OPTIONS = TimescaleOptions(tick_retention="3650 days")
AGGREGATES = ["ohlcv_1m", "ohlcv_5m", "ohlcv_15m", "ohlcv_1h", "ohlcv_1d"]  # refresh order: bottom up
AAPL = session_ticks("AAPL", seed=1)
MSFT = session_ticks("MSFT", seed=2, step_s=53)
MSFT_BARS = [
    minute_bar(
        "MSFT", DAYS[1].replace(hour=10).astimezone(UTC) + timedelta(minutes=i), "alpaca", 200 + i, 1000, vwap=200.5
    )
    for i in range(10)
]
# Aggregates are materialized up to here; everything after it comes from real-time aggregation.
REFRESHED_UNTIL = DAYS[2].replace(hour=12, minute=7).astimezone(UTC)


@dataclass
class Timescale:
    dsn: str
    pool: asyncpg.Pool
    first_run: list[str]
    second_run: list[str]


@pytest.fixture(scope="module")
async def timescale() -> AsyncIterator[Timescale]:
    """A fresh database on the TimescaleDB server, migrated twice, holding the test market."""
    assert TIMESCALE_DSN
    name = session_database("tradebot_timescale_test")
    dsn = await recreate_database(TIMESCALE_DSN, name)
    first, second = await apply_migrations(dsn, options=OPTIONS), await apply_migrations(dsn, options=OPTIONS)
    pool = await create_pool(dsn)
    await write_events(pool, [*AAPL, *MSFT, *MSFT_BARS])
    yield Timescale(dsn, pool, first, second)
    await pool.close()
    await drop_database(TIMESCALE_DSN, name)


async def refresh(pool: asyncpg.Pool, start: datetime, end: datetime, views: list[str] = AGGREGATES) -> None:
    """Materialize every level (or ``views``) for [start, end); refresh cannot run inside a transaction block."""
    async with pool.acquire() as conn:
        for view in views:
            await conn.execute(
                f"CALL refresh_continuous_aggregate('{view}', "
                f"TIMESTAMPTZ '{start.isoformat()}', TIMESTAMPTZ '{end.isoformat()}')"
            )


async def assert_both_paths_match_reference(pool: asyncpg.Pool, symbol: str, ticks: list, stored: list) -> None:
    for timeframe in TIMEFRAMES:
        expected = reference_bars(ticks, timeframe, stored)
        for rollups in (True, False):
            rows = await queries.history(
                pool, symbol, timeframe, start=RANGE_START, end=RANGE_END, limit=10_000, rollups=rollups
            )
            got = [{**dict(row), "timestamp": row["ts"]} for row in rows]
            assert [g["timestamp"] for g in got] == [e.timestamp for e in expected], (timeframe, rollups)
            for g, e in zip(got, expected, strict=True):
                assert (g["open"], g["close"], g["trade_count"]) == (e.open, e.close, e.trade_count)
                assert g["volume"] == pytest.approx(e.volume)
                assert g["vwap"] == (pytest.approx(e.vwap) if e.vwap is not None else None)


async def test_migrations_apply_twice_cleanly(timescale: Timescale) -> None:
    assert any("create_hypertable('ticks'" in s for s in timescale.first_run)
    assert timescale.second_run == []
    assert await database_mode(timescale.pool) == "timescaledb"


async def test_core_tables_are_hypertables(timescale: Timescale) -> None:
    rows = await timescale.pool.fetch(
        "SELECT hypertable_name FROM timescaledb_information.hypertables WHERE hypertable_schema = 'public'"
    )
    assert {row["hypertable_name"] for row in rows} == {"ticks", "bars", "signals", "orders", "fills"}


async def test_ticks_and_bars_compress_by_symbol_newest_first(timescale: Timescale) -> None:
    rows = await timescale.pool.fetch(
        "SELECT hypertable_name, attname, segmentby_column_index, orderby_column_index, orderby_asc "
        "FROM timescaledb_information.compression_settings WHERE hypertable_schema = 'public'"
    )
    settings = {(r["hypertable_name"], r["attname"]): r for r in rows}
    for table in ("ticks", "bars"):
        assert settings[(table, "symbol")]["segmentby_column_index"] == 1
        assert settings[(table, "ts")]["orderby_column_index"] == 1
        assert settings[(table, "ts")]["orderby_asc"] is False


async def test_aggregates_exist_with_real_time_enabled(timescale: Timescale) -> None:
    rows = await timescale.pool.fetch(
        "SELECT view_name, materialized_only FROM timescaledb_information.continuous_aggregates"
    )
    assert {row["view_name"]: row["materialized_only"] for row in rows} == dict.fromkeys(AGGREGATES, False)


async def test_refresh_compression_and_retention_policies_exist(timescale: Timescale) -> None:
    jobs = await timescale.pool.fetch("SELECT proc_name, hypertable_name, config FROM timescaledb_information.jobs")
    procs = [job["proc_name"] for job in jobs]
    assert procs.count("policy_refresh_continuous_aggregate") == 5
    assert {job["hypertable_name"] for job in jobs if job["proc_name"] == "policy_compression"} == {"ticks", "bars"}
    assert [job["hypertable_name"] for job in jobs if job["proc_name"] == "policy_retention"] == ["ticks"]


@pytest.mark.parametrize("symbol", ["AAPL", "MSFT"])
async def test_rollups_equal_the_plain_path_including_minutes_after_the_last_refresh(
    timescale: Timescale, symbol: str
) -> None:
    await refresh(timescale.pool, RANGE_START, REFRESHED_UNTIL)
    ticks, stored = (AAPL, []) if symbol == "AAPL" else (MSFT, MSFT_BARS)
    assert any(t.timestamp >= REFRESHED_UNTIL for t in ticks)  # some minutes are real-time only
    await assert_both_paths_match_reference(timescale.pool, symbol, ticks, stored)


async def test_compressed_chunks_still_answer_queries(timescale: Timescale) -> None:
    await timescale.pool.execute("SELECT compress_chunk(c, if_not_compressed => TRUE) FROM show_chunks('ticks') c")
    await timescale.pool.execute("SELECT compress_chunk(c, if_not_compressed => TRUE) FROM show_chunks('bars') c")
    compressed = await timescale.pool.fetchval(
        "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'ticks' AND is_compressed"
    )
    assert compressed > 0
    await assert_both_paths_match_reference(timescale.pool, "AAPL", AAPL, [])
    await assert_both_paths_match_reference(timescale.pool, "MSFT", MSFT, MSFT_BARS)


async def test_backfill_into_a_compressed_range_with_the_policy_paused(timescale: Timescale) -> None:
    nvda = session_ticks("NVDA", seed=3, step_s=120)
    early, late = nvda[::2], nvda[1::2]
    await write_events(timescale.pool, early)
    await timescale.pool.execute("SELECT compress_chunk(c, if_not_compressed => TRUE) FROM show_chunks('ticks') c")
    async with compression_paused(timescale.pool):
        paused = await timescale.pool.fetch(
            "SELECT scheduled FROM timescaledb_information.jobs WHERE proc_name = 'policy_compression'"
        )
        assert paused
        assert not any(row["scheduled"] for row in paused)
        assert (await write_events(timescale.pool, late))["ticks"] == len(late)  # into compressed chunks
        assert (await write_events(timescale.pool, late))["ticks"] == 0  # still idempotent there
    resumed = await timescale.pool.fetch(
        "SELECT scheduled FROM timescaledb_information.jobs WHERE proc_name = 'policy_compression'"
    )
    assert all(row["scheduled"] for row in resumed)
    await refresh(timescale.pool, RANGE_START, RANGE_END)  # backfilled minutes were already materialized
    await assert_both_paths_match_reference(timescale.pool, "NVDA", nvda, [])


REFRESH_JOBS = (
    "SELECT job_id, scheduled FROM timescaledb_information.jobs WHERE proc_name = 'policy_refresh_continuous_aggregate'"
)
REFRESHES_RUNNING = (
    "SELECT count(*) FROM pg_stat_activity a JOIN timescaledb_information.jobs j "
    "ON a.backend_type = j.application_name WHERE j.proc_name = 'policy_refresh_continuous_aggregate'"
)


@pytest.fixture
async def own_pool() -> AsyncIterator[asyncpg.Pool]:
    """A migrated TimescaleDB database of its own: a test moving the rollups' watermark to now."""
    assert TIMESCALE_DSN
    name = session_database("tradebot_timescale_pause_test")
    pool = await create_pool(await migrated_database(TIMESCALE_DSN, name))
    yield pool
    await pool.close()
    await drop_database(TIMESCALE_DSN, name)


async def test_the_refresh_pause_waits_for_a_refresh_job_under_way(own_pool: asyncpg.Pool) -> None:
    pool = own_pool

    async def pause_entered() -> int:
        async with refreshes_paused(pool):
            return int(await pool.fetchval(REFRESHES_RUNNING))

    minute_job = await pool.fetchval(
        "SELECT job_id FROM timescaledb_information.jobs "
        "WHERE proc_name = 'policy_refresh_continuous_aggregate' AND hypertable_name = 'ohlcv_1m'"
    )
    blocked = (
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity a JOIN timescaledb_information.jobs j "
        "ON a.backend_type = j.application_name WHERE j.job_id = $1 AND a.wait_event_type = 'Lock')"
    )
    # a tick inside the minute policy's window, so its next run has minutes to read from the ticks
    recent = Tick.create("PAUSE", 10, 1, datetime.now(UTC) - timedelta(minutes=5), source="test", trade_id=1)
    await write_events(pool, [recent])
    async with pool.acquire() as blocker, blocker.transaction():
        # the minute rollup's job starts now and waits on this lock: a refresh under way
        await blocker.execute("LOCK TABLE ticks IN ACCESS EXCLUSIVE MODE")
        await pool.execute("SELECT alter_job($1, next_start => now())", minute_job)
        # The job needs a free background worker: on a server shared by several test sessions each
        # TimescaleDB database holds one for its scheduler, and with max_worker_processes = 8 a few
        # databases leave none ("no available background worker slots" in the server's log).
        await wait_until(
            lambda: pool.fetchval(blocked, minute_job),
            what="the minute refresh job to wait on the lock (if the server's log says 'no available "
            "background worker slots', other databases' schedulers hold every max_worker_processes slot)",
        )
        entered = asyncio.create_task(pause_entered())

        async def paused() -> bool:
            return not any(row["scheduled"] for row in await pool.fetch(REFRESH_JOBS))

        await wait_until(paused, what="the refresh policies to pause")
        assert not entered.done()  # still waiting for the job, which waits for the lock
    assert await entered == 0  # entered only once the job had finished
    resumed = await pool.fetch(REFRESH_JOBS)
    assert len(resumed) == len(WIDTHS)
    assert all(row["scheduled"] for row in resumed)


async def watermark(pool: asyncpg.Pool, view: str) -> datetime:
    """Where ``view``'s materialization ends: below it the aggregate answers from materialized
    buckets, from it on from real-time aggregation."""
    found: datetime = await pool.fetchval(
        "SELECT _timescaledb_functions.to_timestamp(_timescaledb_functions.cagg_watermark(mat_hypertable_id)) "
        "FROM _timescaledb_catalog.continuous_agg WHERE user_view_name = $1",
        view,
    )
    return found


async def both_paths(pool: asyncpg.Pool, symbol: str, timeframe: str, **window: datetime) -> list[list[dict]]:
    """The bars of one window from the rollups and from the ticks on the fly, vwap to float noise
    (sums of price * size in another order)."""
    found = []
    for rollups in (True, False):
        rows = await queries.history(pool, symbol, timeframe, limit=60, rollups=rollups, **window)
        found.append([{**dict(row), "vwap": _near(row["vwap"]) if rollups else row["vwap"]} for row in rows])
    return found


def _near(value: float | None) -> object:
    return None if value is None else pytest.approx(value, rel=1e-12)


async def test_a_window_straddling_the_watermark_equals_the_plain_path(timescale: Timescale) -> None:
    """Bars from both sides of the 1-minute watermark (materialized below it, real-time from it on)
    in one window are the plain path's, whichever end the window is anchored at."""
    await refresh(timescale.pool, RANGE_START, REFRESHED_UNTIL)  # the watermark only moves forward
    mark = await watermark(timescale.pool, "ohlcv_1m")
    moments = [mark + timedelta(seconds=s) for s in range(-50 * 60, 50 * 60, 29)]
    amd = [Tick.create("AMD", 50 + i % 17 / 10, 1 + i % 9, t, source="test", trade_id=i) for i, t in enumerate(moments)]
    await write_events(timescale.pool, amd)
    for view in AGGREGATES[:3]:  # AMD's buckets below each level's own watermark, which stays put
        view_mark = await watermark(timescale.pool, view)
        await refresh(timescale.pool, mark - timedelta(hours=2), view_mark, [view])
        assert await watermark(timescale.pool, view) == view_mark
    for timeframe in ("1m", "5m", "15m"):
        for window in ({"start": mark - timedelta(minutes=45)}, {"end": mark + timedelta(minutes=45)}):
            rollups, plain = await both_paths(timescale.pool, "AMD", timeframe, **window)
            assert rollups == plain, (timeframe, window)
            if timeframe == "1m":
                assert rollups[0]["ts"] < mark <= rollups[-1]["ts"], window


async def test_a_late_tick_below_the_watermark_shows_after_the_next_refresh(timescale: Timescale) -> None:
    """The rollups answer a materialized minute as of the last refresh: a tick written later into
    it (a late or corrected trade) is in the plain path at once, in the rollups once the minute is
    refreshed again (the refresh policy's window, 2 days for 1m; older minutes by a manual refresh)."""
    intc = session_ticks("INTC", seed=5, step_s=41)
    await write_events(timescale.pool, intc)
    await refresh(timescale.pool, RANGE_START, RANGE_END)
    minute = DAYS[0].replace(hour=10, minute=15).astimezone(UTC)
    assert minute < await watermark(timescale.pool, "ohlcv_1m")
    late = Tick.create("INTC", 1.5, 7, minute + timedelta(seconds=59), source="test", trade_id=10**6)
    assert (await write_events(timescale.pool, [late]))["ticks"] == 1
    window = {"start": minute, "end": minute + timedelta(minutes=1)}
    rollups, plain = await both_paths(timescale.pool, "INTC", "1m", **window)
    assert plain[0]["trade_count"] == rollups[0]["trade_count"] + 1  # materialized before the tick
    assert (plain[0]["low"], plain[0]["close"]) == (1.5, 1.5)
    await refresh(timescale.pool, RANGE_START, RANGE_END)
    for timeframe in TIMEFRAMES:
        rollups, plain = await both_paths(timescale.pool, "INTC", timeframe, start=bucket_of(minute, timeframe))
        assert rollups == plain, timeframe
        assert rollups[0]["low"] == 1.5, timeframe


async def test_a_refresh_over_all_time_writes_the_minutes_in_symbol_order(timescale: Timescale) -> None:
    """/history reads a symbol's consecutive minutes from the materialization: written in (symbol,
    bucket) order they share pages, not one page a bar (the planner's hash aggregate's order)."""
    symbols = [f"ORD{i}" for i in range(4)]
    start = DAYS[1].replace(hour=9, minute=30).astimezone(UTC)
    ticks = [
        Tick.create(symbol, 10 + i % 13, 1, start + timedelta(seconds=20 * i), source="test", trade_id=i)
        for i in range(3000)
        for symbol in symbols
    ]
    await write_events(timescale.pool, ticks)
    async with timescale.pool.acquire() as conn:
        await refresh_aggregate(conn, "ohlcv_1m")
        assert await conn.fetchval("SHOW enable_hashagg") == "on"  # the session is left as it was
    table = await timescale.pool.fetchval(
        "SELECT format('%I.%I', h.schema_name, h.table_name) FROM _timescaledb_catalog.continuous_agg c "
        "JOIN _timescaledb_catalog.hypertable h ON h.id = c.mat_hypertable_id WHERE c.user_view_name = 'ohlcv_1m'"
    )
    rows = await timescale.pool.fetch(
        f"SELECT symbol, bucket FROM {table} WHERE symbol = ANY($1::text[]) ORDER BY ctid", symbols
    )
    stored = [(row["symbol"], row["bucket"]) for row in rows]
    assert len(stored) == len(symbols) * 1000
    assert stored == sorted(stored)


async def test_windows_bounded_by_the_rollups_edge_equal_the_plain_path(timescale: Timescale) -> None:
    """A request's window ends at the limit-th bucket of the rollups when it lies within a few
    windows of the start (else the windows grow as before): either way the bars are the plain path's,
    from either end, for limits that end inside a session, across nights, and past the data."""
    await refresh(timescale.pool, RANGE_START, REFRESHED_UNTIL)
    for symbol, ticks, stored in (("AAPL", AAPL, []), ("MSFT", MSFT, MSFT_BARS)):  # MSFT: stored minutes too
        for timeframe in TIMEFRAMES:
            for limit in (1, 7, 390, 2000):
                for window in ({"start": RANGE_START}, {"end": RANGE_END}, {"start": RANGE_START, "end": RANGE_END}):
                    found = []
                    for rollups in (True, False):
                        rows = await queries.history(
                            timescale.pool, symbol, timeframe, limit=limit, rollups=rollups, **window
                        )
                        found.append([(row["ts"], row["open"], row["close"], row["trade_count"]) for row in rows])
                    assert found[0] == found[1], (symbol, timeframe, limit, window)
                    expected = min(limit, len(reference_bars(ticks, timeframe, stored)))
                    assert len(found[0]) == expected, (symbol, timeframe, limit)


class RecordingConnection:
    """A connection that notes the SQL of each fetch (the queries a history request runs)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn, self.statements = conn, list[str]()

    async def fetch(self, sql: str, *args: object) -> list[asyncpg.Record]:
        self.statements.append(sql)
        return await self.conn.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: object) -> asyncpg.Record | None:
        self.statements.append(sql)
        return await self.conn.fetchrow(sql, *args)

    async def execute(self, sql: str, *args: object) -> str:  # settings, not queries: not noted
        return await self.conn.execute(sql, *args)

    def transaction(self) -> asyncpg.transaction.Transaction:
        return self.conn.transaction()


async def test_a_window_holding_the_rollups_edge_needs_no_range_of_the_ticks(timescale: Timescale) -> None:
    """When the rollups hold the window's limit-th bucket, a request is two queries (the edge with
    the sources, then the bars) and neither asks for the range of the ticks, whose min and max are
    planned over every chunk of the hypertable; a window without that many buckets, a series of
    some sources and an unknown symbol still ask for it (and get the plain path's answers)."""
    await refresh(timescale.pool, RANGE_START, REFRESHED_UNTIL)
    async with timescale.pool.acquire() as pooled:
        recording = RecordingConnection(pooled)
        conn, statements = cast(asyncpg.Connection, recording), recording.statements
        in_session = {"start": AAPL[0].timestamp}, {"end": DAYS[1].replace(hour=12).astimezone(UTC)}
        for window in in_session:
            statements.clear()
            found = await queries.series(conn, "AAPL", "1m", limit=7, rollups=True, encoded=True, **window)
            assert found.bar_count == 7
            assert len(statements) == 2, statements
            assert not any("FROM ticks" in sql for sql in statements), statements
        statements.clear()
        far = await queries.history(conn, "AAPL", "1m", start=RANGE_START - timedelta(days=400), limit=7, rollups=True)
        assert any("FROM ticks" in sql for sql in statements)  # no edge near the start: the range clamps the windows
        assert far == await queries.history(conn, "AAPL", "1m", start=RANGE_START, limit=7)
        statements.clear()
        some = await queries.history(
            conn, "MSFT", "1m", start=MSFT[0].timestamp, limit=7, rollups=True, source="alpaca"
        )
        assert any("FROM ticks" in sql for sql in statements)
        assert some == await queries.history(conn, "MSFT", "1m", start=MSFT[0].timestamp, limit=7, source="alpaca")
        with pytest.raises(queries.UnknownSymbolError):
            await queries.history(conn, "NOPE", "1m", limit=7, rollups=True)


async def test_1m_rollups_bars_run_on_a_generic_plan_that_follows_the_watermark(own_pool: asyncpg.Pool) -> None:
    """The 1m rollups' edge and bars queries run on their generic plans (planned once per
    connection), and the bars stay the plain path's while the watermark moves across them between
    executions."""
    pool = own_pool
    base = datetime(2024, 3, 11, 14, tzinfo=UTC)
    ticks = [
        Tick.create("GEN", 20 + i % 13 / 10, 1 + i % 5, base + timedelta(seconds=23 * i), source="test", trade_id=i)
        for i in range(900)  # 5 h 45 min of trades
    ]
    await write_events(pool, ticks)
    windows = ({"start": base}, {"end": base + timedelta(hours=5)}, {"start": base, "end": base + timedelta(hours=3)})
    async with refreshes_paused(pool), pool.acquire() as conn:
        marks = []
        for refreshed_until in (base + timedelta(hours=1), base + timedelta(hours=2), base + timedelta(hours=4)):
            await refresh(pool, base - timedelta(days=1), refreshed_until, ["ohlcv_1m"])
            marks.append(await watermark(pool, "ohlcv_1m"))
            for _ in range(3):  # more executions than PostgreSQL plans custom before it may go generic
                for window in windows:
                    found = []
                    for rollups in (True, False):
                        rows = await queries.history(conn, "GEN", "1m", limit=150, rollups=rollups, **window)
                        found.append(
                            [{**dict(row), "vwap": _near(row["vwap"]) if rollups else row["vwap"]} for row in rows]
                        )
                    assert found[0] == found[1], (marks[-1], window)
                    assert len(found[0]) == 150
                    encoded = await queries.series(conn, "GEN", "1m", limit=150, rollups=True, encoded=True, **window)
                    assert (encoded.bar_count, encoded.last) == (150, found[1][-1]["ts"])
        assert marks == sorted(set(marks))  # each refresh moved the watermark, across the windows' bars
        plans = await conn.fetch(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
            "WHERE statement LIKE '%tick_buckets%' AND statement LIKE '%FROM ohlcv_1m%'"
        )
        # the edge query before them runs in the same transaction, on its generic plan too
        edges = await conn.fetch(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
            "WHERE statement LIKE '%AS edge%' AND statement LIKE '%FROM ohlcv_1m %' "
            "AND statement NOT LIKE '%pg_prepared_statements%'"  # not this one
        )
    assert plans  # the bars as rows and as JSON, oldest or newest first
    assert len(edges) == 2  # from the oldest and from the newest end
    for row in [*plans, *edges]:
        assert row["custom_plans"] == 0
        assert row["generic_plans"] > 0
