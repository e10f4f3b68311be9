"""The history API over HTTP in the storage bench: uvicorn as ``tradebot up`` runs it, under a
closed-loop load on 127.0.0.1, with the client's own ceiling measured against the same process."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass

import httpx

from tradebot.api.history_cache import CACHE_HEADER
from tradebot.bench.history_table import WARM_WINDOWS, StorageSizes, history_url, warm_urls
from tradebot.bench.http_load import LoadResult, UrlMaker, closed_loop, wait_until_serving
from tradebot.bench.processes import WorkerPool, worker_environment
from tradebot.bench.report import Figure
from tradebot.bench.target import BenchTarget
from tradebot.common.embedded import free_port

API_START_TIMEOUT_S = 60.0
# The API worker counts of the HTTP runs.
HTTP_API_WORKERS = (1, 2)
# A route that touches neither the database nor the cache: what the client alone can drive.
CEILING_PATH = "/udf/time"


async def http_figures(target: BenchTarget, workers: WorkerPool, sizes: StorageSizes, table_ticks: int) -> list[Figure]:
    """Requests/s and p50/p99 of 1,000-bar /history requests over HTTP at fixed concurrency, with
    each API worker count of HTTP_API_WORKERS: random windows, a warm set of already served
    windows, and the client's ceiling on a trivial route of the same API process."""
    figures = []
    for api_workers in HTTP_API_WORKERS:
        figures += await _http_run(target, workers, sizes, table_ticks, api_workers)
    return figures


@dataclass(frozen=True)
class HttpRuns:
    """The loads of one API process: random windows, warm windows, the trivial route (with the
    bench's raw client), and the trivial route with httpx (the client of earlier rounds)."""

    cold: LoadResult
    warm: LoadResult
    ceiling: LoadResult
    ceiling_httpx: LoadResult


async def _http_loads(base_url: str, sizes: StorageSizes) -> HttpRuns:
    def load(make_url: UrlMaker, client: str = "raw") -> Awaitable[LoadResult]:
        return closed_loop(
            base_url,
            make_url,
            duration_s=sizes.load_seconds,
            concurrency=sizes.concurrency,
            count_header=CACHE_HEADER,
            client=client,
        )

    cold = await load(history_url("1m", sizes.days))
    warm = warm_urls("1m", sizes.days)
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        for url in warm:  # served once each before the run: kept by whichever API worker answered
            (await client.get(url)).raise_for_status()
    warm_run = await load(lambda n, rng: warm[rng.randrange(len(warm))])
    ceiling = await load(lambda n, rng: CEILING_PATH)
    return HttpRuns(cold, warm_run, ceiling, await load(lambda n, rng: CEILING_PATH, "httpx"))


async def _http_run(
    target: BenchTarget, workers: WorkerPool, sizes: StorageSizes, table_ticks: int, api_workers: int
) -> list[Figure]:
    port = free_port()
    env = worker_environment(target.bench_settings, api_port=port, api_workers=api_workers, log_level="WARNING")
    workers.start("api", env)
    base_url = f"http://127.0.0.1:{port}"
    try:
        # One bar, not /symbols: that counts every tick (seconds at 10M ticks, past the poll's timeout).
        await wait_until_serving(base_url, "/history/BENCH0?timeframe=1d&limit=1", API_START_TIMEOUT_S)
        runs = await _http_loads(base_url, sizes)
    finally:
        workers.stop_all()  # the API is the only worker of this section
    return http_run_figures(runs, sizes, table_ticks, api_workers)


def _client_cost(result: LoadResult) -> str:
    return f"the client process used {100 * result.client_cpu_share:.0f} % of a core"


def http_run_figures(runs: HttpRuns, sizes: StorageSizes, table_ticks: int, api_workers: int) -> list[Figure]:
    """The figures of one API process's loads."""
    suffix = "" if api_workers == 1 else f", API_WORKERS={api_workers}"
    setup = (
        f"the API as its own process (uvicorn, {api_workers} worker process{'es' if api_workers > 1 else ''}) on "
        f"127.0.0.1; {sizes.concurrency} closed-loop clients in the bench process, each on a keep-alive "
        f"connection of its own (asyncio streams, responses parsed by httptools) for {runs.cold.seconds:.0f} s; "
        f"table of {table_ticks:,} ticks"
    )
    cold = (
        f"{setup}; /history/BENCHn?timeframe=1m&limit=1000 with random starts; "
        f"{100 * runs.cold.share_of('hit'):.1f} % cache hits; {runs.cold.errors} non-200 responses; "
        f"{_client_cost(runs.cold)}"
    )
    warm = (
        f"{setup}; the same requests over {WARM_WINDOWS} fixed windows (they fit the default HISTORY_CACHE_MB), "
        f"each served once before the run; {100 * runs.warm.share_of('hit'):.1f} % cache hits (x-history-cache); "
        f"{runs.warm.errors} non-200 responses; {_client_cost(runs.warm)}"
    )
    ceiling = (
        f"{setup}; GET {CEILING_PATH} (no database, no cache: a few bytes), the same client and concurrency "
        f"against the same API process right after the /history runs; {_client_cost(runs.ceiling)}"
    )
    httpx_ceiling = (
        f"the same as the ceiling above with the client of earlier rounds: one httpx.AsyncClient with "
        f"{sizes.concurrency} connections; {_client_cost(runs.ceiling_httpx)}"
    )
    name = f"/history 1m over HTTP{suffix}"
    figures = [
        *_load_figures(name, runs.cold, cold, sizes),
        *_load_figures(f"{name}, warm cache", runs.warm, warm, sizes),
        Figure("history API", f"HTTP ceiling{suffix} ({CEILING_PATH})", runs.ceiling.per_second, "requests/s", ceiling),
        Figure(
            "history API",
            f"HTTP ceiling{suffix} ({CEILING_PATH}), httpx client",
            runs.ceiling_httpx.per_second,
            "requests/s",
            httpx_ceiling,
        ),
    ]
    for label, result in (("", runs.cold), (", warm cache", runs.warm)):
        share = f"{name}{label} requests/s as a share of the HTTP ceiling ({CEILING_PATH}), same API process, same run"
        figures.append(
            Figure(
                "history API",
                f"{name}{label} / HTTP ceiling",
                100 * result.per_second / runs.ceiling.per_second,
                "%",
                share,
            )
        )
    return figures


def _load_figures(name: str, result: LoadResult, method: str, sizes: StorageSizes) -> list[Figure]:
    detail = {
        "requests": result.requests,
        "errors": result.errors,
        "concurrency": sizes.concurrency,
        "cache": dict(result.header_values),
        "client_cpu_share": round(result.client_cpu_share, 3),
    }
    return [
        Figure("history API", name, result.per_second, "requests/s", method, detail),
        *(
            Figure("history API", f"{name} p{q} under that load", result.quantile_ms(q / 100), "ms", method, detail)
            for q in (50, 99)
        ),
    ]
