"""End to end, with every worker a real process: how to run the pipeline, and ticks stored per second."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass

import psutil

from tradebot.bench.pipeline import TableCounter, consumers_ready, reset, stream_time_span, wait_for
from tradebot.bench.processes import BENCH_SYMBOLS, WorkerPool, worker_environment
from tradebot.bench.report import Figure
from tradebot.bench.target import BenchTarget
from tradebot.common.bus import Bus
from tradebot.common.embedded import free_port
from tradebot.common.streams import ORDER_EVENTS, order_streams, signal_streams, tick_streams

CONSUMERS = ("strategy", "execution", "storage")
# The figures are read off the streams after a run, so a group of the bench's own (which never
# reads) holds back retention: streams are trimmed only below what every group still needs.
KEEPER_GROUP = "bench-keeper"
READY_TIMEOUT_S = 60.0
POLL_S = 0.1


@dataclass(frozen=True)
class FeedRun:
    """What the mock feed offers in one run."""

    rate: float  # ticks/s in total
    ticks: int

    @property
    def label(self) -> str:
        return f"{self.rate:,.0f} ticks/s offered"


async def start_pipeline(
    target: BenchTarget, bus: Bus, workers: WorkerPool, *, api: bool, scale: Mapping[str, int] | None = None
) -> dict[str, str]:
    """A clean slate, then every consumer role as a process (``scale``: more of some), ready;
    returns the worker environment."""
    settings = target.bench_settings
    await reset(target, bus)
    partitions = settings.tick_partitions
    for stream in [*tick_streams(partitions), *signal_streams(partitions), *order_streams(partitions), ORDER_EVENTS]:
        await bus.ensure_group(stream, KEEPER_GROUP)
    env = worker_environment(settings, api_port=free_port())
    for role in CONSUMERS + (("api",) if api else ()):
        for _ in range((scale or {}).get(role, 1)):
            workers.start(role, env)
    await wait_for(
        lambda: consumers_ready(bus, settings.tick_partitions), READY_TIMEOUT_S, "the workers to take their partitions"
    )
    return env


def start_feed(workers: WorkerPool, env: dict[str, str], run: FeedRun) -> subprocess.Popen[bytes]:
    """The mock feed at ``run.rate``, stopping by itself after ``run.ticks``."""
    return workers.start(
        "market_data", {**env, "MOCK_TICKS_PER_SECOND": str(run.rate), "MOCK_MAX_TICKS": str(run.ticks)}
    )


class CpuMeter:
    """CPU seconds (user + system) of every process under the bench from :meth:`mark` on, by worker
    role or server (``redis``, ``postgres``: embedded servers are the bench's children too). Sampled
    while the run goes (a process that exits keeps its last sample: the feed stops before the end)."""

    def __init__(self, workers: WorkerPool, bench_pids: frozenset[int] = frozenset()):
        self.workers = workers
        self.bench_pids = bench_pids  # server processes doing the bench's own work: "bench"
        self.latest: dict[int, tuple[str, float]] = {}
        self.at_mark: dict[int, float] = {}

    def sample(self) -> None:
        roles = {process.pid: role for role, process in self.workers.running}
        for child in psutil.Process().children(recursive=True):
            try:
                times = child.cpu_times()
                name = roles.get(child.pid) or ("redis" if "redis" in child.name() else child.name())
                name = "bench" if child.pid in self.bench_pids else name
            except psutil.Error:
                continue  # it exited meanwhile
            self.latest[child.pid] = (name, times.user + times.system)

    def mark(self) -> None:
        self.sample()
        self.at_mark = {pid: seconds for pid, (_, seconds) in self.latest.items()}

    def since_mark(self) -> dict[str, float]:
        """CPU seconds by role or server, busiest first."""
        totals: dict[str, float] = {}
        for pid, (name, seconds) in self.latest.items():
            totals[name] = totals.get(name, 0.0) + seconds - self.at_mark.get(pid, 0.0)
        return dict(sorted(totals.items(), key=lambda item: -item[1]))


async def time_to_store(
    counter: TableCounter, ticks: int, timeout_s: float, meter: CpuMeter | None = None
) -> tuple[float, float]:
    """Seconds from the first tick row appearing to the ``ticks``-th one (polled every 0.1 s);
    ``meter`` is marked at the first row and sampled at every poll."""
    deadline = time.monotonic() + timeout_s
    first = None
    while True:
        stored = await counter.count()
        now = time.monotonic()
        if meter is not None and stored and first is None:
            meter.mark()
        elif meter is not None:
            meter.sample()
        if stored and first is None:
            first = now
        if stored >= ticks:
            return first or now, now
        if now > deadline:
            raise TimeoutError(f"only {stored:,} of {ticks:,} ticks stored after {timeout_s:.0f}s")
        await asyncio.sleep(POLL_S)


async def measure_throughput(
    target: BenchTarget,
    workers: WorkerPool,
    run: FeedRun,
    timeout_s: float = 600.0,
    scale: Mapping[str, int] | None = None,
) -> list[Figure]:
    """Ticks stored per second with every worker running (see the figure's method); ``scale``
    runs more processes of some roles (``{"strategy": 2, "storage": 2}``)."""
    bus = Bus.from_settings(target.bench_settings)
    partitions = target.settings.tick_partitions
    try:
        env = await start_pipeline(target, bus, workers, api=True, scale=scale)
        async with TableCounter(target.database_url) as counter:
            start_feed(workers, env, run)
            meter = CpuMeter(workers, frozenset({await counter.backend_pid()}))
            first, last = await time_to_store(counter, run.ticks, timeout_s, meter)
            cpu = meter.since_mark()
            published, rate = await publish_rate(bus, partitions)
            rows = {table: await counter.count(table) for table in ("signals", "orders", "fills")}
    finally:
        workers.stop_all()
        await bus.close()
    stored_rate = run.ticks / max(last - first, POLL_S)
    scaled = ", ".join(f"{role} ×{n}" for role, n in sorted((scale or {}).items()) if n != 1)
    processes = f"one process each but {scaled}" if scaled else "one process each"
    method = (
        f"mock feed: {run.label} ({run.ticks:,} ticks, {BENCH_SYMBOLS} symbols, {partitions} partitions); "
        f"market_data, strategy, execution, storage, api: {processes}; time from the first to the "
        f"last of the {run.ticks:,} rows appearing in `ticks` (COUNT(*) polled every 0.1 s)"
    )
    feed_method = "ticks published / span of their tick-stream entry ids (Redis server ms), same run"
    suffix = f", {scaled}" if scaled else ""
    cpu_method = (
        f"CPU seconds (user + system, psutil) of the role's processes from the first to the last of the "
        f"{run.ticks:,} rows appearing, same run, per tick stored: what each part costs, so the busiest "
        "is the next limit on 2 cores (redis, postgres: the bench's embedded servers, when it starts them; "
        "bench: the PostgreSQL backend of its COUNT(*) polls)"
    )
    cpu_figures = [
        Figure("end to end", f"CPU per tick stored, {name}{suffix}", seconds / run.ticks * 1e6, "µs", cpu_method)
        for name, seconds in cpu.items()
        if seconds > 0
    ]
    if cpu_figures:
        total = sum(seconds for seconds in cpu.values() if seconds > 0)
        cpu_figures.append(
            Figure("end to end", f"CPU per tick stored, all{suffix}", total / run.ticks * 1e6, "µs", "〃, summed")
        )
    return [
        Figure(
            "end to end",
            f"ticks stored/s, every worker running{suffix}",
            stored_rate,
            "ticks/s",
            method,
            {"ticks": run.ticks, "seconds": last - first, **rows},
        ),
        Figure(
            "end to end",
            f"ticks published/s by the mock feed, same run{suffix}",
            rate,
            "ticks/s",
            feed_method,
            {"published": published},
        ),
        *cpu_figures,
    ]


async def publish_rate(bus: Bus, partitions: int) -> tuple[int, float]:
    """Ticks on the tick streams, and their rate over the span of their entry ids (Redis server ms)."""
    published, first_ms, last_ms = await stream_time_span(bus, tick_streams(partitions))
    return published, published / max((last_ms - first_ms) / 1000, 0.001)
