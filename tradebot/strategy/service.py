"""The strategy worker: owns tick partitions by lease and turns their ticks into signals and orders.

Each owned partition has one strategy instance holding the state of that partition's symbols. Its
outputs (signals on ``signals``, orders on ``orders.new``), its checkpoint and the acks of the ticks
it applied are written in one fenced commit, so any number of workers, started and killed in any
order, produce exactly the signals a single uninterrupted worker would.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable

from tradebot.common import runtime
from tradebot.common.bus import Bus
from tradebot.common.config import ReadySettings, Settings
from tradebot.common.models import Event, Order, Tick
from tradebot.common.partitions import PartitionedWorker, PartitionSettings
from tradebot.common.streams import ORDERS_NEW, SIGNALS, STRATEGY_ROLE, tick_stream
from tradebot.risk.exits import ExitRules
from tradebot.risk.state import TradingState
from tradebot.risk.store import TradingStateWatcher, poll_interval
from tradebot.strategy.base import Strategy
from tradebot.strategy.moving_average import MovingAverageCrossover


class StrategyPartition:
    """The checkpointed state of one tick partition: a strategy instance behind PartitionState."""

    def __init__(
        self, new_strategy: Callable[[], Strategy], order_quantity: float, may_order: Callable[[], bool] = lambda: True
    ):
        self.new_strategy = new_strategy
        self.order_quantity = order_quantity
        self.may_order = may_order
        self.strategy = new_strategy()
        self.exits = ExitRules()  # set by strategy_worker from EXIT_* (off by default)

    def restore(self, checkpoint: str | None) -> None:
        """Start from the checkpoint, or from nothing when there is none."""
        self.strategy = self.new_strategy()
        self.exits.restore({})
        if checkpoint:
            saved = json.loads(checkpoint)
            self.strategy.restore(saved)
            self.exits.restore(saved.get("exits", {}))

    def apply(self, events: list[Event]) -> list[tuple[str, Event]]:
        """Feed ticks to the strategy; each signal is published along with its order."""
        outputs: list[tuple[str, Event]] = []
        ordering = self.may_order()
        for event in events:
            if not isinstance(event, Tick):
                raise TypeError(f"expected a Tick on a tick stream, got a {type(event).__name__}")
            signals = self.strategy.on_tick(event)
            if self.exits.enabled:
                signals += self.exits.on_tick(event, signals)
            for signal in signals:
                outputs.append((SIGNALS, signal))
                if ordering:
                    outputs.append((ORDERS_NEW, Order.from_signal(signal, self.order_quantity)))
        return outputs

    def checkpoint(self) -> str:
        """The strategy's snapshot (and the open trades of the exits, when on) as compact JSON."""
        snapshot = self.strategy.snapshot()
        if self.exits.enabled:
            snapshot = {**snapshot, "exits": self.exits.snapshot()}
        return json.dumps(snapshot, separators=(",", ":"))


def strategy_factory(settings: Settings) -> Callable[[], Strategy]:
    """Builds the configured strategy (the moving-average crossover)."""
    return lambda: MovingAverageCrossover(settings.short_window, settings.long_window)


def strategy_worker(
    bus: Bus, settings: Settings, member: str, counters: Counter[str], may_order: Callable[[], bool] = lambda: True
) -> PartitionedWorker:
    """A partition-leasing worker named ``member`` (unique per worker) running the strategy."""
    config = PartitionSettings(
        role=STRATEGY_ROLE,
        partitions=settings.tick_partitions,
        stream_for=tick_stream,
        batch_size=settings.bus_batch_size,
        block_ms=settings.bus_block_ms,
        lease_ttl_ms=settings.lease_ttl_ms,
    )
    new_strategy = strategy_factory(settings)

    def new_state(_partition: int) -> StrategyPartition:
        state = StrategyPartition(new_strategy, settings.order_quantity, may_order)
        state.exits = ExitRules(settings.exit_stop_loss_pct, settings.exit_take_profit_pct, settings.exit_trailing_pct)
        return state

    return PartitionedWorker(bus, config, member=member, counters=counters, new_state=new_state)


async def run(settings: ReadySettings, *, stop: asyncio.Event, counters: Counter[str]) -> None:
    """Worker entry: run the strategy over the partitions this process wins."""
    bus = Bus.from_settings(settings)
    member = runtime.consumer_name()
    watcher = TradingStateWatcher(bus.redis, member, STRATEGY_ROLE, poll_interval(settings.lease_ttl_ms))
    await watcher.refresh()  # a restarted worker obeys a halt before its first tick
    watching = asyncio.create_task(watcher.run(stop))
    try:
        worker = strategy_worker(
            bus, settings, member, counters, lambda: watcher.current.state is not TradingState.HALTED
        )
        await worker.run(stop=stop, max_messages=settings.max_messages, burst=settings.burst)
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
        await watcher.forget()
        await bus.close()


def main() -> None:
    """``python -m tradebot.strategy.service``."""
    runtime.main(STRATEGY_ROLE, run)


if __name__ == "__main__":
    main()
