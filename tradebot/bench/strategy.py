"""Strategy cost per tick, in process: the pure strategy alone, and the worker's whole CPU path.

The pure figure is ``MovingAverageCrossover.on_tick`` over mock ticks of 100 symbols (what a
backtest pays). The worker figure adds what the strategy worker does around it for each batch:
decode and validate the wire entries, apply them through the partition state (signals and orders
built), encode the outputs, and every STRATEGY_SNAPSHOT_ENTRIES ticks the parts of a snapshot
(the symbols applied since the last one: tradebot/common/snapshots.py; a batch's commit writes
no state) — everything but the Redis round trips.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime

from tradebot.bench.report import Figure
from tradebot.common.bus.wire import TICKS_PER_ENTRY, decode, encode, encode_entries
from tradebot.common.codec import wire_rows
from tradebot.common.models import Tick
from tradebot.market_data.mock_feed import MockFeed, stepping_clock
from tradebot.storage.writer import TickValues, tick_rows_json
from tradebot.strategy.book import StrategyBook, StrategySpec
from tradebot.strategy.moving_average import MovingAverageCrossover
from tradebot.strategy.service import StrategyPartition
from tradebot.universe.resolver import curated_symbols

SECTION = "strategy"
WARM_UP_TICKS = 2_000


def mock_ticks(count: int) -> list[Tick]:
    """``count`` mock-feed ticks over the first 100 popular symbols."""
    start = datetime(2025, 1, 2, 14, 30, tzinfo=UTC)
    return MockFeed(curated_symbols("popular")[:100], 42, clock=stepping_clock(start)).take(count)


def pure_cost_us(ticks: list[Tick], short_window: int, long_window: int) -> tuple[float, int]:
    """Microseconds per ``on_tick`` (after a warm-up) and the number of signals produced."""
    strategy = MovingAverageCrossover(short_window, long_window)
    for tick in ticks[:WARM_UP_TICKS]:
        strategy.on_tick(tick)
    timed = ticks[WARM_UP_TICKS:]
    began = time.perf_counter()
    signals = sum(len(strategy.on_tick(tick)) for tick in timed)
    return (time.perf_counter() - began) / len(timed) * 1e6, signals


def worker_cost_us(ticks: list[Tick], short_window: int, long_window: int, batch: int, snapshot_every: int) -> float:
    """Microseconds per tick of decode + apply + encode outputs, in batches of ``batch``, and the
    parts of a snapshot every ``snapshot_every`` ticks (as the worker writes them)."""
    wire = [encode(tick) for tick in ticks]
    specs = [StrategySpec(None, "ma_crossover", {"short_window": short_window, "long_window": long_window})]
    state = StrategyPartition(lambda: StrategyBook(specs), 10.0)
    since = 0
    began = time.perf_counter()
    for start in range(0, len(wire), batch):
        events = [decode(fields) for fields in wire[start : start + batch]]
        outputs = state.apply(events)
        for _, event in outputs:
            encode(event)
        since += len(events)
        if since >= snapshot_every:
            state.changed_parts()
            since = 0
    return (time.perf_counter() - began) / len(wire) * 1e6


def storage_rows(entries: list[dict[str, str]], batch: int) -> None:
    """What the storage worker does with the tick-batch entries of each read (up to ``batch``
    entries, BUS_BATCH_SIZE) before the database: the strict decode into plain rows, then the
    ``ticks`` table's JSON document of them (tradebot/storage/batch.py, writer.tick_rows_json)."""
    for start in range(0, len(entries), batch):
        rows: list[TickValues] = []
        for fields in entries[start : start + batch]:
            rows += wire_rows(fields["data"]) or []
        tick_rows_json(rows)


def _per_tick_us(work: Callable[[], object], ticks: int) -> float:
    """The best of three timings of ``work``, in µs per tick (the least disturbed by other load)."""
    best = math.inf
    for _ in range(3):
        began = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - began)
    return best / ticks * 1e6


def stage_costs_us(
    count: int, short_window: int, long_window: int, batch: int, snapshot_every: int
) -> dict[str, float]:
    """CPU µs per tick of each step a tick takes through the workers, in process (no servers)."""
    ticks = mock_ticks(count)
    wire = [encode(tick) for tick in ticks]
    events = [decode(fields) for fields in wire]
    specs = [StrategySpec(None, "ma_crossover", {"short_window": short_window, "long_window": long_window})]
    state = StrategyPartition(lambda: StrategyBook(specs), 10.0)
    batches = [events[start : start + batch] for start in range(0, count, batch)]
    outputs = [state.apply(chunk) for chunk in batches]
    # as the feed publishes them: BUS_TICKS_PER_ENTRY ticks to an entry (one stream here)
    entries = [fields for _, fields in encode_entries([("ticks", tick) for tick in ticks], TICKS_PER_ENTRY)]

    def apply(snapshots: bool) -> None:
        fresh = StrategyPartition(lambda: StrategyBook(specs), 10.0)
        since = 0
        for chunk in batches:
            fresh.apply(chunk)
            since += len(chunk)
            if snapshots and since >= snapshot_every:
                fresh.changed_parts()
                since = 0

    applied = _per_tick_us(lambda: apply(False), count)
    return {
        "mock feed: generate": _per_tick_us(lambda: mock_ticks(count), count),
        "encode (feed → entry)": _per_tick_us(lambda: [encode(tick) for tick in ticks], count),
        "decode + validate (entry → Tick)": _per_tick_us(lambda: [decode(fields) for fields in wire], count),
        "strategy: apply": applied,
        "strategy: encode outputs": _per_tick_us(
            lambda: [encode(event) for chunk in outputs for _, event in chunk], count
        ),
        # a snapshot's parts every snapshot_every ticks (no commit writes state): apply with them, less alone
        "strategy: snapshot parts": max(0.0, _per_tick_us(lambda: apply(True), count) - applied),
        "storage: decode rows + JSON (wire_rows, tick_rows_json)": _per_tick_us(
            lambda: storage_rows(entries, batch), count
        ),
    }


def stage_figures(count: int, short_window: int, long_window: int, batch: int, snapshot_every: int) -> list[Figure]:
    """The per-step costs as figures: the CPU profile of the tick path (docs/BENCHMARKS.md)."""
    method = (
        f"{count:,} mock ticks of 100 symbols, batches of {batch}, in process, no Redis or PostgreSQL; "
        f"best of three timings of each step alone; snapshot parts every {snapshot_every:,} ticks "
        "(STRATEGY_SNAPSHOT_ENTRIES, one state of all 100 symbols: a worker's partition holds ~1/8 of them)"
    )
    return [
        Figure(SECTION, f"per tick, {step}", value, "µs", method)
        for step, value in stage_costs_us(count, short_window, long_window, batch, snapshot_every).items()
    ]


def measure_strategy(ticks: int, short_window: int, long_window: int, batch: int, snapshot_every: int) -> list[Figure]:
    """Both per-tick costs, and the cost of each step of the tick path, as figures."""
    sample = mock_ticks(ticks + WARM_UP_TICKS)
    pure_us, signals = pure_cost_us(sample, short_window, long_window)
    worker_us = worker_cost_us(sample[WARM_UP_TICKS:], short_window, long_window, batch, snapshot_every)
    pure_method = (
        f"MovingAverageCrossover({short_window}, {long_window}).on_tick over {ticks:,} mock ticks of 100 "
        f"symbols in one process, after {WARM_UP_TICKS:,} warm-up ticks ({signals:,} signals)"
    )
    worker_method = (
        f"the strategy worker's CPU path per tick, batches of {batch}: decode + validate the entry, "
        f"apply (signals and orders built), encode outputs, a snapshot's parts every {snapshot_every:,} ticks; "
        "no Redis round trips"
    )
    return [
        Figure(
            SECTION,
            "cost per tick, pure strategy",
            pure_us,
            "µs",
            pure_method,
            {"ticks": ticks, "signals": signals, "ticks_per_s_per_core": 1e6 / pure_us},
        ),
        Figure(
            SECTION,
            "cost per tick, worker CPU path",
            worker_us,
            "µs",
            worker_method,
            {"ticks": ticks, "ticks_per_s_per_core": 1e6 / worker_us},
        ),
        *stage_figures(ticks, short_window, long_window, batch, snapshot_every),
    ]
