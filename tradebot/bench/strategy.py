"""Strategy cost per tick, in process: the pure strategy alone, and the worker's whole CPU path.

The pure figure is ``MovingAverageCrossover.on_tick`` over mock ticks of 100 symbols (what a
backtest pays). The worker figure adds what the strategy worker does around it for each batch:
decode and validate the wire entries, apply them through the partition state (signals and orders
built), encode the outputs and serialise the checkpoint — everything but the Redis round trips.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from tradebot.bench.report import Figure
from tradebot.common.bus import decode, encode
from tradebot.common.models import Tick
from tradebot.market_data.mock_feed import MockFeed, stepping_clock
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


def worker_cost_us(ticks: list[Tick], short_window: int, long_window: int, batch: int) -> float:
    """Microseconds per tick of decode + apply + encode outputs + checkpoint, in batches of ``batch``."""
    wire = [encode(tick) for tick in ticks]
    specs = [StrategySpec(None, "ma_crossover", {"short_window": short_window, "long_window": long_window})]
    state = StrategyPartition(lambda: StrategyBook(specs), 10.0)
    began = time.perf_counter()
    for start in range(0, len(wire), batch):
        events = [decode(fields) for fields in wire[start : start + batch]]
        outputs = state.apply(events)
        for _, event in outputs:
            encode(event)
        state.checkpoint()
    return (time.perf_counter() - began) / len(wire) * 1e6


def measure_strategy(ticks: int, short_window: int, long_window: int, batch: int) -> list[Figure]:
    """Both per-tick costs as figures."""
    sample = mock_ticks(ticks + WARM_UP_TICKS)
    pure_us, signals = pure_cost_us(sample, short_window, long_window)
    worker_us = worker_cost_us(sample[WARM_UP_TICKS:], short_window, long_window, batch)
    pure_method = (
        f"MovingAverageCrossover({short_window}, {long_window}).on_tick over {ticks:,} mock ticks of 100 "
        f"symbols in one process, after {WARM_UP_TICKS:,} warm-up ticks ({signals:,} signals)"
    )
    worker_method = (
        f"the strategy worker's CPU path per tick, batches of {batch}: decode + validate the entry, "
        "apply (signals and orders built), encode outputs, checkpoint JSON; no Redis round trips"
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
    ]
