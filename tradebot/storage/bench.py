"""Storage benchmark: ingest rows/s and /history latency over a large generated tick table.

``python -m tradebot.storage.bench --ticks 10000000`` works in a database of its own
(``tradebot_bench``, dropped afterwards unless ``--keep``) and Redis database 15, on the servers of
REDIS_URL / DATABASE_URL or the embedded ones. It measures:

* ingest through ``write_events`` (COPY + INSERT ... ON CONFLICT, batches of BUS_BATCH_SIZE), with
  one and with four concurrent writers, and through the storage worker (Redis -> PostgreSQL);
* /history latency (p50/p99, through the ASGI app) for 1,000-bar requests at 1m and 1d over the
  generated table, with the rollups (TimescaleDB only) and on the fly.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

import httpx

from tradebot.api.history_service import create_app
from tradebot.common.bus import Bus, connect
from tradebot.common.config import Settings, load_settings
from tradebot.common.db import create_pool, drop_database, recreate_database
from tradebot.common.models import Tick
from tradebot.common.runtime import infrastructure, setup_logging
from tradebot.common.streams import tick_stream_for
from tradebot.storage import timeseries_service
from tradebot.storage.schema import apply_migrations
from tradebot.storage.writer import write_events

log = logging.getLogger(__name__)

BENCH_DATABASE = "tradebot_bench"
BENCH_REDIS_DB = 15
FIRST_DAY = datetime(2021, 1, 4, tzinfo=UTC)
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


def percentile(samples: list[float], fraction: float) -> float:
    """The ``fraction`` quantile (inclusive method), in the samples' unit."""
    return statistics.quantiles(samples, n=100, method="inclusive")[round(fraction * 100) - 1]


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
        return await pool.fetchval("SELECT count(*) FROM ticks")
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


async def _write_batches(pool, batches: list[list[Tick]]) -> None:  # type: ignore[no-untyped-def]
    for chunk in batches:
        await write_events(pool, chunk)


async def worker_rate(settings: Settings, ticks: list[Tick]) -> float:
    """Rows/s through the storage worker: published to Redis first, then drained in burst mode."""
    bus = Bus(connect(settings.redis_url or ""))
    await bus.redis.flushdb()
    for i in range(0, len(ticks), 5000):
        await bus.publish((tick_stream_for(t.symbol, settings.tick_partitions), t) for t in ticks[i : i + 5000])
    counters: Counter = Counter()
    started = time.perf_counter()
    # A short block: in burst mode the last, empty read would otherwise add BUS_BLOCK_MS to the time.
    await timeseries_service.run(
        settings.model_copy(update={"burst": True, "bus_block_ms": 20}), stop=asyncio.Event(), counters=counters
    )
    elapsed = time.perf_counter() - started
    await bus.redis.flushdb()
    await bus.close()
    await _delete_sample_ticks(settings.database_url or "")
    return counters["handled"] / elapsed


async def _delete_sample_ticks(dsn: str) -> None:
    pool = await create_pool(dsn, max_size=1)
    try:
        await pool.execute("DELETE FROM ticks WHERE source = 'bench' AND symbol LIKE 'LIVE%'")
    finally:
        await pool.close()


def history_url(timeframe: str, days: int) -> Callable[[int, random.Random], str]:
    """Request n: /history?limit=1000 of one of the first symbols from a random session."""
    latest_start = max(1, days - (1000 if timeframe == "1d" else 4))

    def url(n: int, rng: random.Random) -> str:
        start = FIRST_DAY + timedelta(days=rng.randrange(latest_start))
        return f"/history/BENCH{n % 3}?timeframe={timeframe}&limit=1000&start={start:%Y-%m-%dT%H:%M:%SZ}"

    return url


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
        if on_the_fly:
            app.state.mode = "postgresql"
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
    settings: Settings, *, ticks: int, symbols: int, days: int, ingest_rows: int, samples: int, keep: bool
) -> dict:
    """Run every measurement; returns the figures (also printed as a table by ``main``)."""
    assert settings.database_url and settings.redis_url
    dsn = await recreate_database(settings.database_url, BENCH_DATABASE)
    redis_url = urlunsplit(urlsplit(settings.redis_url)._replace(path=f"/{BENCH_REDIS_DB}"))
    bench_settings = settings.model_copy(update={"database_url": dsn, "redis_url": redis_url})
    await apply_migrations(dsn)
    live = sample_ticks(ingest_rows)
    results: dict = {
        "ingest_rows_per_s": {
            "write_events x1": await ingest_rate(dsn, live, settings.bus_batch_size, 1),
            "write_events x4": await ingest_rate(dsn, live, settings.bus_batch_size, 4),
            "storage worker x1": await worker_rate(bench_settings, live),
        }
    }
    started = time.perf_counter()
    results["table_ticks"] = await generate_ticks(dsn, ticks, symbols, days)
    results["generate_s"] = time.perf_counter() - started
    app_mode = await _mode(dsn)
    paths = [("rollups", False), ("on the fly", True)] if app_mode == "timescaledb" else [("on the fly", True)]
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
    results["mode"] = app_mode
    if not keep:
        await drop_database(settings.database_url, BENCH_DATABASE)
    return results


async def _mode(dsn: str) -> str:
    from tradebot.storage.timescale import database_mode

    pool = await create_pool(dsn, max_size=1)
    try:
        return await database_mode(pool)
    finally:
        await pool.close()


def render(results: dict) -> str:
    """The figures as a plain-text table."""
    lines = [
        f"storage mode: {results['mode']}; generated {results['table_ticks']:,} ticks in {results['generate_s']:.0f} s",
        "",
        f"{'ingest':<24}{'rows/s':>12}",
    ]
    lines += [f"{name:<24}{rate:>12,.0f}" for name, rate in results["ingest_rows_per_s"].items()]
    lines += ["", f"{'request (limit=1000)':<28}{'items':>6}{'p50 ms':>10}{'p99 ms':>10}"]
    lines += [
        f"{name:<28}{row['items']:>6}{row['p50_ms']:>10.1f}{row['p99_ms']:>10.1f}"
        for name, row in results["latency"].items()
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    """Parse arguments, run on the configured (or embedded) servers, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=10_000_000, help="rows in the generated tick table")
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--days", type=int, default=1100, help="sessions per symbol (1d needs > 1000)")
    parser.add_argument("--ingest", type=int, default=200_000, help="ticks written in the ingest runs")
    parser.add_argument("--samples", type=int, default=30, help="timed requests per case")
    parser.add_argument("--keep", action="store_true", help="keep the tradebot_bench database")
    args = parser.parse_args(argv)
    settings = load_settings()
    setup_logging(settings.log_level)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per timed request otherwise
    with infrastructure(settings) as ready:
        results = asyncio.run(
            bench(
                ready,
                ticks=args.ticks,
                symbols=args.symbols,
                days=args.days,
                ingest_rows=args.ingest,
                samples=args.samples,
                keep=args.keep,
            )
        )
    print(render(results))  # the table is this command's output
    return results


if __name__ == "__main__":
    main()
