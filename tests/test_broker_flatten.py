"""Flatten on the Alpaca path: open orders canceled at the broker, every position closed through the
risk stage, nothing closed twice, also with execution killed -9 in the middle (real Redis, the
Alpaca emulator through alpaca-py, real worker processes for the kills)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tradebot.common.bus import Bus
from tradebot.common.config import Settings
from tradebot.common.streams import ORDERS_NEW
from tradebot.execution import portfolio as views
from tradebot.risk import control
from tradebot.risk.views import read_checkpoint

from .broker_helpers import KEY, SECRET, alpaca_settings, by_order, emulator, order, order_events
from .emulators.alpaca_trading import AlpacaTradingEmulator
from .helpers import wait_until
from .test_broker_change_kills import alpaca_environment
from .test_broker_order_changes import once_each, resting, told
from .test_broker_worker import execution, until_finished
from .worker_processes import worker_processes

__all__ = ["emulator"]  # the fixture


def held(emulator: AlpacaTradingEmulator) -> dict[str, float]:
    return {symbol: quantity for symbol, quantity in emulator.book.positions.items() if abs(quantity) > 1e-9}


def closes(emulator: AlpacaTradingEmulator) -> list[str]:
    """The client order ids of the sells at the broker that no test order placed (the flatten's)."""
    return sorted(o["client_order_id"] for o in emulator.book.orders.values() if o["client_order_id"].startswith("co-")
                  and o["side"] == "sell" and not o["client_order_id"][3:].isdigit())  # fmt: skip


async def test_flatten_cancels_open_orders_and_leaves_no_position_at_alpaca(
    bus: Bus, settings: Settings, emulator: AlpacaTradingEmulator
) -> None:
    emulator.book.positions["TSLA"], emulator.book.cost["TSLA"] = 3.0, 300.0  # held before: adopted at start
    config = alpaca_settings(settings, emulator)
    await bus.publish([(ORDERS_NEW, order(1)), (ORDERS_NEW, order(2, quantity=5, symbol="MSFT"))])
    await bus.publish([(ORDERS_NEW, resting(3, symbol="NVDA"))])  # rests at the broker: 90 is not reached
    async with execution(config):
        await until_finished(bus, {"co-1", "co-2"})
        await wait_until(lambda: emulator.book.submissions == 3, 30, "the resting order at the broker")
        flatten = await control.apply_action(bus, "flatten", actor="test", reason="end of day")
        await wait_until(lambda: not held(emulator), 30, "no position at the broker")
        await until_finished(bus, {"co-3"})
        await bus.publish([(ORDERS_NEW, order(4))])  # after the flatten: REDUCING
        await until_finished(bus, {"co-4"})
    events = await order_events(bus)
    once_each(events)
    grouped = by_order(events)
    assert told(events, "co-3") == ["cancel_requested", "submitted", "accepted", "canceled"]
    assert [e.status for e in grouped["co-4"]] == ["denied"]
    assert grouped["co-4"][0].reason is not None
    assert grouped["co-4"][0].reason.startswith("reducing:")
    sold = {e.symbol: e.quantity for e in events if e.side == "sell" and e.status == "filled"}
    assert sold == {"AAPL": 10, "MSFT": 5, "TSLA": 3}
    assert len(closes(emulator)) == 3  # one close per position, ids derived from the flatten's
    assert all(o["side"] == "buy" or o["client_order_id"] in closes(emulator) for o in emulator.book.orders.values())
    assert flatten.action == "flatten"
    saved = await read_checkpoint(bus.redis)
    assert saved is not None
    assert views.positions(saved) == []  # /positions on the Alpaca path
    assert (await control.status(bus))["state"] == "REDUCING"


async def test_a_repeated_flatten_closes_nothing_twice(
    bus: Bus, settings: Settings, emulator: AlpacaTradingEmulator
) -> None:
    config = alpaca_settings(settings, emulator)
    await bus.publish([(ORDERS_NEW, order(1))])
    async with execution(config):
        await until_finished(bus, {"co-1"})
        flatten = await control.apply_action(bus, "flatten", actor="test", reason="drill")
        await wait_until(lambda: not held(emulator), 30, "no position at the broker")
        await bus.publish([(ORDERS_NEW, flatten)])  # the same flatten again (a redelivery, a replay)
        await control.apply_action(bus, "halt", actor="test", reason="a marker after it")
        await bus.publish([(ORDERS_NEW, order(2))])
        await until_finished(bus, {"co-2"})
    assert len(closes(emulator)) == 1
    assert held(emulator) == {}


@pytest.mark.timeout(300)  # above its own waits' deadlines, which bound a hang on a loaded machine
async def test_a_kill_during_flatten_doubles_no_close(bus: Bus, settings: Settings, tmp_path: Path) -> None:
    emulator = AlpacaTradingEmulator(key=KEY, secret=SECRET, slow_s=5.0).start()
    emulator.rest.hold_s = 5.0
    try:
        with worker_processes(tmp_path) as workers:
            env = alpaca_environment(settings, emulator)
            execution_process = workers.start("tradebot.execution.service", env)
            await bus.publish([(ORDERS_NEW, order(1)), (ORDERS_NEW, order(2, quantity=5, symbol="MSFT"))])
            await bus.publish([(ORDERS_NEW, resting(3, symbol="NVDA"))])
            await wait_until(lambda: held(emulator) == {"AAPL": 10, "MSFT": 5}, 30, "both buys filled")
            await wait_until(lambda: emulator.book.submissions == 3, 30, "the resting order at the broker")
            emulator.fault_next_change("hold")  # the cancel is applied; its answer comes after the kill
            emulator.fault_next("slow")  # the first close is placed; its answer comes after the kill
            await control.apply_action(bus, "flatten", actor="test", reason="kill drill")
            await wait_until(lambda: emulator.rest.change_requests["DELETE"] == 1, 30, "the cancel applied")
            workers.kill(execution_process)  # between the cancel and its answer
            execution_process = workers.start("tradebot.execution.service", env)
            await wait_until(lambda: emulator.book.submissions == 4, 30, "the first close at the broker")
            workers.kill(execution_process)  # between the first close and its answer
            workers.start("tradebot.execution.service", env)
            await wait_until(lambda: not held(emulator), 60, "no position at the broker")
            await wait_until(lambda: _all_told(bus), 30, "every close told filled")
    finally:
        emulator.stop()
    events = await order_events(bus)
    once_each(events)
    assert len(closes(emulator)) == 2  # AAPL and MSFT, each once
    assert emulator.book.submissions == 5
    assert emulator.rest.change_requests["DELETE"] == 1, "the restarted worker sent the cancel once"
    assert held(emulator) == {}  # a doubled close would leave a short position
    assert told(events, "co-3") == ["cancel_requested", "submitted", "accepted", "canceled"]


async def _all_told(bus: Bus) -> bool:
    events = await order_events(bus)
    return sum(1 for e in events if e.side == "sell" and e.status == "filled") == 2
