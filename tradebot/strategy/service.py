"""The strategy worker: owns tick partitions by lease and turns their ticks into signals and orders.

Each owned partition has one strategy book (every configured strategy, tradebot/strategy/book.py)
holding the state of that partition's symbols. Its outputs (signals on ``signals``, orders on
``orders.new``), its checkpoint and the acks of the ticks it applied are written in one fenced
commit, so any number of workers, started and killed in any order, produce exactly the signals a
single uninterrupted worker would. The checkpoint is kept in parts (tradebot/strategy/parts.py),
written in a snapshot now and then (tradebot/common/snapshots.py): a commit writes the outputs and
the group's position, and a restore replays the ticks after the snapshot. The run-time switches and
the trading state decide too (:meth:`StrategyPartition.inputs`): a change of them forces a snapshot.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Callable
from typing import NamedTuple

from tradebot.common import runtime
from tradebot.common.bus import Bus
from tradebot.common.bus.connection import RECOVERABLE_REDIS_ERRORS
from tradebot.common.config import ReadySettings, Settings, SettingsError
from tradebot.common.in_flight import InFlight
from tradebot.common.lifecycle import wait_or_stop
from tradebot.common.models import Event, Order, Tick
from tradebot.common.partitions import PartitionedWorker, PartitionSettings
from tradebot.common.snapshots import SnapshotReader
from tradebot.common.streams import STRATEGY_ROLE, STRATEGY_SWITCHES_KEY, order_stream, signal_stream, tick_stream
from tradebot.risk.exits import ExitRules
from tradebot.risk.state import TradingState, strictest
from tradebot.risk.store import obeying_trading_state, poll_interval, read_record
from tradebot.risk.views import Holdings, held_if_not_active, read_checkpoint, trading_state
from tradebot.strategy import parts
from tradebot.strategy.bars import BarATR, timeframe_seconds
from tradebot.strategy.book import Sizing, StrategyBook, StrategySpec, read_strategies_file
from tradebot.strategy.catalog import StrategyError

log = logging.getLogger(__name__)
SWITCH_POLL_S = 1.0  # how soon a strategy switched on or off at run time takes effect
# Tick-stream entries read and not yet committed across the worker's partitions, in full batches:
# one applied while the one before is committed. A worker behind the feed would otherwise hold a
# decoded batch per partition it owns (BUS_BATCH_SIZE entries × BUS_TICKS_PER_ENTRY ticks each).
BATCHES_IN_FLIGHT = 2
# the order sides the strategies send in each trading state (what the risk stage would deny stays home)
SENT_SIDES = {
    TradingState.ACTIVE: frozenset({"buy", "sell"}),
    TradingState.REDUCING: frozenset({"sell"}),
    TradingState.HALTED: frozenset[str](),
}


class StrategyPartition:
    """The checkpointed state of one tick partition: a strategy book (and the exits) behind PartitionState.

    ``trading_state`` gates the orders at the source: while REDUCING only sells are sent (a buy would
    be denied), while HALTED none; signals are still made. The book's notion of "long" moves with
    the orders it sends, and, while the account is not ACTIVE, drops what ``account_held`` (the
    account's holdings per strategy as the execution role last committed them, when that commit was
    not ACTIVE) does not show: a BUY denied, or sent before the worker read the state and bound to be.
    """

    def __init__(
        self,
        new_book: Callable[[], StrategyBook],
        order_quantity: float,
        trading_state: Callable[[], TradingState] = lambda: TradingState.ACTIVE,
        exits: Callable[[], ExitRules] = ExitRules,
        partition: int = 0,
        account_held: Callable[[], Holdings | None] = lambda: None,
    ):
        # Outputs stay in the partition's slot: its commit publishes them with the acks and the state.
        self.signals, self.orders = signal_stream(partition), order_stream(partition)
        self.new_book = new_book
        self.order_quantity = order_quantity
        self.trading_state = trading_state
        self.account_held = account_held
        self.new_exits = exits
        self.book = new_book()
        self.exits = exits()
        self._touched: set[str] = set()  # symbols applied since the last parts written
        self._rest: str | None = None  # the snapshot without its symbols, as last written
        self.forgotten = 0  # times follow_account dropped positions (an input: see inputs)
        self._inputs_of: tuple[object, ...] | None = None  # what ``_inputs`` was encoded from
        self._inputs = ""
        self._replaying = False

    def restore(self, checkpoint: str | None) -> None:
        """Start from a whole-string checkpoint (an older layout), or from nothing."""
        self.restore_parts({parts.REST: checkpoint} if checkpoint else {})

    def apply(self, events: list[Event]) -> list[tuple[str, Event]]:
        """Feed ticks to the strategies; each signal is published along with its order (unless halted)."""
        outputs: list[tuple[str, Event]] = []
        if not self._replaying:
            self.follow_account()
        sides = SENT_SIDES[self.trading_state()]
        for event in events:
            if not isinstance(event, Tick):
                raise TypeError(f"expected a Tick on a tick stream, got a {type(event).__name__}")
            self._touched.add(event.symbol)
            decided = self.book.on_tick(event, sides)
            if self.exits.enabled:  # the exits follow the trades the book sent
                exits = self.exits.on_tick(event, [signal for signal, order in decided if order is not None])
                decided += [(s, Order.from_signal(s, self.order_quantity) if sides else None) for s in exits]
            for signal, order in decided:
                outputs.append((self.signals, signal))
                if order is not None:
                    outputs.append((self.orders, order))
            # Even while HALTED: a cancel always passes, and the risk stage checks a replace. A change
            # goes on the partition's own orders stream, behind the order it changes.
            take_changes = getattr(self.book, "take_changes", None)  # (a stand-in book may have none)
            outputs += [(self.orders, change) for change in (take_changes() if take_changes else [])]
        return outputs

    def follow_account(self) -> None:
        """While the account is not ACTIVE, drop from the book what ``account_held`` does not show
        (see the class). An input from outside the ticks: never applied in a replay; the snapshot
        reader takes it in before a batch, and ``inputs`` counts the drops, so a snapshot with the
        positions dropped comes before the ticks applied after them."""
        held = self.account_held() if "buy" not in SENT_SIDES[self.trading_state()] else None
        if held is not None and self.book.forget_unheld(held):  # (the positions are in the rest part)
            self.forgotten += 1

    def inputs(self) -> str:
        """What decides besides the ticks: the trading state and each strategy's run-time switch (a
        change forces a snapshot; a restore replays the ticks after it under the recorded ones)."""
        switches = getattr(self.book, "switches", {})
        entries = getattr(self.book, "entries", [])  # (a stand-in book may have none)
        effective = {entry.name: switches.get(entry.name, entry.spec.enabled) for entry in entries}
        key = (self.trading_state().value, tuple(effective.items()), self.forgotten)
        if key != self._inputs_of:  # asked before every batch of every partition: encoded once per change
            self._inputs_of = key
            self._inputs = parts.compact({"state": key[0], "switches": effective, "forgotten": self.forgotten})
        return self._inputs

    def replay(self, events: list[Event], inputs: str) -> None:
        """Apply ticks again under recorded ``inputs``, dropping the outputs (already published)."""
        recorded = json.loads(inputs) if inputs else {}
        live_state, live_switches = self.trading_state, getattr(self.book, "switches", None)
        if "state" in recorded:
            state = TradingState(recorded["state"])
            self.trading_state = lambda: state
        if live_switches is not None and "switches" in recorded:
            self.book.switches = recorded["switches"]
        self._replaying = True
        try:
            self.apply(events)
        finally:
            self._replaying = False
            self.trading_state = live_state
            if live_switches is not None:
                self.book.switches = live_switches

    def _snapshot(self) -> dict[str, object]:
        snapshot = self.book.snapshot()
        if self.exits.enabled:  # the exits' open trades travel in the rest
            snapshot["exits"] = self.exits.snapshot()
        return snapshot

    def checkpoint(self) -> str:
        """The whole state as compact JSON (what a backtest or a test compares)."""
        return parts.compact(self._snapshot())

    def parts(self) -> dict[str, str]:
        """Every part of the state."""
        self._rest = None
        every, rest = parts.split(self._snapshot(), None)
        self._touched = set()
        self._rest = rest
        return {**every, parts.REST: rest}

    def changed_parts(self) -> dict[str, str]:
        """The symbols applied since the last call (and the rest, if it changed)."""
        changed, rest = parts.split(self._snapshot(), self._touched)
        if rest != self._rest:
            changed[parts.REST] = self._rest = rest
        self._touched = set()
        return changed

    def restore_parts(self, saved: dict[str, str]) -> None:
        """Start from parts as committed."""
        snapshot = parts.join(saved) if saved else {}
        self.book = self.new_book()
        self.exits = self.new_exits()
        self.exits.restore(snapshot.pop("exits", {}))
        if snapshot:
            self.book.restore(snapshot)
        self._rest = saved.get(parts.REST)
        # ``_touched`` is kept: a restore in the middle of a batch (the reader's poison path) must not
        # forget the symbols applied before it, whose parts the next commit still has to write.


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
    bus: Bus,
    settings: Settings,
    member: str,
    counters: Counter[str],
    switches: dict[str, bool] | None = None,
    trading_state: Callable[[], TradingState] = lambda: TradingState.ACTIVE,
    account_held: Callable[[], Holdings | None] = lambda: None,
) -> PartitionedWorker:
    """A partition-leasing worker named ``member`` (unique per worker) running the strategies."""
    config = PartitionSettings(
        role=STRATEGY_ROLE,
        partitions=settings.tick_partitions,
        streams_for=lambda partition: [tick_stream(partition)],
        batch_size=settings.bus_batch_size,
        block_ms=settings.bus_block_ms,
        lease_ttl_ms=settings.lease_ttl_ms,
        positioned=True,  # a partition's tick stream is in its slot: XREAD, the group moved by the commit
        snapshot_entries=settings.strategy_snapshot_entries,  # the parts in a snapshot now and then
        snapshot_s=settings.strategy_snapshot_s,
    )
    new_book = book_factory(settings, switches)
    bus.commit_together()  # a feed batch wakes every partition at once: their commits go in one script call

    def exits() -> ExitRules:
        return ExitRules(
            settings.exit_stop_loss_pct,
            settings.exit_take_profit_pct,
            settings.exit_trailing_pct,
            settings.exit_atr_multiple,
            lambda: BarATR(settings.exit_atr_window, timeframe_seconds(settings.exit_atr_timeframe)),
            settings.exit_take_profit_atr_multiple,
        )

    def new_state(partition: int) -> StrategyPartition:
        return StrategyPartition(new_book, settings.order_quantity, trading_state, exits, partition, account_held)

    in_flight = InFlight(BATCHES_IN_FLIGHT * config.batch_size, counters, "entries_in_flight_peak")

    def new_reader(partition: int) -> SnapshotReader:
        return SnapshotReader(bus, config, member, partition, new_state(partition), counters, in_flight)

    return PartitionedWorker(bus, config, member=member, counters=counters, new_state=new_state, new_reader=new_reader)


async def read_switches(bus: Bus) -> dict[str, bool]:
    """Strategies switched on or off at run time (``tradebot strategy enable|disable NAME``)."""
    saved = await bus.redis.hgetall(STRATEGY_SWITCHES_KEY)
    return {_text(name): _text(state) == "on" for name, state in saved.items()}


class Ruled(NamedTuple):
    """What the strategies read of the account at each poll (see :func:`ruled_state`)."""

    state: TradingState
    held: Holdings | None  # held_if_not_active


async def ruled_state(bus: Bus) -> Ruled:
    """The state the risk stage applies to the next order: the operator's, or a tripped rule's
    (the daily loss limit: REDUCING), read from the execution role's last commit; with what that
    commit holds for each strategy when it was not ACTIVE."""
    record, _ = await read_record(bus.redis)
    checkpoint = await read_checkpoint(bus.redis)
    state, _ = trading_state(record, checkpoint)
    return Ruled(state, held_if_not_active(checkpoint) if state is not TradingState.ACTIVE else None)


async def follow_rules(bus: Bus, ruled: list[Ruled], stop: asyncio.Event, interval_s: float) -> None:
    """Keep ``ruled[0]`` equal to :func:`ruled_state`, polling every ``interval_s``: a rule trips in
    the execution worker, and the strategies withhold what it would deny (a BUY while REDUCING)
    and forget the BUYs it denied."""
    while not await wait_or_stop(stop, interval_s):
        try:
            ruled[0] = await ruled_state(bus)
        except RECOVERABLE_REDIS_ERRORS as error:
            log.debug("tripped risk rules not refreshed: %s", error)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def follow_switches(bus: Bus, switches: dict[str, bool], stop: asyncio.Event) -> None:
    """Keep ``switches`` equal to what was switched at run time, polling every SWITCH_POLL_S. While
    Redis is away the last switches hold (the worker cannot read ticks then either), and the poll
    goes on: a switch made during the outage arrives once Redis is back."""
    unreachable = False
    while not stop.is_set():
        try:
            current = await read_switches(bus)
        except RECOVERABLE_REDIS_ERRORS as error:
            if not unreachable:
                log.warning("strategy switches not refreshed, keeping the last ones: %s", error)
            unreachable = True
            await wait_or_stop(stop, SWITCH_POLL_S)
            continue
        unreachable = False
        if current != switches:
            log.info(
                "strategy switches: %s", ", ".join(f"{n}={'on' if v else 'off'}" for n, v in sorted(current.items()))
            )
            switches.clear()
            switches.update(current)
        await wait_or_stop(stop, SWITCH_POLL_S)


async def run(settings: ReadySettings, *, stop: asyncio.Event, counters: Counter[str]) -> None:
    """Worker entry: run the strategies over the partitions this process wins."""
    bus = Bus.from_settings(settings)
    member = runtime.consumer_name()
    switches: dict[str, bool] = {}
    try:
        ruled = [await ruled_state(bus)]  # a restarted worker obeys a tripped rule before its first tick
        rules = follow_rules(bus, ruled, stop, poll_interval(settings.lease_ttl_ms))
        async with obeying_trading_state(
            bus.redis, member, STRATEGY_ROLE, settings.lease_ttl_ms, stop, follow_switches(bus, switches, stop), rules
        ) as watcher:  # a restarted worker obeys a halt before its first tick
            worker = strategy_worker(
                bus,
                settings,
                member,
                counters,
                switches,
                lambda: strictest(watcher.current.state, ruled[0].state),
                lambda: ruled[0].held,
            )
            runtime.settle_gc()  # started: what start-up made is left out of every collection
            await worker.run(stop=stop, max_messages=settings.max_messages, burst=settings.burst)
    finally:
        await bus.close()


def main() -> None:
    """``python -m tradebot.strategy.service``."""
    runtime.main(STRATEGY_ROLE, run)


if __name__ == "__main__":
    main()
