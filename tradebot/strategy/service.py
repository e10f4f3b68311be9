"""The strategy worker: owns tick partitions by lease and turns their ticks into signals and orders.

Each owned partition has one strategy instance holding the state of that partition's symbols. Its
outputs (signals on ``signals``, orders on ``orders.new``), its checkpoint and the acks of the ticks
it applied are written in one fenced commit, so any number of workers, started and killed in any
order, produce exactly the signals a single uninterrupted worker would.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Callable

from tradebot.common import runtime
from tradebot.common.bus import Bus
from tradebot.common.config import Settings, SettingsError
from tradebot.common.models import Event, Tick
from tradebot.common.partitions import PartitionedWorker, PartitionSettings
from tradebot.common.streams import ORDERS_NEW, SIGNALS, STRATEGY_ROLE, STRATEGY_SWITCHES_KEY, tick_stream
from tradebot.strategy.book import Sizing, StrategyBook, StrategySpec, read_strategies_file
from tradebot.strategy.catalog import StrategyError

log = logging.getLogger(__name__)
SWITCH_POLL_S = 1.0  # how soon a strategy switched on or off at run time takes effect


class StrategyPartition:
    """The checkpointed state of one tick partition: a strategy book behind PartitionState."""

    def __init__(self, new_book: Callable[[], StrategyBook]):
        self.new_book = new_book
        self.book = new_book()

    def restore(self, checkpoint: str | None) -> None:
        """Start from the checkpoint, or from nothing when there is none."""
        self.book = self.new_book()
        if checkpoint:
            self.book.restore(json.loads(checkpoint))

    def apply(self, events: list[Event]) -> list[tuple[str, Event]]:
        """Feed ticks to the strategies; each signal is published along with its order."""
        outputs: list[tuple[str, Event]] = []
        for event in events:
            if not isinstance(event, Tick):
                raise TypeError(f"expected a Tick on a tick stream, got a {type(event).__name__}")
            for signal, order in self.book.on_tick(event):
                outputs += [(SIGNALS, signal), (ORDERS_NEW, order)]
        return outputs

    def checkpoint(self) -> str:
        """The book's snapshot as compact JSON."""
        return json.dumps(self.book.snapshot(), separators=(",", ":"))


def strategy_specs(settings: Settings) -> list[StrategySpec]:
    """STRATEGIES_FILE's strategies, or the one crossover of SHORT_WINDOW / LONG_WINDOW."""
    if settings.strategies_file is not None:
        return read_strategies_file(settings.strategies_file)
    parameters = {"short_window": settings.short_window, "long_window": settings.long_window}
    return [StrategySpec(None, "ma_crossover", parameters, sizing=Sizing(quantity=settings.order_quantity))]


def book_factory(settings: Settings, switches: dict[str, bool] | None = None) -> Callable[[], StrategyBook]:
    """Builds the configured book (checked once here: a bad strategies file stops start-up)."""
    try:
        specs = strategy_specs(settings)
        StrategyBook(specs)
    except StrategyError as error:
        raise SettingsError(f"invalid setting STRATEGIES_FILE: {error}") from None
    shared = switches if switches is not None else {}
    return lambda: StrategyBook(specs, shared)


def strategy_worker(
    bus: Bus, settings: Settings, member: str, counters: Counter, switches: dict[str, bool] | None = None
) -> PartitionedWorker:
    """A partition-leasing worker named ``member`` (unique per worker) running the strategies."""
    config = PartitionSettings(
        role=STRATEGY_ROLE,
        partitions=settings.tick_partitions,
        stream_for=tick_stream,
        batch_size=settings.bus_batch_size,
        block_ms=settings.bus_block_ms,
        lease_ttl_ms=settings.lease_ttl_ms,
    )
    new_book = book_factory(settings, switches)
    return PartitionedWorker(
        bus, config, member=member, counters=counters, new_state=lambda _partition: StrategyPartition(new_book)
    )


async def read_switches(bus: Bus) -> dict[str, bool]:
    """Strategies switched on or off at run time (``tradebot strategy enable|disable NAME``)."""
    saved = await bus.redis.hgetall(STRATEGY_SWITCHES_KEY)
    return {_text(name): _text(state) == "on" for name, state in saved.items()}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def follow_switches(bus: Bus, switches: dict[str, bool], stop: asyncio.Event) -> None:
    """Keep ``switches`` equal to what was switched at run time, polling every SWITCH_POLL_S."""
    while not stop.is_set():
        current = await read_switches(bus)
        if current != switches:
            log.info(
                "strategy switches: %s", ", ".join(f"{n}={'on' if v else 'off'}" for n, v in sorted(current.items()))
            )
            switches.clear()
            switches.update(current)
        try:
            await asyncio.wait_for(stop.wait(), SWITCH_POLL_S)
        except TimeoutError:
            pass


async def run(settings: Settings, *, stop: asyncio.Event, counters: Counter) -> None:
    """Worker entry: run the strategy over the partitions this process wins."""
    if not settings.redis_url:
        raise ValueError("REDIS_URL is not set")
    bus = Bus.from_settings(settings)
    switches: dict[str, bool] = {}
    following = asyncio.create_task(follow_switches(bus, switches, stop))
    try:
        worker = strategy_worker(bus, settings, runtime.consumer_name(), counters, switches)
        await worker.run(stop=stop, max_messages=settings.max_messages, burst=settings.burst)
    finally:
        following.cancel()
        await bus.close()


def main() -> None:
    """``python -m tradebot.strategy.service``."""
    runtime.main(STRATEGY_ROLE, run)


if __name__ == "__main__":
    main()
