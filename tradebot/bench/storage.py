"""Storage ingest and /history, through the storage engineer's benchmark plus a real HTTP load.

Ingest rows/s and the in-process /history latencies come from ``tradebot.storage.bench``. On the
same generated table, the history API then runs as its own process (uvicorn, as ``tradebot up``
runs it) and a closed-loop load over HTTP on 127.0.0.1 gives requests/s and latency under load.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from tradebot.bench.http_load import closed_loop, wait_until_serving
from tradebot.bench.processes import WorkerPool, worker_environment
from tradebot.bench.report import Figure
from tradebot.bench.target import BenchTarget
from tradebot.common.db import drop_database
from tradebot.common.embedded import free_port
from tradebot.storage import bench as storage_bench

API_START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class StorageSizes:
    """How big the storage part of the run is."""

    table_ticks: int
    ingest_rows: int
    samples: int
    load_seconds: float
    concurrency: int = 8
    symbols: int = 5
    days: int = 1100  # the storage bench needs > 1,000 sessions for 1,000 daily bars


async def measure_storage(target: BenchTarget, workers: WorkerPool, sizes: StorageSizes) -> list[Figure]:
    """Ingest rows/s, /history p50/p99 in process, and requests/s over HTTP on the same table."""
    assert target.settings.database_url
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    results = await storage_bench.bench(
        target.settings,
        ticks=sizes.table_ticks,
        symbols=sizes.symbols,
        days=sizes.days,
        ingest_rows=sizes.ingest_rows,
        samples=sizes.samples,
        keep=True,
    )
    try:
        figures = ingest_figures(results, sizes) + latency_figures(results, sizes)
        figures += await http_figures(target, workers, sizes, results["table_ticks"])
    finally:
        workers.stop_all()
        await drop_database(target.settings.database_url, storage_bench.BENCH_DATABASE)
    return figures


def ingest_figures(results: dict, sizes: StorageSizes) -> list[Figure]:
    """One row per ingest path of the storage bench."""
    methods = {
        "write_events x1": "write_events (COPY into staging + INSERT … ON CONFLICT DO NOTHING, one transaction "
        "per batch of BUS_BATCH_SIZE), one writer",
        "write_events x4": "the same with four concurrent writers taking batches in turn",
        "storage worker x1": "the storage worker in burst mode: ticks pre-published to Redis, read, written and "
        "acked (Redis → PostgreSQL)",
    }
    return [
        Figure(
            "storage",
            f"ingest, {name}",
            rate,
            "rows/s",
            f"{methods.get(name, name)}; {sizes.ingest_rows:,} new ticks",
            {"rows": sizes.ingest_rows},
        )
        for name, rate in results["ingest_rows_per_s"].items()
    ]


def latency_figures(results: dict, sizes: StorageSizes) -> list[Figure]:
    """p50/p99 of the /history cases of the storage bench (sequential, through the ASGI app)."""
    figures = []
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


async def http_figures(target: BenchTarget, workers: WorkerPool, sizes: StorageSizes, table_ticks: int) -> list[Figure]:
    """Requests/s and p50/p99 of 1,000-bar /history requests over HTTP at fixed concurrency."""
    port = free_port()
    workers.start("api", worker_environment(target.bench_settings, api_port=port, log_level="WARNING"))
    base_url = f"http://127.0.0.1:{port}"
    await wait_until_serving(base_url, "/symbols", API_START_TIMEOUT_S)
    result = await closed_loop(
        base_url,
        storage_bench.history_url("1m", sizes.days),
        duration_s=sizes.load_seconds,
        concurrency=sizes.concurrency,
    )
    method = (
        f"the API as its own process (uvicorn, one worker) on 127.0.0.1; {sizes.concurrency} closed-loop "
        f"clients for {result.seconds:.0f} s sending /history/BENCHn?timeframe=1m&limit=1000 with random "
        f"starts; table of {table_ticks:,} ticks; {result.errors} non-200 responses"
    )
    detail = {"requests": result.requests, "errors": result.errors, "concurrency": sizes.concurrency}
    return [
        Figure("history API", "/history 1m over HTTP", result.per_second, "requests/s", method, detail),
        *(
            Figure(
                "history API",
                f"/history 1m over HTTP p{q} under that load",
                result.quantile_ms(q / 100),
                "ms",
                method,
                detail,
            )
            for q in (50, 99)
        ),
    ]
