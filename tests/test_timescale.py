"""TimescaleDB mode, against a real TimescaleDB server named by TEST_TIMESCALE_DSN (skipped otherwise).

    docker run -d -p 5433:5432 -e POSTGRES_PASSWORD=pw timescale/timescaledb:latest-pg16
    TEST_TIMESCALE_DSN=postgresql://postgres:pw@127.0.0.1:5433/postgres pytest tests/test_timescale.py

The history API tests (tests/test_history_api.py) also run against this server when it is set.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from tests.storage_fixtures import (
    DAYS,
    RANGE_END,
    RANGE_START,
    TIMEFRAMES,
    minute_bar,
    reference_bars,
    session_database,
    session_ticks,
)
from tradebot.common.db import create_pool, drop_database, recreate_database
from tradebot.storage import queries
from tradebot.storage.schema import apply_migrations
from tradebot.storage.timescale import TimescaleOptions, compression_paused, database_mode
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


async def refresh(pool: asyncpg.Pool, start: datetime, end: datetime) -> None:
    """Materialize every level for [start, end); refresh cannot run inside a transaction block."""
    async with pool.acquire() as conn:
        for view in AGGREGATES:
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
