"""The storage bench's /history table kept between runs (``tradebot bench storage --keep-table``)."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from tradebot.bench.history_table import HISTORY_DATABASE, StorageSizes
from tradebot.bench.storage import bench, latency_figures
from tradebot.common.config import Settings
from tradebot.common.db import drop_database

SIZES = StorageSizes(table_ticks=6_000, ingest_rows=500, samples=2, load_seconds=1, keep_table=True)


async def _run(settings: Settings, ticks: int) -> dict:
    return await bench(
        settings,
        ticks=ticks,
        symbols=SIZES.symbols,
        days=SIZES.days,
        ingest_rows=SIZES.ingest_rows,
        samples=SIZES.samples,
        keep=False,
        keep_table=True,
    )


async def _count(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval("SELECT count(*) FROM ticks")
    finally:
        await conn.close()


async def test_a_kept_table_is_reused_by_the_next_run_of_its_size_and_replaced_for_another(
    redis_url: str, database_url: str, tmp_path: Path
) -> None:
    settings = Settings(_env_file=None, redis_url=redis_url, database_url=database_url, data_dir=tmp_path)
    await drop_database(database_url, HISTORY_DATABASE)
    try:
        first = await _run(settings, SIZES.table_ticks)
        assert "reused" not in first
        assert first["generate_s"] > 0
        assert first["history_dsn"].endswith(f"/{HISTORY_DATABASE}")

        second = await _run(settings, SIZES.table_ticks)
        assert second["reused"]
        assert "generate_s" not in second
        assert second["table_ticks"] == first["table_ticks"] == await _count(second["history_dsn"])
        assert second["latency"].keys() == first["latency"].keys()
        load = latency_figures(second, SIZES)[0]
        assert load.name == "table load"
        assert load.value is None
        assert "reused" in load.method

        other = await _run(settings, 2 * SIZES.table_ticks)  # another size: generated again
        assert "reused" not in other
        assert other["table_ticks"] > first["table_ticks"]
        assert await _count(other["history_dsn"]) == other["table_ticks"]
    finally:
        await drop_database(database_url, HISTORY_DATABASE)
