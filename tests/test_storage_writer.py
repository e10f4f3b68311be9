"""Writes against real PostgreSQL: every event type lands once, redeliveries write nothing, and the
storage worker persists what is on the streams and acks it only after the commit."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from tests.storage_fixtures import migrated_database, minute_bar
from tradebot.common.bus import Bus
from tradebot.common.codec import wire_rows
from tradebot.common.config import Settings
from tradebot.common.db import create_pool
from tradebot.common.models import Order, OrderEvent, Signal, Tick
from tradebot.common.streams import BARS, ORDER_EVENTS, ORDERS_NEW, STORAGE_GROUP, signal_stream, tick_stream_for
from tradebot.storage import timeseries_service, writer
from tradebot.storage.writer import write_bars, write_events

START = datetime(2024, 3, 11, 14, 30, tzinfo=UTC)
TABLES = ("ticks", "bars", "signals", "orders", "fills")


def ticks(count: int, symbol: str = "AAPL", first: int = 0) -> list[Tick]:
    return [
        Tick.create(symbol, 100 + i % 9, 1 + i % 4, START + timedelta(seconds=i), source="test", trade_id=i)
        for i in range(first, first + count)
    ]


def trading_events() -> list:
    signal = Signal(
        id="sig-1",
        symbol="AAPL",
        timestamp=START,
        side="buy",
        price=101.5,
        confidence=0.8,
        strategy="ma_cross",
        tick_id="test:AAPL:1",
    )
    order = Order.from_signal(signal, quantity=10)
    fill = OrderEvent(
        id=f"{order.id}-fill",
        symbol="AAPL",
        timestamp=START + timedelta(seconds=1),
        client_order_id=order.id,
        status="filled",
        side="buy",
        quantity=10,
        price=101.6,
        commission=0.05,
    )
    rejection = OrderEvent(
        id="co-2-rejected",
        symbol="MSFT",
        timestamp=START,
        client_order_id="co-2",
        status="rejected",
        side="sell",
        quantity=0,
        reason="no position to sell",
    )
    return [signal, order, fill, rejection]


@pytest.fixture(scope="module")
async def storage_dsn(database_url: str) -> str:
    return await migrated_database(database_url, "storage_writer_test")


@pytest.fixture
async def pool(storage_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the empty storage tables."""
    pool = await create_pool(storage_dsn, max_size=4)
    await pool.execute(f"TRUNCATE {', '.join(TABLES)}")
    yield pool
    await pool.close()


async def counts(pool: asyncpg.Pool) -> dict[str, int]:
    return {table: await pool.fetchval(f"SELECT count(*) FROM {table}") for table in TABLES}


async def test_each_event_type_lands_in_its_table(pool: asyncpg.Pool) -> None:
    bar = minute_bar("AAPL", START, "alpaca", 100, 500, vwap=100.4)
    written = await write_events(pool, [*ticks(3), bar, *trading_events()])
    assert written == Counter(ticks=3, bars=1, signals=1, orders=1, fills=2)
    fills = await pool.fetch("SELECT status, price, reason FROM fills ORDER BY status")
    assert [tuple(row) for row in fills] == [("filled", 101.6, None), ("rejected", None, "no position to sell")]
    stored = await pool.fetchrow("SELECT * FROM ticks ORDER BY ts LIMIT 1")
    assert (stored["symbol"], stored["ts"], stored["id"], stored["price"]) == ("AAPL", START, "test:AAPL:0", 100)


async def test_every_lifecycle_status_of_a_real_broker_is_stored(pool: asyncpg.Pool) -> None:
    statuses = ["submitted", "accepted", "partially_filled", "filled", "canceled", "expired", "rejected", "replaced"]
    events = [
        OrderEvent(
            id=f"ev-{status}",
            symbol="AAPL",
            timestamp=START,
            client_order_id="co-1",
            status=status,  # type: ignore[arg-type]
            side="buy",
            quantity=5,
            price=100.0 if "filled" in status else None,
        )
        for status in statuses
    ]
    assert (await write_events(pool, events))["fills"] == len(statuses)
    stored = await pool.fetch("SELECT status FROM fills")
    assert sorted(row["status"] for row in stored) == sorted(statuses)


async def test_redelivered_batch_writes_nothing(pool: asyncpg.Pool) -> None:
    batch = [*ticks(50), *trading_events()]
    await write_events(pool, batch)
    again = await write_events(pool, batch)
    assert sum(again.values()) == 0
    assert sum((await write_events(pool, trading_events()[1:])).values()) == 0  # no tick among them
    assert await counts(pool) == {"ticks": 50, "bars": 0, "signals": 1, "orders": 1, "fills": 2}


async def test_duplicates_inside_one_batch_collapse(pool: asyncpg.Pool) -> None:
    batch = ticks(5)
    written = await write_events(pool, batch + batch[:3])
    assert written["ticks"] == 5
    assert (await counts(pool))["ticks"] == 5


async def test_a_batch_partly_stored_writes_only_its_new_ticks_and_keeps_the_first_of_a_key(
    pool: asyncpg.Pool,
) -> None:
    await write_events(pool, ticks(50))
    repeated = ticks(1, first=60)[0].model_copy(update={"price": 1.5})  # the same key, another price
    written = await write_events(pool, [*ticks(80), repeated])  # the insert as new fails; then skipping
    assert written["ticks"] == 30
    assert (await counts(pool))["ticks"] == 80
    assert await pool.fetchval("SELECT price FROM ticks WHERE id = 'test:AAPL:60'") == 100 + 60 % 9
    async with pool.acquire() as conn, conn.transaction():  # a caller's transaction survives a stored tick
        assert (await write_events(conn, ticks(81)))["ticks"] == 1
        assert await conn.fetchval("SELECT count(*) FROM ticks") == 81


async def test_ticks_decoded_from_entries_are_stored_with_exactly_their_values(pool: asyncpg.Pool) -> None:
    # what the storage reader hands the writer (the strict decode's rows), with values whose text
    # forms are the hard ones: offsets, every fractional-second width, floats without a short decimal
    data = json.dumps(
        [
            ["a1", "AAPL", "2024-03-11T14:30:00Z", 0.1 + 0.2, 1e-05, "mock"],
            ["a2", "AAPL", "2024-03-11T14:30:00.5+05:30", 123456.78901234567, 4999.999999999999, "mock"],
            ["a3", "AAPL", "2024-03-11T14:30:00.000001-00:00", 1e-4, 1e9, "alpaca"],
            ["a4", "AAPL", "2024-03-11T14:30:00.1234565Z", 1.0000000000000002, 9999999999.999998, "mock"],
            ["a5", "AAPL", "2024-03-11 09:30:00.123456-05:00", 99999.99999999999, 0.30000000000000004, "mock"],
            ['a\u00e9"\\5', "MSFT", "2024-03-11T23:59:59.999999Z", 1 / 3, 7.0, "custom"],  # escaped in JSON
        ]
    )
    rows = wire_rows(data)
    assert rows is not None
    assert len(rows) == 6
    assert (await writer.write_batch(pool, rows, []))["ticks"] == 6
    stored = {r["id"]: r for r in await pool.fetch("SELECT * FROM ticks")}
    for row in rows:
        kept = stored[row.id]
        assert (kept["symbol"], kept["ts"], kept["price"], kept["size"], kept["source"]) == (
            row.symbol,
            row.timestamp,
            row.price,
            row.size,
            row.source,
        )
    assert await pool.fetchval("SELECT count(*) FROM symbol_sources WHERE source = 'custom'") == 1


async def test_a_corrected_bar_replaces_the_stored_one_and_an_identical_one_is_a_no_op(pool: asyncpg.Pool) -> None:
    first = minute_bar("AAPL", START, "alpaca", 100, 500).model_copy(update={"version": 1})
    corrected = first.model_copy(update={"close": 100.5, "volume": 650, "version": 2})
    assert (await write_events(pool, [first]))["bars"] == 1
    assert (await write_events(pool, [first]))["bars"] == 0
    assert (await write_events(pool, [corrected]))["bars"] == 1
    row = await pool.fetchrow("SELECT close, volume FROM bars")
    assert (row["close"], row["volume"]) == (100.5, 650)


async def test_bar_corrections_delivered_out_of_order_leave_the_newest_stored(pool: asyncpg.Pool) -> None:
    original = minute_bar("AAPL", START, "alpaca", 100, 500)
    versions = [original.model_copy(update={"volume": 500 + n, "close": 100 + n / 10, "version": n}) for n in (1, 2, 3)]
    newest = versions[2]
    await write_events(pool, [newest])
    assert (await write_events(pool, [versions[0]]))["bars"] == 0  # an older version, reclaimed late
    assert (await write_events(pool, [versions[1], versions[0]]))["bars"] == 0
    await asyncio.gather(*(write_events(pool, [bar]) for bar in (versions[1], versions[0], versions[1])))
    row = await pool.fetchrow("SELECT close, volume, version FROM bars")
    assert (row["close"], row["volume"], row["version"]) == (newest.close, newest.volume, 3)
    fourth = original.model_copy(update={"volume": 900, "version": 4})
    assert (await write_events(pool, [fourth, versions[1]]))["bars"] == 1  # one batch: its newest counts
    assert await pool.fetchval("SELECT volume FROM bars") == 900


async def test_write_bars_commits_large_backfills_in_batches(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer, "BACKFILL_BATCH_ROWS", 4)
    bars = [minute_bar("MSFT", START + timedelta(minutes=i), "polygon", 50, 100) for i in range(10)]
    assert await write_bars(pool, bars) == 10
    assert await write_bars(pool, bars) == 0
    with pytest.raises(TypeError):
        await write_bars(pool, ticks(1))  # type: ignore[arg-type]


async def test_concurrent_overlapping_writers_store_each_tick_once(pool: asyncpg.Pool) -> None:
    everything = ticks(2000)
    batches = [everything[i : i + 700] for i in range(0, 2000, 300)]  # overlapping slices
    results = await asyncio.gather(*(write_events(pool, batch) for batch in batches))
    assert sum(result["ticks"] for result in results) == 2000
    assert (await counts(pool))["ticks"] == 2000


async def test_storage_worker_persists_every_stream_and_acks_after_commit(
    pool: asyncpg.Pool, storage_dsn: str, redis_url: str, bus: Bus, tmp_path: Path
) -> None:
    settings = Settings(
        _env_file=None,
        redis_url=redis_url,
        database_url=storage_dsn,
        data_dir=tmp_path,
        tick_partitions=4,
        bus_batch_size=100,
        bus_block_ms=50,
        burst=True,
    )
    market = ticks(150, "AAPL") + ticks(150, "NVDA")
    signal, order, *order_events = trading_events()
    published = [(tick_stream_for(t.symbol, 4), t) for t in market]
    published += [
        (BARS, minute_bar("AAPL", START, "alpaca", 100, 500)),
        (signal_stream(1), signal),
        (ORDERS_NEW, order),
    ]
    published += [(ORDER_EVENTS, event) for event in order_events]
    await bus.publish(published + published[:20])  # the first 20 again: a producer's retry
    counters: Counter = Counter()
    await timeseries_service.run(settings, stop=asyncio.Event(), counters=counters)
    assert await counts(pool) == {"ticks": 300, "bars": 1, "signals": 1, "orders": 1, "fills": 2}
    assert counters["handled"] == len(published) + 20
    assert counters["duplicates"] == 20
    for stream in {stream for stream, _ in published}:
        assert (await bus.health(stream, STORAGE_GROUP)).pending == 0


async def test_storage_worker_takes_its_bus_from_the_settings(
    pool: asyncpg.Pool, storage_dsn: str, redis_url: str, bus: Bus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bus.from_settings is the one place that turns REDIS_URL, REDIS_MEMORY_BUDGET_MB and MAX_DELIVERIES into a bus."""
    settings = Settings(
        _env_file=None,
        redis_url=redis_url,
        database_url=storage_dsn,
        data_dir=tmp_path,
        redis_memory_budget_mb=2,
        max_deliveries=7,
        bus_block_ms=50,
        burst=True,
    )
    made: list[Bus] = []
    original = Bus.from_settings

    def recording(cls: type[Bus], given: Settings) -> Bus:
        assert given is settings
        made.append(original(given))
        return made[-1]

    monkeypatch.setattr(Bus, "from_settings", classmethod(recording))
    await bus.publish([(tick_stream_for("AAPL", settings.tick_partitions), ticks(1)[0])])
    await timeseries_service.run(settings, stop=asyncio.Event())
    assert [(b.memory_budget_bytes, b.max_deliveries) for b in made] == [(2 * 2**20, 7)]
    assert (await counts(pool))["ticks"] == 1
