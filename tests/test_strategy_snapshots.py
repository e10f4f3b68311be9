"""The strategy's state as a snapshot plus replay (tradebot/common/snapshots.py), on a real Redis:
a crash long after the last snapshot, a switch or a trading-state change between snapshots, and
retention keeping exactly what a snapshot still needs."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime

import pytest
from redis.asyncio.connection import AbstractConnection

from tests.helpers import wait_until
from tradebot.common.bus import Bus
from tradebot.common.config import Settings
from tradebot.common.models import Event, Order, Signal, Tick
from tradebot.common.partitions import ReaderEnd
from tradebot.common.runtime import CANCEL_ATTEMPTS, CANCEL_WAIT_S
from tradebot.common.snapshots import SNAPSHOT_AT_FIELD, SNAPSHOT_INPUTS_FIELD, SnapshotReader
from tradebot.common.streams import (
    STRATEGY_ROLE,
    checkpoint_parts_key,
    hold_key,
    lease_key,
    order_stream,
    signal_stream,
    tick_stream,
)
from tradebot.market_data.mock_feed import MockFeed, stepping_clock
from tradebot.risk.state import TradingState
from tradebot.risk.views import Holdings
from tradebot.strategy import service
from tradebot.strategy.service import StrategyPartition

START = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
SYMBOLS = ["AAPL", "MSFT", "NVDA", "AMZN"]
MEMBER = "worker-1"
STREAM = tick_stream(0)
# No snapshot by count or time, nor for quiet: a reader waits this long before it counts as quiet.
NEVER = {"strategy_snapshot_entries": 10**6, "strategy_snapshot_s": 3600.0, "bus_block_ms": 60_000}


def snapshot_settings(settings: Settings, **update: object) -> Settings:
    return settings.model_copy(update={"symbols": SYMBOLS, "tick_partitions": 1, "bus_batch_size": 16, **update})


class Inputs:
    """The inputs outside the ticks a test changes: the switches (shared with the book) and the state."""

    def __init__(self) -> None:
        self.switches: dict[str, bool] = {}
        self.state = TradingState.ACTIVE
        self.held: Holdings | None = None  # the account's holdings the worker read while not ACTIVE

    def trading_state(self) -> TradingState:
        return self.state

    def account_held(self) -> Holdings | None:
        return self.held


class Run:
    """One strategy reader of partition 0 holding its lease, as strategy_worker builds it."""

    def __init__(self, bus: Bus, settings: Settings, inputs: Inputs):
        self.bus, self.counters, self.stop = bus, Counter[str](), asyncio.Event()
        worker = service.strategy_worker(
            bus, settings, MEMBER, self.counters, inputs.switches, inputs.trading_state, inputs.account_held
        )
        assert worker.new_reader is not None
        reader = worker.new_reader(0)
        assert isinstance(reader, SnapshotReader)
        self.reader = reader
        self.task: asyncio.Task[ReaderEnd] | None = None

    async def start(self) -> None:
        await self.bus.redis.set(lease_key(STRATEGY_ROLE, 0), MEMBER, px=120_000)
        self.task = asyncio.create_task(self.reader.run(self.stop, burst=False, max_messages=None))

    async def until_handled(self, count: int) -> None:
        async def handled() -> None:
            while self.counters["handled"] < count:
                assert self.task is not None
                assert not self.task.done(), "the reader ended early"
                await asyncio.sleep(0.02)

        await asyncio.wait_for(handled(), timeout=60)

    async def crash(self) -> None:
        """Gone at an await, like a kill -9: no stop, no last snapshot."""
        assert self.task is not None
        # Cancelled until it ends, as the runtime cancels a worker past its grace period: at load 23
        # one cancellation was not the end of the reader (it read on until its lease expired, LOST).
        for _ in range(CANCEL_ATTEMPTS):
            self.task.cancel()
            done, _ = await asyncio.wait({self.task}, timeout=CANCEL_WAIT_S)
            if done:
                break
        # (a reader that ended on a Redis error meanwhile wrote no snapshot either)
        [ended] = await asyncio.gather(self.task, return_exceptions=True)
        assert isinstance(ended, asyncio.CancelledError) or ended is ReaderEnd.ERROR

    async def finish(self) -> None:
        self.stop.set()
        assert self.task is not None
        assert await asyncio.wait_for(self.task, timeout=60) is ReaderEnd.STOPPED


def uninterrupted(
    settings: Settings, ticks: list[Tick], changes: dict[int, Inputs] | None = None
) -> tuple[list[Event], str]:
    """What one worker that never stops publishes (signals and orders, in order) and its final state;
    ``changes``: from tick index i on, those inputs."""
    inputs = Inputs()
    new_book = service.book_factory(settings, inputs.switches)
    state = StrategyPartition(new_book, settings.order_quantity, inputs.trading_state, account_held=inputs.account_held)
    published: list[Event] = []
    for index, tick in enumerate(ticks):
        if changes and index in changes:
            inputs.switches.clear()
            inputs.switches.update(changes[index].switches)
            inputs.state, inputs.held = changes[index].state, changes[index].held
        published += [event for _, event in state.apply([tick])]
    return published, state.checkpoint()


async def published(bus: Bus) -> list[Event]:
    """Signals and orders of partition 0, each stream in order (the test compares them per kind)."""
    return await bus.entries(signal_stream(0)) + await bus.entries(order_stream(0))


def by_kind(events: list[Event]) -> tuple[list[str], list[str]]:
    signals = [event.id for event in events if isinstance(event, Signal)]
    orders = [event.id for event in events if isinstance(event, Order)]
    return signals, orders


async def publish(bus: Bus, ticks: list[Tick], per_entry: int = 1) -> None:
    """One tick per entry unless told (the tests count entries as ticks)."""
    await Bus(bus.redis, ticks_per_entry=per_entry).publish((STREAM, tick) for tick in ticks)


async def snapshot_fields(bus: Bus) -> dict[str, str]:
    parts: dict[str, str] = await bus.redis.hgetall(checkpoint_parts_key(STRATEGY_ROLE, 0))
    return parts


async def test_a_restart_long_after_the_last_snapshot_publishes_exactly_what_an_uninterrupted_run_does(
    bus: Bus, settings: Settings
) -> None:
    ticks = MockFeed(SYMBOLS, 11, clock=stepping_clock(START)).take(1600)
    expected, expected_state = uninterrupted(settings, ticks)
    assert len(by_kind(expected)[0]) > 10  # enough decisions to tell a wrong replay apart
    inputs, config = Inputs(), snapshot_settings(settings, **NEVER)
    await publish(bus, ticks[:1000], per_entry=16)  # as the feed batches them
    first = Run(bus, config, inputs)
    await first.start()
    await first.until_handled(1000)
    await first.crash()
    fields = await snapshot_fields(bus)
    assert json.loads(fields[SNAPSHOT_AT_FIELD])[STREAM] == "0-0"  # only the fresh partition's snapshot
    assert await bus.last_delivered_id(STREAM, STRATEGY_ROLE) == (await bus.redis.xrevrange(STREAM, count=1))[0][0]
    await publish(bus, ticks[1000:], per_entry=16)
    second = Run(bus, config, inputs)
    await second.start()
    await second.until_handled(600)
    assert second.counters["replayed"] == 1000
    await second.finish()
    assert by_kind(await published(bus)) == by_kind(expected)  # none lost, none twice, same order
    assert json.loads(second.reader.state.checkpoint()) == json.loads(expected_state)


def cancel_once_sent(monkeypatch: pytest.MonkeyPatch, task: asyncio.Task[ReaderEnd], marker: str) -> list[bool]:
    """The race a loaded machine loses now and then, made certain: ``task`` is cancelled just after
    the next command holding ``marker`` went out, before redis-py's ``asyncio.wait_for`` around the
    send resumes (Python 3.11's wait_for then returns as if nothing happened). The list is true once
    the cancellation landed."""
    landed: list[bool] = []
    send = AbstractConnection._send_packed_command

    async def sending(connection: AbstractConnection, command: list[bytes]) -> None:
        await send(connection, command)
        if not landed and any(marker.encode() in bytes(part) for part in command):
            landed.append(task.cancel())

    monkeypatch.setattr(AbstractConnection, "_send_packed_command", sending)
    return landed


@pytest.mark.parametrize("during", ["batch", "snapshot"])
async def test_a_reader_cancelled_during_a_redis_command_ends_and_a_restart_decides_the_same(
    bus: Bus, settings: Settings, monkeypatch: pytest.MonkeyPatch, during: str
) -> None:
    ticks = MockFeed(SYMBOLS, 7, clock=stepping_clock(START)).take(800)
    expected, expected_state = uninterrupted(settings, ticks)
    # a snapshot after every batch
    inputs, config = Inputs(), snapshot_settings(settings, strategy_snapshot_entries=1)
    await publish(bus, ticks[:200], per_entry=16)
    first = Run(bus, config, inputs)
    await first.start()
    await first.until_handled(200)
    assert first.task is not None
    # a batch's fenced read or commit (the reader's scripts), or a snapshot (it writes the parts' key)
    marker = "EVALSHA" if during == "batch" else checkpoint_parts_key(STRATEGY_ROLE, 0)
    landed = cancel_once_sent(monkeypatch, first.task, marker)
    await publish(bus, ticks[200:400], per_entry=16)
    done, _ = await asyncio.wait({first.task}, timeout=30)  # on main it read on until its lease expired
    assert landed == [True]
    assert done, "the cancelled reader is still reading"
    assert first.task.cancelled()
    monkeypatch.undo()
    await publish(bus, ticks[400:], per_entry=16)
    second = Run(bus, config, inputs)
    await second.start()
    last = (await bus.redis.xrevrange(STREAM, count=1))[0][0]

    async def at_end() -> bool:
        return bool(await bus.last_delivered_id(STREAM, STRATEGY_ROLE) == last)

    await wait_until(at_end, what="every tick applied and committed")
    await second.finish()
    assert by_kind(await published(bus)) == by_kind(expected)  # none lost, none twice, same order
    assert json.loads(second.reader.state.checkpoint()) == json.loads(expected_state)


@pytest.mark.parametrize("change", ["switch", "trading_state"])
async def test_a_change_of_inputs_forces_a_snapshot_and_a_restart_after_it_decides_the_same(
    bus: Bus, settings: Settings, change: str
) -> None:
    ticks = MockFeed(SYMBOLS, 5, clock=stepping_clock(START)).take(1500)
    changed = Inputs()
    if change == "switch":
        changed.switches[f"ma_crossover_{settings.short_window}_{settings.long_window}"] = False
    else:
        changed.state = TradingState.HALTED
    expected, expected_state = uninterrupted(settings, ticks, {600: changed, 1100: Inputs()})
    assert by_kind(expected) != by_kind(uninterrupted(settings, ticks)[0])  # the change changes decisions
    inputs, config = Inputs(), snapshot_settings(settings, **NEVER)
    await publish(bus, ticks[:600])
    first = Run(bus, config, inputs)
    await first.start()
    await first.until_handled(600)
    at_change = await bus.last_delivered_id(STREAM, STRATEGY_ROLE)
    snapshots = first.counters["snapshots"]
    inputs.switches.update(changed.switches)
    inputs.state = changed.state
    await publish(bus, ticks[600:1100])
    await first.until_handled(1100)
    assert first.counters["snapshots"] == snapshots + 1  # forced by the change, before its first batch
    fields = await snapshot_fields(bus)
    assert json.loads(fields[SNAPSHOT_AT_FIELD]) == {STREAM: at_change}
    assert fields[SNAPSHOT_INPUTS_FIELD] == first.reader.state.inputs()
    await first.crash()
    inputs.switches.clear()  # changed back while no worker ran: the replay must use the recorded ones
    inputs.state = TradingState.ACTIVE
    await publish(bus, ticks[1100:])
    second = Run(bus, config, inputs)
    await second.start()
    await second.until_handled(400)
    assert second.counters["replayed"] == 500
    await second.finish()
    assert by_kind(await published(bus)) == by_kind(expected)
    assert json.loads(second.reader.state.checkpoint()) == json.loads(expected_state)


async def test_positions_dropped_for_the_account_are_in_a_snapshot_and_never_replayed(
    bus: Bus, settings: Settings
) -> None:
    """While REDUCING the book drops the BUYs the account does not show (denied): an input from
    outside the ticks, so the snapshot forced before the batch holds the drop; a restart replays the
    ticks after it without asking the account again (which by then may say anything)."""
    ticks = MockFeed(SYMBOLS, 5, clock=stepping_clock(START)).take(1000)
    denied = Inputs()
    denied.state, denied.held = TradingState.REDUCING, {}  # the account holds none of the book's BUYs
    expected, expected_state = uninterrupted(settings, ticks, {600: denied, 650: Inputs()})
    kept = Inputs()
    kept.state = TradingState.REDUCING  # the same state without the account's word: nothing dropped
    assert by_kind(expected) != by_kind(uninterrupted(settings, ticks, {600: kept, 650: Inputs()})[0])
    inputs, config = Inputs(), snapshot_settings(settings, **NEVER)
    await publish(bus, ticks[:600])
    first = Run(bus, config, inputs)
    await first.start()
    await first.until_handled(600)
    inputs.state, inputs.held = denied.state, denied.held
    await publish(bus, ticks[600:650])
    await first.until_handled(650)
    assert first.reader.state.forgotten == 1
    await first.crash()
    inputs.state, inputs.held = TradingState.ACTIVE, None  # resumed while no worker ran
    await publish(bus, ticks[650:])
    second = Run(bus, config, inputs)
    await second.start()
    await second.until_handled(350)
    assert second.counters["replayed"] == 50
    await second.finish()
    assert by_kind(await published(bus)) == by_kind(expected)  # no SELL of a dropped BUY after the restart
    assert json.loads(second.reader.state.checkpoint()) == json.loads(expected_state)


async def test_retention_keeps_what_the_snapshot_needs_and_trims_it_after_the_next(
    bus: Bus, settings: Settings
) -> None:
    ticks = MockFeed(SYMBOLS, 3, clock=stepping_clock(START)).take(1000)
    await publish(bus, ticks[:200])
    run = Run(bus, snapshot_settings(settings, **NEVER), Inputs())
    await run.start()
    await run.until_handled(200)
    await run.finish()  # a stop writes a snapshot: the hold is at the 200th tick
    held = await bus.redis.hget(hold_key(STREAM), STRATEGY_ROLE)
    assert held == await bus.last_delivered_id(STREAM, STRATEGY_ROLE)
    await publish(bus, ticks[200:])
    run = Run(bus, snapshot_settings(settings, **NEVER), Inputs())
    await run.start()
    await run.until_handled(800)  # the group is at the end, the snapshot still at the 200th tick
    assert await bus.last_delivered_id(STREAM, STRATEGY_ROLE) == (await bus.redis.xrevrange(STREAM, count=1))[0][0]
    await bus.trim_consumed(STREAM, [STRATEGY_ROLE])
    assert len(await bus.redis.xrange(STREAM, min=f"({held}", max="+")) == 800  # every entry after it kept
    assert await bus.redis.xlen(STREAM) < 1000  # what came before it may go
    await run.finish()  # the next snapshot: nothing is held any more
    assert await bus.redis.hget(hold_key(STREAM), STRATEGY_ROLE) == await bus.last_delivered_id(STREAM, STRATEGY_ROLE)
    await bus.trim_consumed(STREAM, [STRATEGY_ROLE])
    assert await bus.redis.xlen(STREAM) <= 100  # whole nodes only (XTRIM MINID ~): at most the last


async def test_a_hold_never_keeps_less_than_a_group_needs_nor_outlives_its_group(bus: Bus) -> None:
    ticks = MockFeed(SYMBOLS, 3, clock=stepping_clock(START)).take(600)
    await bus.ensure_group(STREAM, "storage")
    await publish(bus, ticks)
    ids = [entry_id for entry_id, _ in await bus.redis.xrange(STREAM)]
    await bus.ensure_group(STREAM, STRATEGY_ROLE)
    await bus.redis.xgroup_setid(STREAM, STRATEGY_ROLE, ids[-1])
    await bus.redis.hset(hold_key(STREAM), STRATEGY_ROLE, ids[-1])  # the snapshot is ahead of storage
    await bus.trim_consumed(STREAM, ["storage", STRATEGY_ROLE])
    assert await bus.redis.xlen(STREAM) == 600  # storage has read nothing
    await bus.redis.xgroup_setid(STREAM, "storage", ids[-1])
    await bus.redis.hset(hold_key(STREAM), STRATEGY_ROLE, ids[299])
    await bus.trim_consumed(STREAM, ["storage", STRATEGY_ROLE])
    assert len(await bus.redis.xrange(STREAM, min=f"({ids[299]}", max="+")) == 300
    assert await bus.redis.xlen(STREAM) < 600
    await bus.redis.xgroup_destroy(STREAM, STRATEGY_ROLE)  # a hold of a group that is gone holds nothing
    await bus.trim_consumed(STREAM, ["storage"])
    assert await bus.redis.xlen(STREAM) <= 100


async def test_parts_of_the_release_before_are_taken_over_as_of_the_groups_position(
    bus: Bus, settings: Settings
) -> None:
    ticks = MockFeed(SYMBOLS, 9, clock=stepping_clock(START)).take(900)
    expected, expected_state = uninterrupted(settings, ticks)
    old = StrategyPartition(service.book_factory(settings), settings.order_quantity)
    earlier = [event for tick in ticks[:400] for _, event in old.apply([tick])]
    await publish(bus, ticks[:400])
    await bus.ensure_group(STREAM, STRATEGY_ROLE)
    await bus.redis.xgroup_setid(STREAM, STRATEGY_ROLE, "$")  # the old release read these ...
    await bus.redis.hset(checkpoint_parts_key(STRATEGY_ROLE, 0), mapping={**old.parts(), "_v": "1"})  # ... and wrote
    at = await bus.last_delivered_id(STREAM, STRATEGY_ROLE)
    await publish(bus, ticks[400:])
    run = Run(bus, snapshot_settings(settings, **NEVER), Inputs())
    await run.start()
    await run.until_handled(500)
    assert run.counters["replayed"] == 0
    fields = await snapshot_fields(bus)
    assert json.loads(fields[SNAPSHOT_AT_FIELD]) == {STREAM: at}  # taken over: a snapshot as of the group
    await run.crash()
    again = Run(bus, snapshot_settings(settings, **NEVER), Inputs())
    await again.start()
    await again.until_handled(0)
    await again.finish()
    assert again.counters["replayed"] == 500
    assert by_kind(earlier + await published(bus)) == by_kind(expected)
    assert json.loads(again.reader.state.checkpoint()) == json.loads(expected_state)


async def test_past_the_memory_budget_a_reader_snapshots_and_so_releases_what_it_holds(
    bus: Bus, settings: Settings
) -> None:
    ticks = MockFeed(SYMBOLS, 3, clock=stepping_clock(START)).take(300)
    await publish(bus, ticks)
    bus.memory_budget_bytes = 1  # always past it
    run = Run(bus, snapshot_settings(settings, **NEVER), Inputs())
    await run.start()
    await run.until_handled(300)
    assert run.counters["snapshots"] >= 2  # the fresh partition's, and the budget's after the first batch
    fields = await snapshot_fields(bus)
    assert json.loads(fields[SNAPSHOT_AT_FIELD])[STREAM] != "0-0"
    assert await bus.redis.hget(hold_key(STREAM), STRATEGY_ROLE) == json.loads(fields[SNAPSHOT_AT_FIELD])[STREAM]
    await run.crash()
