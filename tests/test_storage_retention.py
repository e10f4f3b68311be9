"""Tick retention on plain PostgreSQL: old ticks become 1-minute bars, /history shows the same bars."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from tests.storage_fixtures import migrated_database
from tradebot.common.models import Tick
from tradebot.storage import queries
from tradebot.storage.retention import enforce_tick_retention
from tradebot.storage.writer import write_events

NOW = datetime.now(UTC).replace(second=0, microsecond=0)
OLD = NOW - timedelta(days=3)


def _ticks(start: datetime, count: int, source: str = "mock") -> list[Tick]:
    return [
        Tick.create("AAPL", 200 + (i % 7) * 0.37, 10 + i, start + timedelta(seconds=17 * i), source=source, trade_id=i)
        for i in range(count)
    ]


@pytest.fixture
async def pool(database_url: str):  # type: ignore[no-untyped-def]
    dsn = await migrated_database(database_url, "retention_test")
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    yield pool
    await pool.close()


async def test_old_ticks_turn_into_minutes_with_the_same_history(pool: asyncpg.Pool) -> None:
    old, recent = _ticks(OLD, 40), _ticks(NOW - timedelta(hours=1), 20, source="alpaca")
    await write_events(pool, [*old, *recent])
    window = {"start": OLD - timedelta(days=1), "limit": 10_000}
    before = {tf: await queries.history(pool, "AAPL", tf, **window) for tf in ("1m", "15m", "1d")}
    assert await enforce_tick_retention(pool, "2 days") == len(old)
    assert await pool.fetchval("SELECT count(*) FROM ticks") == len(recent)
    assert await pool.fetchval("SELECT count(DISTINCT source) FROM bars WHERE source = 'mock'") == 1
    for timeframe, bars in before.items():
        assert_same(await queries.history(pool, "AAPL", timeframe, **window), bars)
    assert await enforce_tick_retention(pool, "2 days") == 0  # nothing left to do: a re-run is harmless


def assert_same(after: list, before: list) -> None:
    assert before
    assert len(after) == len(before)
    for a, b in zip(after, before, strict=True):
        assert a["ts"] == b["ts"]
        assert a["trade_count"] == b["trade_count"]
        for field in ("open", "high", "low", "close", "volume", "vwap"):
            assert a[field] == pytest.approx(b[field], rel=1e-9), field


async def test_a_value_that_is_no_interval_is_refused(pool: asyncpg.Pool) -> None:
    with pytest.raises(asyncpg.DataError):
        await enforce_tick_retention(pool, "ninety days")
