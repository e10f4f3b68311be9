"""Tick → order latency at a fixed offered rate, with the whole pipeline running as processes.

Method: the mock feed stamps each tick with the wall clock when it generates it; an order carries
its signal's timestamp, which is its tick's; every stream entry id holds the Redis server time (ms)
of its XADD. On one machine both clocks are the same, so for each order:

* tick → order = order entry ms − tick timestamp: from the tick's creation to its order on the bus,
  including the feed's batching (a batch's first tick waits while the rest are generated);
* on the bus = order entry ms − tick entry ms: from the tick on its stream to the order on
  ``orders.new`` (strategy read, decode, apply, atomic commit), as a live feed would see it;
* tick → decision = order event entry ms − tick timestamp: through the execution role's risk stage
  and paper broker to the order's event (filled, rejected or denied) on ``orders.events``.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

import psutil

from tradebot.bench.e2e import FeedRun, publish_rate, start_feed, start_pipeline
from tradebot.bench.pipeline import BenchTimeoutError, pipeline_backlog, strategy_backlog, wait_for
from tradebot.bench.processes import BENCH_SYMBOLS, WorkerPool
from tradebot.bench.report import Figure, percentile
from tradebot.bench.target import BenchTarget
from tradebot.common.bus import Bus
from tradebot.common.bus.wire import decode, decode_all, entry_ms
from tradebot.common.models import Order, OrderEvent, Signal
from tradebot.common.streams import EXECUTION_ROLE, ORDER_EVENTS, order_streams, signal_streams, tick_streams

SECTION = "tick → order latency"
DRAIN_TIMEOUT_S = 20.0
OFFERED_REACHED = 0.95  # an achieved rate this close to the offered one counts as reached
PAGE = 10_000


async def entries(bus: Bus, stream: str) -> AsyncIterator[tuple[str, dict[str, str]]]:
    """Every entry of a stream, read in pages (a 20 s run at 20k ticks/s is 400,000 entries)."""
    start = "-"
    while True:
        page = await bus.redis.xrange(stream, min=start, count=PAGE)
        for entry in page:
            yield entry
        if len(page) < PAGE:
            return
        start = "(" + page[-1][0]


async def order_latencies_ms(bus: Bus, partitions: int) -> tuple[list[float], list[float]]:
    """(tick → order, on the bus) latency of every order on ``orders.new``; see the module docstring."""
    tick_of_signal = {}
    for stream in signal_streams(partitions):
        async for _, fields in entries(bus, stream):
            signal = decode(fields)
            assert isinstance(signal, Signal)
            tick_of_signal[signal.id] = signal.tick_id
    wanted = set(tick_of_signal.values())
    tick_added_ms = {}
    for stream in tick_streams(partitions):
        async for entry_id, fields in entries(bus, stream):
            for tick in decode_all(fields):  # a tick-batch entry's ticks were all added with it
                if tick.id in wanted:
                    tick_added_ms[tick.id] = entry_ms(entry_id)
    total: list[float] = []
    on_bus: list[float] = []
    for stream in order_streams(partitions):
        async for entry_id, fields in entries(bus, stream):
            order = decode(fields)
            assert isinstance(order, Order)
            total.append(entry_ms(entry_id) - order.timestamp.timestamp() * 1000)
            on_bus.append(entry_ms(entry_id) - tick_added_ms[tick_of_signal[order.signal_id]])
    return total, on_bus


async def decision_latencies_ms(bus: Bus) -> list[float]:
    """Tick → order event (risk stage and broker included) of every event on ``orders.events``."""
    latencies = []
    async for entry_id, fields in entries(bus, ORDER_EVENTS):
        event = decode(fields)
        assert isinstance(event, OrderEvent)
        latencies.append(entry_ms(entry_id) - event.timestamp.timestamp() * 1000)
    return latencies


async def measure_latency(target: BenchTarget, workers: WorkerPool, run: FeedRun) -> list[Figure]:
    """Tick → order latency p50/p95/p99 at one offered rate, with the rate achieved and the backlog."""
    bus = Bus.from_settings(target.bench_settings)
    partitions = target.settings.tick_partitions
    try:
        env = await start_pipeline(target, bus, workers, api=False)
        cpu_before, calls_before = cpu_seconds(workers), await redis_calls(bus)
        feed = start_feed(workers, env, run)
        await wait_for(_exited(feed), run.ticks / run.rate * 4 + 30, "the mock feed to publish its ticks")
        left_at_end = await pipeline_backlog(bus, partitions)
        drained = await _drained(bus, partitions)
        decided = await _decisions_drained(bus, partitions)
        cpu_after, calls_after = cpu_seconds(workers), await redis_calls(bus)
        _, achieved = await publish_rate(bus, partitions)
        total, on_bus = await order_latencies_ms(bus, partitions)
        decisions = await decision_latencies_ms(bus)
    finally:
        workers.stop_all()
        await bus.close()
    figures = rate_figure(run, achieved, left_at_end, drained) + latency_figures(run, total, on_bus)
    figures += decision_figures(run, decisions, decided)
    return figures + cost_figures(run, cpu_after - cpu_before, calls_after - calls_before)


CPU_ROLES = ("strategy", "execution")
COUNTED_CALLS = ("evalsha", "xread")  # the scripts (reads, commits, snapshots) and plain reads


def cpu_seconds(workers: WorkerPool) -> Counter[str]:
    """User + system CPU seconds used so far by the workers of CPU_ROLES, per role."""
    used: Counter[str] = Counter()
    for role, process in list(workers.running):
        if role in CPU_ROLES and process.poll() is None:
            try:
                times = psutil.Process(process.pid).cpu_times()
            except psutil.Error:
                continue
            used[role] += times.user + times.system
    return used


async def redis_calls(bus: Bus) -> Counter[str]:
    """Calls of COUNTED_CALLS so far (INFO commandstats; a script's own commands are counted too)."""
    stats = await bus.redis.info("commandstats")
    return Counter({name: stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in COUNTED_CALLS})


def cost_figures(run: FeedRun, cpu: Counter[str], calls: Counter[str]) -> list[Figure]:
    """CPU and Redis calls per 1,000 ticks: what the percentiles swing with (load) hardly moves these."""
    per = 1000 / run.ticks
    method = (
        f"from the feed's start until strategy and execution drained, {run.ticks:,} ticks at {run.label}: "
        "CPU seconds of the worker process (psutil user + system)"
    )
    figures = [
        Figure(SECTION, f"{role} CPU per 1,000 ticks at {run.label}", cpu[role] * per * 1000, "ms", method)
        for role in CPU_ROLES
    ]
    method = (
        "the same span: calls of EVALSHA (fenced reads, commits, snapshots) and XREAD (waits; a read "
        "script's XREAD counts too) in Redis's INFO commandstats, every client"
    )
    detail = {name: calls[name] * per for name in COUNTED_CALLS}
    name = f"Redis calls (EVALSHA + XREAD) per 1,000 ticks at {run.label}"
    return [*figures, Figure(SECTION, name, sum(calls.values()) * per, "calls", method, detail)]


def _exited(process: subprocess.Popen[bytes]) -> Callable[[], Awaitable[bool]]:
    async def exited() -> bool:
        return process.poll() is not None

    return exited


async def _drained(bus: Bus, partitions: int) -> bool:
    """Wait (bounded) for the strategy to apply every tick; False if it could not."""

    async def nothing_left() -> bool:
        return await strategy_backlog(bus, partitions) == 0

    try:
        await wait_for(nothing_left, DRAIN_TIMEOUT_S, "the strategy to drain")
        return True
    except BenchTimeoutError:
        return False


async def _decisions_drained(bus: Bus, partitions: int) -> bool:
    """Wait (bounded) for the execution role to decide every order; False if it could not."""

    async def nothing_left() -> bool:
        return await bus.backlog(order_streams(partitions), EXECUTION_ROLE) == 0

    try:
        await wait_for(nothing_left, DRAIN_TIMEOUT_S, "the execution role to drain")
        return True
    except BenchTimeoutError:
        return False


def decision_figures(run: FeedRun, decisions: list[float], drained: bool) -> list[Figure]:
    """p50/p99 from tick creation to the order's event, through the risk stage and the broker."""
    name = f"tick → decision (risk + broker) p{{}} at {run.label}"
    if len(decisions) < 2:
        return [Figure(SECTION, name.format(50), None, "ms", "fewer than two order events in the run")]
    method = (
        f"as above, to the orders.events entry id of each of the {len(decisions):,} order events (filled, rejected "
        f"or denied by the risk stage); execution drained: {_yes(drained)}"
    )
    return [
        Figure(SECTION, name.format(q), percentile(decisions, q / 100), "ms", method, {"events": len(decisions)})
        for q in (50, 99)
    ]


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"


def rate_figure(run: FeedRun, achieved: float, left_at_end: dict[str, int], drained: bool) -> list[Figure]:
    """The achieved rate of one run, whether the offered rate was reached and the strategy kept up."""
    offered_reached = achieved >= OFFERED_REACHED * run.rate
    kept_up = drained and left_at_end["strategy"] <= run.rate  # less than a second of ticks behind
    behind = ", ".join(f"{role} {count:,}" for role, count in left_at_end.items())
    method = (
        "ticks published / span of their stream entry ids. Offered rate reached (≥ 95 %): "
        f"{_yes(offered_reached)}; strategy kept up (under a second of ticks behind when the feed finished): "
        f"{_yes(kept_up)}; entries not yet done then: {behind}"
    )
    detail = {
        "offered": run.rate,
        "offered_reached": offered_reached,
        "strategy_kept_up": kept_up,
        "backlog_when_feed_finished": left_at_end,
        "drained": drained,
    }
    return [Figure(SECTION, f"achieved ticks/s at {run.label}", achieved, "ticks/s", method, detail)]


def latency_figures(run: FeedRun, total: list[float], on_bus: list[float]) -> list[Figure]:
    """p50/p95/p99 from tick creation, and p50/p99 from the tick on the bus, to the order on the bus."""
    if len(total) < 2:
        return [Figure(SECTION, f"tick → order at {run.label}", None, "ms", "fewer than two orders in the run")]
    setup = (
        f"full pipeline (feed with {BENCH_SYMBOLS} symbols, strategy, execution, storage: one process each), "
        f"{run.ticks / run.rate:.0f} s at {run.label}, all {len(total):,} orders of the run: "
    )
    from_creation = setup + "orders.new entry id (Redis ms) − the tick's wall-clock time at generation"
    from_bus = setup + "orders.new entry id − the tick's own entry id (both Redis ms): without the feed's batching"
    detail = {"orders": len(total)}
    created = [
        Figure(SECTION, f"p{q} at {run.label}", percentile(total, q / 100), "ms", from_creation, detail)
        for q in (50, 95, 99)
    ]
    return created + [
        Figure(SECTION, f"p{q} on the bus only, at {run.label}", percentile(on_bus, q / 100), "ms", from_bus, detail)
        for q in (50, 99)
    ]
