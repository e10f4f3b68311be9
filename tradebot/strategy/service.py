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
from typing import Any

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
        self._touched: set[str] = set()  # symbols applied since the last parts written
        self._rest: str | None = None  # the snapshot without its symbols, as last written
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
            self._touched.add(event.symbol)
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

    # Checkpointed in parts, one per symbol (plus "_rest", the snapshot without its symbols): a
    # commit rewrites only the symbols its batch touched, not the whole partition.
    def parts(self) -> dict[str, str]:
        """Every part of the state."""
        self._touched = set(self.strategy.snapshot().get("symbols", {}))
        self._rest = None
        return self.changed_parts()

    def changed_parts(self) -> dict[str, str]:
        """The symbols applied since the last call (and the rest, if it changed)."""
        snapshot = self.strategy.snapshot()
        if self.exits.enabled:  # the exits' open trades travel in the rest
            snapshot["exits"] = self.exits.snapshot()
        symbols = snapshot.pop("symbols", {})
        changed = {symbol: _compact(_pack(symbols[symbol])) for symbol in self._touched if symbol in symbols}
        rest = _compact(snapshot)
        if rest != self._rest:
            changed["_rest"] = self._rest = rest
        self._touched = set()
        return changed

    def restore_parts(self, parts: dict[str, str]) -> None:
        """Start from parts as committed."""
        snapshot = json.loads(parts.get("_rest", "{}"))
        snapshot["symbols"] = {
            name: _unpack(json.loads(part)) for name, part in parts.items() if not name.startswith("_")
        }
        self.strategy = self.new_strategy()
        self.exits.restore(snapshot.pop("exits", {}))
        self.strategy.restore(snapshot)
        self._rest = parts.get("_rest")


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


# A symbol's recent tick ids dominate its part ("mock:AAPL:1041", … fifty of them) and a part is
# rewritten for nearly every tick, so they are stored as their shared prefix and, when the rest are
# consecutive numbers (the mock feed, most providers' sequences), as a range.
_IDS = "recent_tick_ids"


def _pack(state: dict[str, Any]) -> dict[str, Any]:
    ids = state.get(_IDS)
    if not ids or not isinstance(ids, list):
        return state
    prefix = ids[0].rpartition(":")[0] + ":"
    if not all(tick_id.startswith(prefix) for tick_id in ids):
        return state
    rest = [tick_id[len(prefix) :] for tick_id in ids]
    packed: dict[str, Any] = {"prefix": prefix, "rest": rest}
    if all(part.isdigit() and str(int(part)) == part for part in rest):
        first = int(rest[0])
        if [int(part) for part in rest] == list(range(first, first + len(rest))):
            packed = {"prefix": prefix, "first": first, "count": len(rest)}
    return {**state, _IDS: packed}


def _unpack(state: dict[str, Any]) -> dict[str, Any]:
    packed = state.get(_IDS)
    if not isinstance(packed, dict):
        return state
    if "rest" in packed:
        ids = [packed["prefix"] + part for part in packed["rest"]]
    else:
        ids = [f"{packed['prefix']}{number}" for number in range(packed["first"], packed["first"] + packed["count"])]
    return {**state, _IDS: ids}


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
