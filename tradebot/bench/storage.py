"""The storage section of ``tradebot bench``: ingest rows/s and /history over a large generated table.

``tradebot bench storage [--ticks 10000000]`` works in a database of its own (``tradebot_bench``)
and Redis database 15, on the servers of REDIS_URL / DATABASE_URL or the embedded ones. It measures:

* ingest through ``write_events`` (INSERT ... SELECT of the ticks' JSON rows, batches of BUS_BATCH_SIZE), with
  one and with four concurrent writers, and through the storage worker (Redis -> PostgreSQL);
* /history latency (p50/p99, through the ASGI app) for 1,000-bar requests at 1m and 1d over the
  generated table, from the rollups (TimescaleDB) or the kept series (plain PostgreSQL, kept by the
  ticks' trigger while the table is generated) and on the fly;
* on the same table, the history API as its own process (uvicorn, as ``tradebot up`` runs it)
  under a closed-loop load over HTTP on 127.0.0.1: requests/s and latency under load of random
  windows and of a warm set of already served ones, and the HTTP ceiling of the same process on a
  trivial route, with one and with two uvicorn worker processes (API_WORKERS; bench/history_http.py).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx

from tradebot.api.history_service import create_app
from tradebot.bench.history_http import http_figures
from tradebot.bench.history_table import FIRST_DAY, HISTORY_DATABASE, StorageSizes, history_url
from tradebot.bench.processes import WorkerPool
from tradebot.bench.report import Figure, percentile
from tradebot.bench.target import BENCH_DATABASE, BENCH_REDIS_DB, BenchTarget
from tradebot.common.bus import Bus
from tradebot.common.bus.connection import connect
from tradebot.common.config import ReadySettings, Settings
from tradebot.common.db import create_pool, drop_database, recreate_database, with_database
from tradebot.common.models import Tick
from tradebot.common.streams import tick_stream_for
from tradebot.maintenance.reset import refresh_rollups
from tradebot.storage import timeseries_service
from tradebot.storage.fragments import spell_all
from tradebot.storage.schema import apply_migrations
from tradebot.storage.timescale import TimescaleOptions
from tradebot.storage.writer import write_events

log = logging.getLogger(__name__)

# The generated table holds ~2,000-9,000 ticks a session per symbol, far below the 50,000 the
# production sizing rule assumes: with its 1-day chunks the 1,100 sessions were 1,100 chunks, and
# every /history query planned over them (~20-40 ms) and every new connection loaded their catalog
# entries (~1 s). 30-day chunks (~45 MB each at 10M ticks) are what that rule would pick for this
# density, were 30 days one of its candidates. Plain PostgreSQL ignores the options.
BENCH_TIMESCALE = TimescaleOptions(ticks_chunk_interval="30 days")
SESSION_SECONDS = 390 * 60

# One statement per slice of days: the server generates the rows, nothing crosses the wire.
_GENERATE_SQL = """
INSERT INTO ticks (symbol, ts, id, price, size, source)
SELECT $1, $2::timestamptz + d * INTERVAL '1 day' + INTERVAL '14 hours 30 minutes'
           + (i * $5::float8) * INTERVAL '1 second',
       'bench:' || $1 || ':' || n,
       100 + 10 * sin(n / 5000.0) + (n * 7919 % 1000) / 1000.0,
       1 + n * 104729 % 500,
       'bench'
FROM generate_series($3::int, $6::int - 1) AS d, generate_series(0, $4 - 1) AS i,
     LATERAL (SELECT d::bigint * $4 + i AS n) AS numbered
ORDER BY d, i"""


def table_label(ticks: int, symbols: int, days: int) -> str:
    """What a kept table was generated as (the comment on its database, written once it is complete)."""
    return f"tradebot bench history table: ticks={ticks} symbols={symbols} days={days}"


async def kept_table(server_dsn: str, label: str) -> str | None:
    """The URL of the kept /history table generated as ``label``, if the server holds one."""
    conn = await asyncpg.connect(server_dsn)
    try:
        found = await conn.fetchval(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1", HISTORY_DATABASE
        )
    finally:
        await conn.close()
    return with_database(server_dsn, HISTORY_DATABASE) if found == label else None


async def generate_ticks(dsn: str, total: int, symbols: int, days: int) -> int:
    """Fill ``ticks`` with ``total`` rows: ``symbols`` symbols, each trading through ``days`` sessions."""
    per_day = max(1, total // (symbols * days))
    step_s = SESSION_SECONDS / per_day
    pool = await create_pool(dsn, max_size=2)
    try:
        for s in range(symbols):
            symbol = f"BENCH{s}"
            for first in range(0, days, 100):
                await pool.execute(_GENERATE_SQL, symbol, FIRST_DAY, first, per_day, step_s, min(days, first + 100))
            log.info("generated %s (%d of %d symbols)", symbol, s + 1, symbols)
        await pool.execute("VACUUM (ANALYZE) ticks")
        rows: int = await pool.fetchval("SELECT count(*) FROM ticks")
        return rows
    finally:
        await pool.close()


def sample_ticks(count: int, symbols: int = 20) -> list[Tick]:
    """Live-like ticks for the ingest runs (a different symbol set than the generated table)."""
    start = datetime(2030, 1, 2, 14, 30, tzinfo=UTC)
    return [
        Tick.create(
            f"LIVE{i % symbols}",
            100 + (i % 997) / 100,
            1 + i % 300,
            start + timedelta(milliseconds=7 * i),
            source="bench",
            trade_id=i,
        )
        for i in range(count)
    ]


async def ingest_rate(dsn: str, ticks: list[Tick], batch: int, writers: int) -> float:
    """Rows/s through write_events with ``writers`` concurrent writers taking batches in turn."""
    pool = await create_pool(dsn, max_size=writers)
    batches = [ticks[i : i + batch] for i in range(0, len(ticks), batch)]
    try:
        started = time.perf_counter()
        await asyncio.gather(*(_write_batches(pool, batches[w::writers]) for w in range(writers)))
        elapsed = time.perf_counter() - started
    finally:
        await pool.close()
    await _delete_sample_ticks(dsn)
    return len(ticks) / elapsed


async def _write_batches(pool: asyncpg.Pool, batches: list[list[Tick]]) -> None:
    for chunk in batches:
        await write_events(pool, chunk)


async def worker_rate(settings: ReadySettings, ticks: list[Tick]) -> tuple[float, float]:
    """Rows/s through the storage worker (published to Redis first, then drained in burst mode),
    and the worker's CPU time per row in µs (this process's: the worker runs in it)."""
    bus = Bus(connect(settings.redis_url, cluster=settings.redis_cluster))
    await bus.redis.flushdb()
    for i in range(0, len(ticks), 5000):
        await bus.publish((tick_stream_for(t.symbol, settings.tick_partitions), t) for t in ticks[i : i + 5000])
    counters: Counter[str] = Counter()
    started, cpu_started = time.perf_counter(), time.process_time()
    # A short block: in burst mode the last, empty read would otherwise add BUS_BLOCK_MS to the time.
    await timeseries_service.run(
        settings.model_copy(update={"burst": True, "bus_block_ms": 20}), stop=asyncio.Event(), counters=counters
    )
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    await bus.redis.flushdb()
    await bus.close()
    await _delete_sample_ticks(settings.database_url)
    handled = max(1, counters["handled"])
    return handled / elapsed, 1e6 * cpu / handled


async def _delete_sample_ticks(dsn: str) -> None:
    pool = await create_pool(dsn, max_size=1)
    try:
        await pool.execute("DELETE FROM ticks WHERE source = 'bench' AND symbol LIKE 'LIVE%'")
    finally:
        await pool.close()


async def latency(
    settings: Settings, url: Callable[[int, random.Random], str], samples: int, on_the_fly: bool
) -> dict[str, float]:
    """p50/p99 (ms) of ``samples`` requests through the ASGI app (after two warm-up requests)."""
    app = create_app(settings)
    rng = random.Random(7)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench", timeout=600) as client,
    ):
        if on_the_fly:  # neither the rollups nor the kept series: every request aggregates the ticks
            app.state.mode = "ticks"
        timings = []
        for n in range(samples + 2):
            began = time.perf_counter()
            response = await client.get(url(n, rng))
            response.raise_for_status()
            if n >= 2:
                timings.append((time.perf_counter() - began) * 1000)
    return {
        "p50_ms": percentile(timings, 0.5),
        "p99_ms": percentile(timings, 0.99),
        "items": response.json().get("count", response.json().get("days", 0)),
    }


async def bench(
    settings: Settings,
    *,
    ticks: int,
    symbols: int,
    days: int,
    ingest_rows: int,
    samples: int,
    keep: bool,
    keep_table: bool = False,
) -> dict[str, Any]:
    """Run every in-process measurement; returns the raw figures (``history_dsn``: the database of
    the /history table, BENCH_DATABASE's or with ``keep_table`` HISTORY_DATABASE's)."""
    assert settings.database_url
    assert settings.redis_url
    dsn = await recreate_database(settings.database_url, BENCH_DATABASE)
    redis_url = urlunsplit(urlsplit(settings.redis_url)._replace(path=f"/{BENCH_REDIS_DB}"))
    bench_settings = ReadySettings.resolved(settings, redis_url=redis_url, database_url=dsn)
    await apply_migrations(dsn, options=BENCH_TIMESCALE)
    live = sample_ticks(ingest_rows)
    writer_x1 = await ingest_rate(dsn, live, settings.bus_batch_size, 1)
    writer_x4 = await ingest_rate(dsn, live, settings.bus_batch_size, 4)
    worker, worker_cpu_us = await worker_rate(bench_settings, live)
    results: dict[str, Any] = {
        "ingest_rows_per_s": {"write_events x1": writer_x1, "write_events x4": writer_x4, "storage worker x1": worker},
        "storage_worker_cpu_us_per_row": worker_cpu_us,
    }
    if keep_table:
        dsn = await _history_table(settings.database_url, ticks, symbols, days, results)
        bench_settings = ReadySettings.resolved(settings, redis_url=redis_url, database_url=dsn)
    else:
        await _generate(dsn, ticks, symbols, days, results)
    results["history_dsn"] = dsn
    app_mode = results["mode"] = await _mode(dsn)
    prepared = "rollups" if app_mode == "timescaledb" else "kept series"
    paths = [(prepared, False), ("on the fly", True)]
    results["latency"] = {
        f"/history {timeframe} {label}": await latency(bench_settings, history_url(timeframe, days), samples, fly)
        for timeframe in ("1m", "1d")
        for label, fly in paths
    }
    results["latency"]["/stats (whole history)"] = await latency(
        bench_settings, lambda n, rng: f"/stats/BENCH{n % 3}", max(3, samples // 5), False
    )
    results["latency"]["/symbols"] = await latency(
        bench_settings, lambda n, rng: "/symbols", max(3, samples // 5), False
    )
    if not keep:
        await drop_database(settings.database_url, BENCH_DATABASE)
    return results


async def _generate(dsn: str, ticks: int, symbols: int, days: int, results: dict[str, Any]) -> None:
    """Generate the /history table in ``dsn`` (and materialize the rollups); its times into ``results``."""
    started = time.perf_counter()
    results["table_ticks"] = await generate_ticks(dsn, ticks, symbols, days)
    if await _mode(dsn) == "timescaledb":  # materialize the rollups, as their refresh policies would
        refresh_started = time.perf_counter()
        log.info("refreshing the continuous aggregates over all time (one batch per level)")
        await _refresh_rollups(dsn)
        results["refresh_s"] = time.perf_counter() - refresh_started
        log.info("continuous aggregates refreshed in %.0f s", results["refresh_s"])
    else:
        await _spell_minutes(dsn, results)
    results["generate_s"] = time.perf_counter() - started


async def _spell_minutes(dsn: str, results: dict[str, Any]) -> None:
    """Spell the kept minutes' JSON, as the storage worker does as they close (storage/fragments.py)."""
    started = time.perf_counter()
    conn = await asyncpg.connect(dsn)
    try:
        spelled = await spell_all(conn)
        if spelled:
            await conn.execute("VACUUM (ANALYZE) ohlcv_kept_1m")  # each spelled minute left a dead version
    finally:
        await conn.close()
    results["spell_s"] = time.perf_counter() - started
    log.info("%d kept minutes spelled in %.0f s", spelled, results["spell_s"])


async def _history_table(server_dsn: str, ticks: int, symbols: int, days: int, results: dict[str, Any]) -> str:
    """The kept /history table of this size (HISTORY_DATABASE), generated first if the server has
    none: a 10M-tick table takes minutes, the runs of an A/B pair can share it. The database's
    comment, written only once the table is complete, says what it holds; any other is replaced."""
    label = table_label(ticks, symbols, days)
    dsn = await kept_table(server_dsn, label)
    if dsn is not None:
        log.info("reusing the kept /history table in %s (%s)", HISTORY_DATABASE, label)
        await apply_migrations(dsn, options=BENCH_TIMESCALE)  # this code's schema on the kept rows
        if await _mode(dsn) == "postgresql":  # minutes an older schema kept without their JSON
            await _spell_minutes(dsn, results)
        results["table_ticks"] = await _count_ticks(dsn)
        results["reused"] = True
        return dsn
    dsn = await recreate_database(server_dsn, HISTORY_DATABASE)
    await apply_migrations(dsn, options=BENCH_TIMESCALE)
    await _generate(dsn, ticks, symbols, days, results)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"COMMENT ON DATABASE {HISTORY_DATABASE} IS '{label}'")
    finally:
        await conn.close()
    return dsn


async def _count_ticks(dsn: str) -> int:
    pool = await create_pool(dsn, max_size=1)
    try:
        rows: int = await pool.fetchval("SELECT count(*) FROM ticks")
        return rows
    finally:
        await pool.close()


async def _refresh_rollups(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await refresh_rollups(conn)
    finally:
        await conn.close()


async def _mode(dsn: str) -> str:
    from tradebot.storage.timescale import database_mode

    pool = await create_pool(dsn, max_size=1)
    try:
        return await database_mode(pool)
    finally:
        await pool.close()


async def measure_storage(target: BenchTarget, workers: WorkerPool, sizes: StorageSizes) -> list[Figure]:
    """Ingest rows/s, /history p50/p99 in process, and requests/s over HTTP on the same table."""
    assert target.settings.database_url
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    results = await bench(
        target.settings,
        ticks=sizes.table_ticks,
        symbols=sizes.symbols,
        days=sizes.days,
        ingest_rows=sizes.ingest_rows,
        samples=sizes.samples,
        keep=True,
        keep_table=sizes.keep_table,
    )
    try:
        figures = ingest_figures(results, sizes) + latency_figures(results, sizes)
        on_table = replace(target, database_url=results["history_dsn"])
        figures += await http_figures(on_table, workers, sizes, results["table_ticks"])
    finally:
        workers.stop_all()
        await drop_database(target.settings.database_url, BENCH_DATABASE)
    return figures


def ingest_figures(results: dict[str, Any], sizes: StorageSizes) -> list[Figure]:
    """One row per ingest path of the storage bench."""
    methods = {
        "write_events x1": "write_events (one INSERT … SELECT of the ticks as one JSON document of rows, as new, "
        "with the symbol_sources note in the same statement, per batch of BUS_BATCH_SIZE), one writer",
        "write_events x4": "the same with four concurrent writers taking batches in turn",
        "storage worker x1": "the storage worker in burst mode: ticks pre-published to Redis, read, written and "
        "acked (Redis → PostgreSQL)",
    }
    rates = results["ingest_rows_per_s"]
    figures = [
        Figure(
            "storage",
            f"ingest, {name}",
            rate,
            "rows/s",
            f"{methods.get(name, name)}; {sizes.ingest_rows:,} new ticks",
            {"rows": sizes.ingest_rows},
        )
        for name, rate in rates.items()
    ]
    worker, writer = rates.get("storage worker x1"), rates.get("write_events x1")
    if worker and writer:
        share = "the storage worker's rate as a share of one bare writer's, same run (goal: ≥ 80 %)"
        figures.append(Figure("storage", "ingest, storage worker / writer alone", 100 * worker / writer, "%", share))
    if results.get("storage_worker_cpu_us_per_row") is not None:
        cpu = "CPU time (process_time) of the storage worker's run above per row: read, decode, write, commit"
        figures.append(
            Figure("storage", "ingest, storage worker CPU per row", results["storage_worker_cpu_us_per_row"], "µs", cpu)
        )
    return figures


def latency_figures(results: dict[str, Any], sizes: StorageSizes) -> list[Figure]:
    """p50/p99 of the /history cases of the storage bench (sequential, through the ASGI app), after
    the time the table took to generate."""
    load = (
        f"{results['table_ticks']:,} ticks generated by the server in INSERT … SELECT statements of 100 sessions "
        f"per symbol, then VACUUM ANALYZE; storage mode {results['mode']}"
        + (", ticks in 30-day chunks" if results["mode"] == "timescaledb" else "")
        + (
            " (the kept series' trigger adds every statement's ticks), then the kept minutes' JSON spelled "
            f"as the storage worker does ({results.get('spell_s', 0):.0f} s of it)"
            if results["mode"] == "postgresql"
            else ", then every continuous aggregate refreshed over all time in one batch per level "
            f"({results.get('refresh_s', 0):.0f} s of it)"
        )
    )
    if results.get("reused"):
        load = f"not measured: the table kept by an earlier run (--keep-table) was reused; {load}"
    table = {"ticks": results["table_ticks"]}
    figures = [Figure("storage", "table load", results.get("generate_s"), "s", load, table)]
    for name, row in results["latency"].items():
        if not name.startswith("/history"):
            continue
        method = (
            f"{sizes.samples} sequential requests (limit=1000, random start) in process through the ASGI "
            f"app, table of {results['table_ticks']:,} ticks; storage mode {results['mode']}; "
            f"last response had {row['items']} bars"
        )
        figures += [Figure("history API", f"{name} p{q}", row[f"p{q}_ms"], "ms", method, dict(row)) for q in (50, 99)]
    return figures
