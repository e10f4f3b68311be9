"""``tradebot bench``: every figure of docs/BENCHMARKS.md in one bounded run, as a table and JSON.

Sections run in order — bus, strategy, risk (cost of a pre-trade check), backtest (ticks/s and
bars/s per core), e2e (ticks stored/s with every worker running), latency (tick → order at fixed
offered rates), storage (ingest rows/s, /history), ui (WebSocket fan-out, dashboard paint) — then the
peak RSS of every worker process the run started. A section that fails is reported as such and the
others still run. Default sizes finish in about four minutes on 2 cores, ``--quick`` in under one.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from tradebot.bench.backtest import measure_backtest
from tradebot.bench.bus import measure_bus
from tradebot.bench.ceilings import ceiling_figures, measure_ceilings, with_ceilings
from tradebot.bench.e2e import FeedRun, measure_throughput
from tradebot.bench.history_table import HISTORY_DATABASE, StorageSizes
from tradebot.bench.latency import measure_latency
from tradebot.bench.processes import WorkerPool, worker_pool
from tradebot.bench.report import Figure, Report, print_report
from tradebot.bench.risk import measure_risk
from tradebot.bench.storage import measure_storage
from tradebot.bench.strategy import measure_strategy
from tradebot.bench.target import (
    BenchTarget,
    BenchTargetError,
    bench_target,
    clear_bench_redis,
)
from tradebot.common.config import Settings
from tradebot.common.runtime import bootstrap, setup_logging

log = logging.getLogger("tradebot.bench")

SECTIONS = ("bus", "strategy", "risk", "backtest", "e2e", "latency", "storage", "ui")
SCALED_E2E = {"strategy": 2, "storage": 2}  # the second e2e run: `--scale strategy=2 --scale storage=2`
BOUNDED_SECTIONS = {"bus", "e2e", "storage"}  # sections with figures a ceiling bounds
MiB = 2**20


@dataclass(frozen=True)
class BenchSizes:
    """How much work each section does (bounded: every section ends on its own)."""

    bus_messages: int
    strategy_ticks: int
    backtest_ticks: int
    backtest_bars: int
    e2e_ticks: int
    e2e_offered_rate: float
    latency_rates: tuple[float, ...]
    latency_seconds: float
    storage: StorageSizes
    risk_orders: int = 20_000


DEFAULT_SIZES = BenchSizes(
    bus_messages=100_000,
    strategy_ticks=100_000,
    backtest_ticks=200_000,
    backtest_bars=50_000,
    e2e_ticks=200_000,
    e2e_offered_rate=50_000,
    latency_rates=(1_000, 5_000, 20_000),
    latency_seconds=20,
    storage=StorageSizes(table_ticks=2_000_000, ingest_rows=200_000, samples=30, load_seconds=10),
)
QUICK_SIZES = BenchSizes(
    bus_messages=20_000,
    strategy_ticks=20_000,
    backtest_ticks=20_000,
    backtest_bars=5_000,
    e2e_ticks=30_000,
    e2e_offered_rate=50_000,
    latency_rates=(1_000, 5_000, 20_000),
    latency_seconds=3,
    storage=StorageSizes(table_ticks=200_000, ingest_rows=20_000, samples=10, load_seconds=3),
    risk_orders=5_000,
)

Step = Callable[[BenchTarget, WorkerPool, BenchSizes], Awaitable[list[Figure]]]


async def _bus(target: BenchTarget, _workers: WorkerPool, sizes: BenchSizes) -> list[Figure]:
    return await measure_bus(target.redis_url, sizes.bus_messages)


async def _strategy(target: BenchTarget, _workers: WorkerPool, sizes: BenchSizes) -> list[Figure]:
    s = target.settings
    return measure_strategy(
        sizes.strategy_ticks, s.short_window, s.long_window, s.bus_batch_size, s.strategy_snapshot_entries
    )


async def _risk(target: BenchTarget, _workers: WorkerPool, sizes: BenchSizes) -> list[Figure]:
    return measure_risk(sizes.risk_orders, target.settings)


async def _backtest(_target: BenchTarget, _workers: WorkerPool, sizes: BenchSizes) -> list[Figure]:
    return measure_backtest(sizes.backtest_ticks, sizes.backtest_bars)


async def _e2e(target: BenchTarget, workers: WorkerPool, sizes: BenchSizes) -> list[Figure]:
    run = FeedRun(sizes.e2e_offered_rate, sizes.e2e_ticks)
    figures = await measure_throughput(target, workers, run)
    return figures + await measure_throughput(target, workers, run, scale=SCALED_E2E)


async def _latency(target: BenchTarget, workers: WorkerPool, sizes: BenchSizes) -> list[Figure]:
    figures = []
    for rate in sizes.latency_rates:
        figures += await measure_latency(target, workers, FeedRun(rate, round(rate * sizes.latency_seconds)))
    return figures


async def _storage(target: BenchTarget, workers: WorkerPool, sizes: BenchSizes) -> list[Figure]:
    return await measure_storage(target, workers, sizes.storage)


async def _ui(target: BenchTarget, workers: WorkerPool, sizes: BenchSizes) -> list[Figure]:
    from tradebot.bench.ui import measure_ui  # imports the dashboard's optional parts only when run

    return await measure_ui(target, workers, FeedRun(sizes.e2e_offered_rate, sizes.e2e_ticks))


STEPS: dict[str, Step] = {
    "bus": _bus,
    "strategy": _strategy,
    "risk": _risk,
    "backtest": _backtest,
    "e2e": _e2e,
    "latency": _latency,
    "storage": _storage,
    "ui": _ui,
}


def memory_figures(workers: WorkerPool) -> list[Figure]:
    """Peak RSS per role over every worker process the run started."""
    method = (
        "psutil RSS of each worker process sampled every 0.25 s over the whole run "
        "(e2e, latency and HTTP-load runs); the maximum over the processes of the role"
    )
    return [
        Figure("memory", f"peak RSS, {role}", rss / MiB, "MiB", method, {"bytes": rss})
        for role, rss in sorted(workers.peak_rss.items())
    ]


async def run_sections(
    target: BenchTarget, workers: WorkerPool, sizes: BenchSizes, sections: list[str], report: Report, console: Console
) -> None:
    """Run each section in turn; a failed one becomes an n/a row with the error.

    Right before a section with figures a ceiling bounds, the ceilings of the same servers are
    measured (tradebot/bench/ceilings.py); each such figure then says what share of them it reached.
    """
    for name in sections:
        began = time.monotonic()
        console.print(f"[bold]bench[/bold] {name} …")
        try:
            ceilings = None
            if name in BOUNDED_SECTIONS:  # as many entries and rows as the bus and storage sections use
                ceilings = await measure_ceilings(target, min(20_000, sizes.bus_messages), sizes.storage.ingest_rows)
            figures = await STEPS[name](target, workers, sizes)
            if ceilings is not None and figures:
                figures = ceiling_figures(ceilings, figures[0].section) + with_ceilings(figures, ceilings)
            report.add(*figures)
        except Exception as error:
            log.exception("bench section %s failed", name)
            report.add(Figure(name, "section failed", None, "", f"{type(error).__name__}: {error}"))
        finally:
            workers.stop_all()
        report.meta.setdefault("section_seconds", {})[name] = round(time.monotonic() - began, 1)
    await clear_bench_redis(target)


def run_bench(
    settings: Settings,
    *,
    quick: bool = False,
    out: Path = Path("bench-results.json"),
    sections: list[str] | None = None,
    table_ticks: int | None = None,
    keep_table: bool = False,
    sizes: BenchSizes | None = None,
    console: Console | None = None,
) -> Report:
    """Run the benchmark on the bench servers (see ``tradebot.bench.target``); print and write it.

    ``sizes`` overrides the default (or ``quick``) sizes, e.g. tiny ones for a smoke test;
    ``keep_table`` keeps the storage section's /history table for the next run of the same size.
    """
    console = console or Console()
    sizes = sizes or (QUICK_SIZES if quick else DEFAULT_SIZES)
    if table_ticks:
        sizes = replace(sizes, storage=replace(sizes.storage, table_ticks=table_ticks))
    if keep_table:
        sizes = replace(sizes, storage=replace(sizes.storage, keep_table=True))
    chosen = [name for name in SECTIONS if not sections or name in sections]
    report = Report(
        meta={
            "command": " ".join(["tradebot bench", *sys.argv[1:]]),
            "quick": quick,
            "sizes": asdict(sizes),
            "sections": chosen,
            "settings": {"tick_partitions": settings.tick_partitions, "bus_batch_size": settings.bus_batch_size},
        }
    )
    began = time.monotonic()
    with bench_target(settings) as target, worker_pool(settings.data_dir / "bench-logs") as workers:
        report.meta["servers"] = "given URLs" if settings.redis_url else "embedded, started for the bench"
        asyncio.run(run_sections(target, workers, sizes, chosen, report, console))
    report.add(*memory_figures(workers))
    report.meta["duration_s"] = round(time.monotonic() - began, 1)
    print_report(report)
    report.write(out)
    console.print(
        f"{len(report.figures)} figures in {report.meta['duration_s']:.0f} s; JSON written to {out}; "
        f"worker logs in {settings.data_dir / 'bench-logs'}"
    )
    return report


def bench_command(
    sections: Annotated[list[str] | None, typer.Argument(help=f"run only these: {', '.join(SECTIONS)}")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="small sizes: under a minute")] = False,
    out: Annotated[Path, typer.Option(help="where to write the JSON results")] = Path("bench-results.json"),
    ticks: Annotated[int | None, typer.Option(help="rows in the /history table (default 2M; e.g. 10000000)")] = None,
    keep_table: Annotated[
        bool,
        typer.Option(
            "--keep-table",
            help=f"keep the /history table (database {HISTORY_DATABASE}) and reuse it in the next run "
            "of the same size instead of generating it again",
        ),
    ] = False,
) -> None:
    """Measure bus, strategy, end-to-end, latency, storage and /history figures; print a table, write JSON."""
    unknown = [name for name in sections or [] if name not in SECTIONS]
    if unknown:
        raise typer.BadParameter(f"unknown section(s) {', '.join(unknown)}; choose from: {', '.join(SECTIONS)}")
    with bootstrap(log_level="WARNING") as settings:  # the servers are the bench target's
        if settings.log_level != "INFO":
            setup_logging(settings.log_level)
        try:
            run_bench(settings, quick=quick, out=out, sections=sections, table_ticks=ticks, keep_table=keep_table)
        except BenchTargetError as error:
            raise SystemExit(f"tradebot bench: {error}") from None


app = typer.Typer(help="tradebot benchmarks", add_completion=False, pretty_exceptions_enable=False)
app.command(name="bench")(bench_command)
