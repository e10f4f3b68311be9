"""Risk-check cost per order, in process: the pure engine, and the execution role's whole CPU path.

Orders are the demo's own: mock ticks of 100 symbols through the crossover strategy, sized and
executed on the paper account as they come, so the portfolio the checks see grows and shrinks as
it would live. Each ``check`` is timed on its own (perf_counter_ns), with the NYSE calendar on.
"""

from __future__ import annotations

import time

from tradebot.bench.report import Figure, percentile
from tradebot.bench.strategy import mock_ticks
from tradebot.common.bus.wire import decode, encode
from tradebot.common.config import Settings
from tradebot.common.models import Order
from tradebot.execution.service import BrokerPartition
from tradebot.strategy.moving_average import MovingAverageCrossover

SECTION = "risk"
BATCH = 100


def demo_orders(count: int, settings: Settings) -> list[Order]:
    """The first ``count`` orders the default strategy makes of mock ticks."""
    strategy = MovingAverageCrossover(settings.short_window, settings.long_window)
    orders: list[Order] = []
    ticks = mock_ticks(count * 40)
    for tick in ticks:
        orders += [Order.from_signal(signal, settings.order_quantity) for signal in strategy.on_tick(tick)]
        if len(orders) >= count:
            break
    return orders[:count]


def check_costs_us(orders: list[Order], settings: Settings) -> tuple[list[float], list[float], int]:
    """Wall and CPU microseconds of each order's risk stage (the account moving as orders fill), and denials.

    On a shared machine the wall time of one check includes being preempted; the thread's CPU time
    does not, which is the cost the check itself adds.
    """
    account = BrokerPartition(settings)
    stage, broker = account.risk, account.broker
    stage.begin_batch()
    wall, cpu, denied = [], [], 0
    for order in orders:
        began, began_cpu = time.perf_counter_ns(), time.thread_time_ns()
        screened = stage.screen(order, broker)
        cpu.append((time.thread_time_ns() - began_cpu) / 1000)
        wall.append((time.perf_counter_ns() - began) / 1000)
        if isinstance(screened, Order):
            before = stage.before_broker(screened, broker)
            result = broker.execute(screened)
            if result is not None:
                stage.after_broker(screened, result, before, broker)
        else:
            denied += 1
    return wall, cpu, denied


def stage_cost_us(orders: list[Order], settings: Settings) -> float:
    """Microseconds per order of decode + risk + broker + encode + checkpoint, in batches of BATCH."""
    wire = [encode(order) for order in orders]
    account = BrokerPartition(settings)
    began = time.perf_counter()
    for start in range(0, len(wire), BATCH):
        for _, event in account.apply([decode(fields) for fields in wire[start : start + BATCH]]):
            encode(event)
        account.checkpoint()
    return (time.perf_counter() - began) / len(wire) * 1e6


def measure_risk(count: int, settings: Settings) -> list[Figure]:
    """p50 and p99 of one check, and the execution role's CPU cost per order."""
    enforced = settings.model_copy(update={"market_hours": "enforce"})
    orders = demo_orders(count, enforced)
    wall, cpu, denied = check_costs_us(orders, enforced)
    stage_us = stage_cost_us(orders, enforced)
    method = (
        f"the risk stage (RiskStage.screen: RiskEngine.check and its bookkeeping) on {len(orders):,} orders "
        "of the demo strategy over 100 mock symbols, each timed alone; default limits, NYSE hours enforced; "
        f"approved orders fill on the paper account ({denied:,} denied)"
    )
    stage_method = (
        f"the execution role's CPU path per order, batches of {BATCH}: decode, risk stage, paper broker, "
        "encode the event, checkpoint JSON (account + risk memory); no Redis round trips"
    )
    extra = {"orders": len(orders), "denied": denied}
    return [
        Figure(SECTION, "risk check per order, p50", percentile(wall, 0.50), "µs", f"{method}; wall clock", extra),
        Figure(SECTION, "risk check per order, p99", percentile(wall, 0.99), "µs", "〃", extra),
        Figure(SECTION, "risk check per order, CPU, p50", percentile(cpu, 0.50), "µs", "〃 thread CPU time", extra),
        Figure(SECTION, "risk check per order, CPU, p99", percentile(cpu, 0.99), "µs", "〃 thread CPU time", extra),
        Figure(SECTION, "execution CPU path per order (risk + broker + checkpoint)", stage_us, "µs", stage_method),
    ]
