"""The acceptance test of partitions and leases: the same ticks give the same signals and orders
with one worker, with three, and with workers killed by SIGKILL mid-run; every order is executed
exactly once even when the execution worker is killed, with the same risk decisions as a replay."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.helpers import stream_lengths, wait_until
from tests.worker_processes import worker_environment, worker_processes
from tradebot.common.bus import Bus
from tradebot.common.bus.wire import decode_all
from tradebot.common.config import Settings
from tradebot.common.models import Event, Order, OrderEvent, Signal, Tick
from tradebot.common.streams import (
    EXECUTION_ROLE,
    ORDER_EVENTS,
    ORDERS_NEW,
    STRATEGY_ROLE,
    lease_key,
    order_streams,
    signal_streams,
    tick_stream_for,
    tick_streams,
)
from tradebot.execution.account import read_account
from tradebot.execution.service import BrokerPartition
from tradebot.market_data.mock_feed import MockFeed, stepping_clock
from tradebot.strategy import service as strategy_service
from tradebot.strategy.moving_average import MovingAverageCrossover

SYMBOLS = ["AAPL", "META", "JPM", "AMZN", "MSFT", "NVDA"]  # crc32 spreads them over all 4 partitions
TICKS = 6 * 400
PARTITIONS = 4
START = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
STRATEGY_MODULE = "tradebot.strategy.service"
EXECUTION_MODULE = "tradebot.execution.service"


@pytest.fixture(params=["single", "cluster"], ids=["redis6.2", "rediscluster"])
def redis_url(request: pytest.FixtureRequest, servers: tuple[str, str]) -> str:
    """Every test here runs on one Redis and on a Redis Cluster (3 masters, 3 replicas)."""
    if request.param == "cluster":
        return str(request.getfixturevalue("redis_cluster").url)
    return servers[0]


@pytest.fixture
def pipeline_settings(settings: Settings) -> Settings:
    """Small batches, so a run is many commits long and a kill lands in the middle of it."""
    return settings.model_copy(
        update={"symbols": SYMBOLS, "tick_partitions": PARTITIONS, "bus_batch_size": 20, "lease_ttl_ms": 1000}
    )


def seeded_ticks(count: int = TICKS) -> list[Tick]:
    return MockFeed(SYMBOLS, 11, clock=stepping_clock(START)).take(count)


def single_strategy_run(ticks: list[Tick]) -> list[Signal]:
    """What one uninterrupted strategy makes of the ticks (per-symbol order is all that matters)."""
    strategy = MovingAverageCrossover(5, 20)
    return [signal for tick in ticks for signal in strategy.on_tick(tick)]


def single_run_orders(ticks: list[Tick], settings: Settings) -> list[Order]:
    """The orders one uninterrupted strategy book sends for the ticks (long only by its own orders)."""
    book = strategy_service.book_factory(settings)()
    return [order for tick in ticks for _, order in book.on_tick(tick) if order is not None]


def signal_keys(signals: list[Signal]) -> Counter:
    return Counter((s.id, s.symbol, s.side, s.tick_id, s.price, s.confidence) for s in signals)


def order_keys(orders: list[Order]) -> Counter:
    return Counter((o.id, o.symbol, o.side, o.quantity, o.reference_price, o.signal_id) for o in orders)


async def read_stream(bus: Bus, stream: str) -> list[Event]:
    return [event for _, fields in await bus.redis.xrange(stream) for event in decode_all(fields)]


async def publish_ticks(bus: Bus, ticks: list[Tick]) -> None:
    await bus.publish((tick_stream_for(tick.symbol, PARTITIONS), tick) for tick in ticks)


async def drained(bus: Bus, streams: list[str], group: str) -> bool:
    """Nothing pending and nothing undelivered on any of the streams for the group."""
    for stream in streams:
        health = await bus.health(stream, group)
        if health.pending or health.lag:
            return False
    return True


def when(*conditions: Callable[[], Awaitable[bool]]) -> Callable[[], Awaitable[bool]]:
    async def all_true() -> bool:
        for condition in conditions:
            if not await condition():
                return False
        return True

    return all_true


async def strategy_finished(bus: Bus, expected: int) -> bool:
    return await stream_lengths(bus.redis, signal_streams(PARTITIONS)) >= expected and await drained(
        bus, tick_streams(PARTITIONS), STRATEGY_ROLE
    )


async def lease_owners(bus: Bus, role: str, partitions: int) -> set[str]:
    owners = [await bus.redis.get(lease_key(role, p)) for p in range(partitions)]
    return {owner for owner in owners if owner}


async def assert_same_as_single_run(bus: Bus, expected: list[Signal], expected_orders: list[Order]) -> None:
    signals = await bus.entries_of(signal_streams(PARTITIONS))
    orders = await bus.entries_of(order_streams(PARTITIONS))
    assert signal_keys(signals) == signal_keys(expected)  # type: ignore[arg-type]
    assert order_keys(orders) == order_keys(expected_orders)  # type: ignore[arg-type]
    assert len({s.id for s in signals}) == len(signals), "a signal was published twice"
    assert len({o.id for o in orders}) == len(orders), "an order was published twice"


async def test_one_worker_in_burst_mode_gives_the_single_run_signals(bus: Bus, pipeline_settings: Settings) -> None:
    ticks = seeded_ticks()
    expected = single_strategy_run(ticks)
    assert len(expected) > 100
    assert {s.side for s in expected} == {"buy", "sell"}
    await publish_ticks(bus, ticks)
    burst = pipeline_settings.model_copy(update={"burst": True})
    counters: Counter = Counter()
    await asyncio.wait_for(strategy_service.run(burst, stop=asyncio.Event(), counters=counters), timeout=60)
    assert counters["handled"] >= TICKS
    await assert_same_as_single_run(bus, expected, single_run_orders(ticks, pipeline_settings))


@pytest.mark.timeout(300)  # above its own waits' deadlines, which bound a hang on a loaded machine
async def test_three_workers_give_the_same_signals_as_one(bus: Bus, pipeline_settings: Settings) -> None:
    ticks = seeded_ticks()
    expected = single_strategy_run(ticks)
    stops = [asyncio.Event() for _ in range(3)]
    workers = [strategy_service.strategy_worker(bus, pipeline_settings, f"worker-{n}", Counter()) for n in range(3)]
    tasks = [asyncio.create_task(worker.run(stop=stop)) for worker, stop in zip(workers, stops, strict=True)]
    try:
        await wait_until(
            lambda: _equals(lease_owners(bus, STRATEGY_ROLE, PARTITIONS), 3),
            timeout=60,
            what="three workers to share the partitions",
        )
        await publish_ticks(bus, ticks[: TICKS // 2])
        await wait_until(
            lambda: _at_least(stream_lengths(bus.redis, signal_streams(PARTITIONS)), 10),
            timeout=60,
            what="first signals",
        )
        stops[0].set()  # one worker leaves mid-run; the others take over its partitions
        await publish_ticks(bus, ticks[TICKS // 2 :])
        await wait_until(lambda: strategy_finished(bus, len(expected)), timeout=60, what="all ticks processed")
    finally:
        for stop in stops:
            stop.set()
        await asyncio.gather(*tasks)
    await assert_same_as_single_run(bus, expected, single_run_orders(ticks, pipeline_settings))


@pytest.mark.timeout(300)  # above its own waits' deadlines, which bound a hang on a loaded machine
async def test_workers_killed_with_sigkill_give_the_same_signals(
    bus: Bus, pipeline_settings: Settings, tmp_path: Path
) -> None:
    ticks = seeded_ticks()
    expected = single_strategy_run(ticks)
    env = worker_environment(
        pipeline_settings, tick_partitions=PARTITIONS, bus_batch_size=5, lease_ttl_ms=1000, bus_block_ms=50
    )
    with worker_processes(tmp_path / "logs") as workers:
        processes = [workers.start(STRATEGY_MODULE, env) for _ in range(3)]
        await wait_until(
            lambda: _equals(lease_owners(bus, STRATEGY_ROLE, PARTITIONS), 3),
            timeout=60,
            what="three worker processes to share the partitions",
        )
        await publish_ticks(bus, ticks[: TICKS // 2])
        await wait_until(
            lambda: _at_least(stream_lengths(bus.redis, signal_streams(PARTITIONS)), 10),
            timeout=60,
            what="first signals",
        )
        victim = await _owner_process(bus, STRATEGY_ROLE, 0, processes)
        workers.kill(victim)
        await publish_ticks(bus, ticks[TICKS // 2 :])
        workers.start(STRATEGY_MODULE, env)
        await wait_until(
            lambda: strategy_finished(bus, len(expected)), timeout=60, what=f"all ticks processed\n{workers.logs()}"
        )
    await assert_same_as_single_run(bus, expected, single_run_orders(ticks, pipeline_settings))


# Orders are committed one by one; on the cluster each read visits every partition's stream on its
# master, so on a loaded 2-core machine the run takes minutes (about 10 orders/s at load 15).
@pytest.mark.timeout(600)
async def test_every_order_is_executed_exactly_once_across_a_sigkill(
    bus: Bus, pipeline_settings: Settings, tmp_path: Path
) -> None:
    # More orders than the strategy tests make, committed one by one, so the kill lands mid-run.
    orders = [Order.from_signal(signal, 10.0) for signal in single_strategy_run(seeded_ticks(5 * TICKS))]
    # The replay: the same orders through the same risk stage and paper broker, in one process.
    replay = BrokerPartition(pipeline_settings)
    expected = [event for _, event in replay.apply(orders)]
    reference = replay.broker
    assert {e.status for e in expected} >= {"filled", "denied"}  # type: ignore[attr-defined]
    env = worker_environment(
        pipeline_settings,
        bus_batch_size=1,
        lease_ttl_ms=1000,
        bus_block_ms=50,
        starting_cash=reference.starting_cash,
        slippage_bps=reference.slippage_bps,
        commission_per_share=reference.commission_per_share,
    )
    with worker_processes(tmp_path / "logs") as workers:
        processes = [workers.start(EXECUTION_MODULE, env) for _ in range(2)]  # one active, one standby
        await wait_until(
            lambda: _equals(lease_owners(bus, EXECUTION_ROLE, 1), 1),
            timeout=60,
            what="an execution worker to take the account",
        )
        half = len(orders) // 2
        await bus.publish((ORDERS_NEW, order) for order in orders[:half])
        await wait_until(lambda: _at_least(bus.redis.xlen(ORDER_EVENTS), 20), timeout=60, what="first fills")
        workers.kill(await _owner_process(bus, EXECUTION_ROLE, 0, processes))
        await bus.publish((ORDERS_NEW, order) for order in [*orders[half:], orders[0], orders[half]])  # + repeats
        workers.start(EXECUTION_MODULE, env)
        finished = when(
            lambda: _at_least(bus.redis.xlen(ORDER_EVENTS), len(orders)),
            lambda: drained(bus, [ORDERS_NEW], EXECUTION_ROLE),
        )
        await wait_until(finished, timeout=420, what=f"all orders executed\n{workers.logs()}")
    events: list[OrderEvent] = await read_stream(bus, ORDER_EVENTS)  # type: ignore[assignment]
    assert Counter(e.client_order_id for e in events) == Counter(o.id for o in orders)
    assert events == expected  # one stream, one owner at a time: the same decisions and fills in the same order
    account = await read_account(bus.redis)
    assert account is not None
    assert account["cash"] == pytest.approx(reference.cash)
    assert account["positions"].keys() == reference.positions.keys()


async def _owner_process(bus: Bus, role: str, partition: int, processes: list):  # type: ignore[no-untyped-def]
    """The process whose member name (host-pid) holds the partition's lease."""
    owner = await bus.redis.get(lease_key(role, partition))
    assert owner, f"nobody owns {role} partition {partition}"
    return next(p for p in processes if owner.endswith(f"-{p.pid}"))


async def _equals(value: Awaitable, expected: object) -> bool:
    result = await value
    return (len(result) if isinstance(result, set) else result) == expected


async def _at_least(value: Awaitable[int], threshold: int) -> bool:
    return await value >= threshold
