"""Migrations against real PostgreSQL: once each, safe when racing, transactional, reviewable."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.helpers import free_port
from tradebot.common.config import Settings
from tradebot.common.db import recreate_database
from tradebot.storage import schema
from tradebot.storage.schema import (
    MigrationError,
    apply_migrations,
    check_retention,
    load_migrations,
    migrate,
    render_ddl,
    split_statements,
)
from tradebot.storage.timescale import TimescaleOptions, chunk_interval_for, database_mode

GB = 1024**3
CORE_TABLES = {"ticks", "bars", "signals", "orders", "fills", "gaps"}  # all but gaps are hypertables under TimescaleDB
RISK_TABLES = {"control_events", "equity_samples"}  # small tables, not hypertables


@pytest.fixture
async def empty_dsn(database_url: str) -> str:
    return await recreate_database(database_url, "schema_test")


async def tables(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {row["tablename"] for row in rows}
    finally:
        await conn.close()


async def test_dry_run_lists_the_ddl_and_changes_nothing(empty_dsn: str) -> None:
    statements = await apply_migrations(empty_dsn, dry_run=True)
    assert any("CREATE TABLE IF NOT EXISTS ticks" in s for s in statements)
    assert await tables(empty_dsn) == set()


async def test_migrations_apply_once_and_a_second_run_does_nothing(empty_dsn: str) -> None:
    assert await apply_migrations(empty_dsn)
    assert await tables(empty_dsn) == CORE_TABLES | RISK_TABLES | {
        "symbol_sources",
        "schema_migrations",
        "backtest_runs",
        "order_changes",
        *("ohlcv_kept_1m", "ohlcv_kept_1d", "kept_series_off", "history_versions"),  # plain PostgreSQL only
        *("ohlcv_mixed_1h", "ohlcv_mixed_1d"),  # plain PostgreSQL only
    }
    assert await apply_migrations(empty_dsn) == []
    conn = await asyncpg.connect(empty_dsn)
    try:
        assert await database_mode(conn) == "postgresql"
    finally:
        await conn.close()


async def test_racing_runners_apply_each_migration_exactly_once(empty_dsn: str) -> None:
    # Two on this event loop, two through the synchronous entry point on threads of their own.
    results = await asyncio.gather(
        *(apply_migrations(empty_dsn) for _ in range(2)), *(asyncio.to_thread(migrate, empty_dsn) for _ in range(2))
    )
    assert sorted(bool(r) for r in results) == [False, False, False, True]
    conn = await asyncpg.connect(empty_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(load_migrations("postgresql"))
    finally:
        await conn.close()


def write_migrations(folder: Path, files: dict[str, str]) -> None:
    (folder / "timescale").mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)


async def test_a_failing_migration_leaves_no_trace_and_applies_once_fixed(
    empty_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(schema, "MIGRATIONS_DIR", tmp_path)
    write_migrations(
        tmp_path,
        {
            "0001_a.sql": "CREATE TABLE a (x int);\n",
            "0002_b.sql": "CREATE TABLE b (x int);\nSELECT no_such_function();\n",
        },
    )
    with pytest.raises(asyncpg.UndefinedFunctionError):
        await apply_migrations(empty_dsn)
    assert await tables(empty_dsn) == {"a", "schema_migrations"}  # 0002 rolled back as a whole
    write_migrations(tmp_path, {"0002_b.sql": "CREATE TABLE b (x int);\n"})
    assert len(await apply_migrations(empty_dsn)) == 1
    assert await tables(empty_dsn) == {"a", "b", "schema_migrations"}


async def test_marked_migration_runs_outside_a_transaction_block(
    empty_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # CREATE INDEX CONCURRENTLY, like TimescaleDB's WITH DATA aggregates, refuses a transaction block.
    monkeypatch.setattr(schema, "MIGRATIONS_DIR", tmp_path)
    concurrently = "CREATE INDEX CONCURRENTLY IF NOT EXISTS a_x ON a (x);\n"
    write_migrations(tmp_path, {"0001_a.sql": "CREATE TABLE a (x int);\n", "0002_index.sql": concurrently})
    with pytest.raises(asyncpg.ActiveSQLTransactionError):
        await apply_migrations(empty_dsn)
    write_migrations(tmp_path, {"0002_index.sql": schema.NO_TRANSACTION_MARKER + "\n" + concurrently})
    assert len(await apply_migrations(empty_dsn)) == 1
    assert await apply_migrations(empty_dsn) == []


async def test_repeatable_migration_reapplies_only_when_its_rendered_text_changes(
    empty_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(schema, "MIGRATIONS_DIR", tmp_path)
    write_migrations(
        tmp_path,
        {"0001_a.sql": "CREATE TABLE a (x text);\n", "R_fill.sql": "INSERT INTO a VALUES ({{compress_after}});\n"},
    )
    await apply_migrations(empty_dsn)
    assert await apply_migrations(empty_dsn) == []
    assert await apply_migrations(empty_dsn, options=TimescaleOptions(compress_after="3 days")) == [
        "-- R_fill.sql (in one transaction)\nINSERT INTO a VALUES ('3 days');"
    ]


def test_timescale_ddl_has_hypertables_compression_aggregates_and_policies() -> None:
    ddl = "\n".join(render_ddl("timescaledb", TimescaleOptions(tick_retention="90 days")))
    for table in CORE_TABLES - {"gaps"}:  # a handful of gap records need no hypertable
        assert f"create_hypertable('{table}', 'ts'" in ddl
    assert "timescaledb.compress_segmentby = 'symbol'" in ddl
    assert "compress_orderby = 'ts DESC" in ddl
    for timeframe in ("1m", "5m", "15m", "1h", "1d"):
        assert f"CREATE MATERIALIZED VIEW IF NOT EXISTS ohlcv_{timeframe}" in ddl
        assert f"add_continuous_aggregate_policy('ohlcv_{timeframe}'" in ddl
    assert ddl.count("timescaledb.materialized_only = false") == 5
    assert "time_bucket(INTERVAL '1 day', bucket, 'America/New_York')" in ddl
    assert "add_retention_policy('ticks', drop_after => '90 days'::interval)" in ddl
    assert "0004_ohlcv_aggregates.sql (statement by statement, outside a transaction)" in ddl


def test_plain_ddl_has_no_timescale_statements() -> None:
    ddl = "\n".join(render_ddl("postgresql"))
    assert "create_hypertable" not in ddl
    assert "timescaledb." not in ddl
    assert "EXTENSION" not in ddl


def test_statements_split_at_line_ending_semicolons_outside_dollar_bodies() -> None:
    sql = "-- intro;\nSELECT 1;\nDO $$\nBEGIN\n  PERFORM 1;\nEND\n$$;\n-- trailing comment\n"
    assert split_statements(sql) == ["-- intro;\nSELECT 1;", "DO $$\nBEGIN\n  PERFORM 1;\nEND\n$$;"]


def test_unknown_placeholder_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "0001_x.sql"
    path.write_text("SELECT {{nope}};")
    with pytest.raises(MigrationError, match="no value for"):
        schema.Migration("0001", path).render({})


async def test_tick_retention_must_outlast_the_refresh_window(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await check_retention(conn, TimescaleOptions(tick_retention="30 days"))
        with pytest.raises(MigrationError, match="must be longer than the 1-minute aggregate's refresh window"):
            await check_retention(conn, TimescaleOptions(tick_retention="1 day"))
        with pytest.raises(MigrationError, match="is not an interval"):
            await check_retention(conn, TimescaleOptions(tick_retention="soon"))
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("bytes_per_day", "memory", "expected"),
    [
        (10 * GB, 64 * GB, "1 day"),  # Timescale's own example: 10 GB/day on 64 GB -> 1 day
        (20 * GB, 64 * GB, "6 hours"),
        (20 * GB, 8 * GB, "1 hour"),
        (500 * GB, 8 * GB, "1 hour"),  # nothing fits: the smallest candidate
    ],
)
def test_chunk_interval_follows_the_quarter_of_memory_rule(bytes_per_day: float, memory: int, expected: str) -> None:
    candidates = (("1 day", 1.0), ("6 hours", 0.25), ("1 hour", 1 / 24))
    assert chunk_interval_for(bytes_per_day, memory, candidates) == expected


def test_options_come_from_settings_and_chunk_interval_overrides_ticks() -> None:
    settings = Settings(_env_file=None, max_symbols=100, compress_after="3 days", tick_retention="60 days")
    sized = TimescaleOptions.from_settings(settings, memory_bytes=16 * GB)
    assert (sized.ticks_chunk_interval, sized.bars_chunk_interval) == ("1 day", "7 days")
    assert (sized.compress_after, sized.tick_retention) == ("3 days", "60 days")
    small = TimescaleOptions.from_settings(settings, memory_bytes=2 * GB)
    assert small.ticks_chunk_interval == "6 hours"
    overridden = TimescaleOptions.from_settings(
        settings.model_copy(update={"chunk_interval": "2 days"}), memory_bytes=16 * GB
    )
    assert overridden.ticks_chunk_interval == "2 days"


DEBIAN_POSTGRES = Path("/usr/lib/postgresql/15/bin")


@pytest.fixture
def unpreloaded_timescaledb() -> Iterator[str]:
    """Debian's PostgreSQL 15 with the timescaledb extension installed (../shared/tools/timescaledb
    builds it there) but not in shared_preload_libraries: a throwaway cluster, its DSN."""
    sharedir = Path("/usr/share/postgresql/15/extension")
    if not (DEBIAN_POSTGRES / "postgres").exists() or not (sharedir / "timescaledb.control").exists():
        pytest.skip("needs Debian's PostgreSQL 15 with the timescaledb extension installed")
    user = "postgres" if os.geteuid() == 0 else None  # PostgreSQL refuses to run as root
    home = Path(tempfile.mkdtemp(prefix="tradebot-unpreloaded-"))  # in /tmp: pytest's tmp is root's alone
    if user:
        shutil.chown(home, user)
    data = home / "data"
    run = functools.partial(subprocess.run, check=True, capture_output=True, user=user)
    run([str(DEBIAN_POSTGRES / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"])
    port = free_port()
    options = f"-p {port} -k {home} -c listen_addresses=127.0.0.1"
    run([str(DEBIAN_POSTGRES / "pg_ctl"), "-D", str(data), "-l", str(home / "log"), "-o", options, "-w", "start"])
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        run([str(DEBIAN_POSTGRES / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"])
        shutil.rmtree(home)


async def test_a_timescaledb_that_is_not_preloaded_means_plain_postgresql_with_a_warning(
    unpreloaded_timescaledb: str, caplog: pytest.LogCaptureFixture
) -> None:
    """CREATE EXTENSION there ends the session with a FATAL error: the migration used to go on on
    the closed connection and fail with "connection is closed". It applies the plain schema and
    says what to set."""
    with caplog.at_level(logging.WARNING, logger="tradebot.storage.schema"):
        await apply_migrations(unpreloaded_timescaledb)
    assert "set shared_preload_libraries = 'timescaledb' and restart the server" in caplog.text
    conn = await asyncpg.connect(unpreloaded_timescaledb)
    try:
        assert await database_mode(conn) == "postgresql"
    finally:
        await conn.close()
    assert await tables(unpreloaded_timescaledb) >= CORE_TABLES
