"""Plain PostgreSQL's kept 1-minute and daily series (migrations/postgresql/0022_kept_series.sql):
kept in the statement that writes the ticks, it equals the on-the-fly aggregation of the same ticks
whatever order, repeats and concurrency they arrive with; the migration builds it from stored
ticks; deleting ticks rebuilds it; /history answers the same JSON from it as on the fly."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest

from tests.storage_fixtures import (
    RANGE_END,
    RANGE_START,
    TIMEFRAMES,
    assert_same_bars,
    migrated_database,
    minute_bar,
    reference_bars,
    session_ticks,
)
from tradebot.api.history_service import create_app
from tradebot.common.config import Settings
from tradebot.common.db import drop_database
from tradebot.common.models import Tick
from tradebot.maintenance.sources import drop_source
from tradebot.storage import queries
from tradebot.storage.schema import apply_migrations
from tradebot.storage.writer import write_events

MONDAY_OPEN = datetime(2024, 3, 11, 13, 30, tzinfo=UTC)
# The on-the-fly minute and day aggregation of the ticks, written independently of series.py.
_ON_THE_FLY = """
SELECT symbol, {bucket} AS bucket, (array_agg(price ORDER BY ts, id))[1] AS open, max(price) AS high,
       min(price) AS low, (array_agg(price ORDER BY ts DESC, id DESC))[1] AS close, sum(size) AS volume,
       count(*) AS trade_count, sum(price * size) AS notional
FROM ticks GROUP BY 1, 2 ORDER BY 1, 2"""
_KEPT = (
    "SELECT symbol, bucket, open, high, low, close, volume, trade_count, notional FROM ohlcv_kept_{tf} ORDER BY 1, 2"
)
BUCKETS = {
    "1m": "date_bin(INTERVAL '1 minute', ts, TIMESTAMPTZ '2000-01-03')",
    "1d": "date_trunc('day', ts, 'America/New_York')",
}


@pytest.fixture
async def dsn(database_url: str) -> AsyncIterator[str]:
    dsn = await migrated_database(database_url, "kept_series_test")
    yield dsn
    await drop_database(database_url, "kept_series_test")


def _rows(records: Sequence[asyncpg.Record]) -> list[tuple[object, ...]]:
    """Rows with float sums rounded to 9 significant digits (added in another order, they may
    differ in the last bits)."""
    return [tuple(float(f"{v:.9g}") if isinstance(v, float) else v for v in record.values()) for record in records]


async def assert_kept_equals_on_the_fly(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for tf, bucket in BUCKETS.items():
            kept = _rows(await conn.fetch(_KEPT.format(tf=tf)))
            assert kept == _rows(await conn.fetch(_ON_THE_FLY.format(bucket=bucket))), tf
            assert kept, tf
    finally:
        await conn.close()


def _shuffled_batches(ticks: Sequence[Tick], size: int, seed: int) -> list[list[Tick]]:
    """Ticks in random order (so many arrive after later ticks of their minute and day were stored)."""
    shuffled = list(ticks)
    random.Random(seed).shuffle(shuffled)
    return [shuffled[i : i + size] for i in range(0, len(shuffled), size)]


SYMBOLS = ("KEPT", "OTHER")
TICKS = session_ticks("KEPT", seed=3) + session_ticks("OTHER", seed=4, step_s=53)
# Ties: two ticks in one instant, told apart by id (open and close go by (ts, id)).
TIES = [
    Tick.create("KEPT", price, 10, MONDAY_OPEN + timedelta(seconds=5), source="test", trade_id=f"tie-{n}")
    for n, price in ((2, 90.0), (1, 91.0), (3, 92.0))
]


async def test_late_and_redelivered_ticks_are_counted_once_each(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for n, batch in enumerate(_shuffled_batches([*TICKS, *TIES], 97, seed=1)):
            assert (await write_events(conn, batch))["ticks"] == len(batch)
            if n % 3 == 0:  # redelivered, part or whole: the repeat writes nothing, so adds nothing
                assert (await write_events(conn, batch[: len(batch) // 2 + n % 2 * len(batch)]))["ticks"] == 0
    finally:
        await conn.close()
    await assert_kept_equals_on_the_fly(dsn)


async def test_concurrent_writers_of_overlapping_batches_neither_deadlock_nor_double(dsn: str) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=4, max_size=4)
    try:
        batches = _shuffled_batches(TICKS, 250, seed=2)

        async def writer(seed: int) -> None:  # every writer writes every batch, in its own order
            for batch in random.Random(seed).sample(batches, len(batches)):
                await write_events(pool, batch)

        await asyncio.gather(*(writer(seed) for seed in range(4)))
    finally:
        await pool.close()
    await assert_kept_equals_on_the_fly(dsn)


async def _api_json(dsn: str, urls: Sequence[str], on_the_fly: bool) -> list[bytes]:
    app = create_app(Settings(_env_file=None, database_url=dsn))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client,
    ):
        assert app.state.mode == "postgresql"
        if on_the_fly:
            app.state.mode = "ticks"  # neither rollups nor kept series: the ticks on the fly
        bodies = []
        for url in urls:
            response = await client.get(url)
            assert response.status_code == 200, response.text
            bodies.append(response.content.replace(b'"mode":"ticks"', b'"mode":"postgresql"'))
        return bodies


STORED = [
    minute_bar("KEPT", datetime(2024, 3, 11, 14, 0, tzinfo=UTC), "provider", 50.0, 7e4, vwap=50.5),
    minute_bar("KEPT", datetime(2024, 3, 12, 4, 0, tzinfo=UTC), "provider", 60.0, 8e6, vwap=60.5, timeframe="1d"),
]


@pytest.mark.parametrize("timeframe", TIMEFRAMES)
async def test_history_answers_the_same_json_from_the_kept_series(dsn: str, timeframe: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for batch in _shuffled_batches(TICKS, 400, seed=5):
            await write_events(conn, [*batch, *STORED])  # the bars' repeats change nothing
    finally:
        await conn.close()
    urls = [
        f"/history/KEPT?timeframe={timeframe}&start={RANGE_START:%Y-%m-%dT%H:%M:%SZ}&limit=5000",
        f"/history/KEPT?timeframe={timeframe}&end={RANGE_END:%Y-%m-%dT%H:%M:%SZ}&limit=7",
        # windows that end at the limit-th kept bucket, with stored bars winning inside them
        f"/history/KEPT?timeframe={timeframe}&start=2024-03-11T13:59:00Z&limit=2",
        f"/history/KEPT?timeframe={timeframe}&end=2024-03-12T14:01:00Z&limit=3",
        f"/history/KEPT?timeframe={timeframe}&start=2024-03-08T20:00:00Z&limit=40",
        f"/history/OTHER?timeframe={timeframe}&limit=5000",
        f"/ohlcv/KEPT?timeframe={timeframe}&limit=5000",
        "/stats/KEPT",
    ]
    kept = await _api_json(dsn, urls, on_the_fly=False)
    assert kept == await _api_json(dsn, urls, on_the_fly=True)
    first = httpx.Response(200, content=kept[0]).json()
    # and both are the documented series: stored bars win their closed buckets
    assert_same_bars(first["bars"], reference_bars([t for t in TICKS if t.symbol == "KEPT"], timeframe, STORED))


async def test_the_migration_builds_the_series_from_stored_ticks(dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await write_events(conn, TICKS)
        before = await conn.fetch(_KEPT.format(tf="1m"))
        # as a database migrated before the kept series existed: ticks, no series
        await conn.execute(
            "DROP TRIGGER ticks_kept_series_add ON ticks; DROP TRIGGER ticks_kept_series_remove ON ticks; "
            "DROP TRIGGER ticks_kept_series_truncate ON ticks; "
            "DROP TABLE ohlcv_kept_1m, ohlcv_kept_1d, kept_series_off; "
            "DELETE FROM schema_migrations WHERE version = '0022'"
        )
        with caplog.at_level(logging.INFO, logger="tradebot.storage.schema"):
            await apply_migrations(dsn)
        assert _rows(await conn.fetch(_KEPT.format(tf="1m"))) == _rows(before)
    finally:
        await conn.close()
    progress = [r.getMessage() for r in caplog.records if "kept series" in r.getMessage()]
    minutes = {s: len({t.timestamp.replace(second=0, microsecond=0) for t in TICKS if t.symbol == s}) for s in SYMBOLS}
    assert progress == [
        f"migration: kept series: {symbol} built from its ticks, {minutes[symbol]} minutes ({n} of 2 symbols)"
        for n, symbol in enumerate(SYMBOLS, start=1)
    ]
    await assert_kept_equals_on_the_fly(dsn)


async def test_deleted_ticks_leave_the_series_and_the_truncate_empties_it(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await write_events(conn, [*TICKS, *(t.model_copy(update={"source": "mock"}) for t in TIES)])
        assert (await drop_source(conn, "mock"))["ticks"] == len(TIES)
        await assert_kept_equals_on_the_fly(dsn)
        await conn.execute("DELETE FROM ticks WHERE symbol = 'KEPT' AND ts < $1", MONDAY_OPEN + timedelta(hours=2))
        await assert_kept_equals_on_the_fly(dsn)
        await conn.execute("TRUNCATE ticks")
        assert await conn.fetchval("SELECT count(*) FROM ohlcv_kept_1m") == 0
        assert await conn.fetchval("SELECT count(*) FROM ohlcv_kept_1d") == 0
    finally:
        await conn.close()


async def test_ticks_that_overflow_turn_their_symbol_off_and_a_drop_turns_it_on(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await write_events(conn, TICKS[:500])
        # a statement with an unaggregatable tick (the models refuse it; SQL does not) goes through
        await conn.execute(
            "INSERT INTO ticks VALUES ('KEPT', $1, 'huge', 1e200, 1e200, 'bad'), ('OTHER', $1, 'fine', 10, 1, 'ok')",
            MONDAY_OPEN,
        )
        assert await conn.fetchval("SELECT reason FROM kept_series_off WHERE symbol = 'KEPT'") == (
            "value out of range: overflow"
        )
        assert await conn.fetchval("SELECT count(*) FROM ohlcv_kept_1m WHERE symbol = 'KEPT'") == 0
        with pytest.raises(queries.StoredDataError, match="overflow"):  # on the fly, as without the series
            await queries.history(conn, "KEPT", "1m", kept=True)
        await write_events(conn, TICKS[500:])  # OTHER's ticks are still kept, KEPT's are not
        await drop_source(conn, "bad")
        assert await conn.fetchval("SELECT count(*) FROM kept_series_off") == 0
    finally:
        await conn.close()
    await assert_kept_equals_on_the_fly(dsn)
