"""The risk stage on the Alpaca path: every order is screened on the broker's account before Alpaca sees it."""

from __future__ import annotations

from tradebot.common.bus import Bus
from tradebot.common.config import Settings
from tradebot.common.streams import ORDERS_NEW
from tradebot.risk import control
from tradebot.risk.views import read_checkpoint

from .broker_helpers import alpaca_settings, by_order, emulator, order, order_events
from .emulators.alpaca_trading import AlpacaTradingEmulator
from .test_broker_worker import execution, until_finished
from .test_risk_gaps import commit_gap

__all__ = ["emulator"]  # the fixture


async def test_orders_that_break_a_limit_are_denied_before_the_broker_and_in_flight_orders_count(
    bus: Bus, settings: Settings, emulator: AlpacaTradingEmulator
) -> None:
    emulator.book.cash = 1_500.0
    config = alpaca_settings(settings, emulator, risk_max_position_pct=0.0, risk_max_gross_exposure_pct=0.0)
    orders = [
        order(1),  # $1,000 of AAPL: cash is $1,500
        order(2, symbol="MSFT"),  # another $1,000: only $500 is left once the first is counted
        order(3, side="sell", quantity=5, symbol="NVDA"),  # nothing held
        order(4, side="sell", quantity=4),  # shrinks the AAPL bought by the first
    ]
    await bus.publish([(ORDERS_NEW, o) for o in orders])
    async with execution(config):
        await until_finished(bus, {"co-1", "co-2", "co-3", "co-4"})
    grouped = by_order(await order_events(bus))
    assert [e.status for e in grouped["co-1"]] == ["submitted", "accepted", "filled"]
    assert [e.status for e in grouped["co-4"]] == ["submitted", "accepted", "filled"]
    (cash,) = grouped["co-2"]
    (nothing_held,) = grouped["co-3"]
    assert cash.status == nothing_held.status == "denied"
    assert cash.reason is not None
    assert cash.reason.startswith("buying_power: buying 10 MSFT costs about $1,000.")
    assert cash.reason.endswith("cash is $500.00")
    assert nothing_held.reason is not None
    assert nothing_held.reason.startswith("no_position:")
    assert emulator.book.submissions == 2
    assert emulator.book.positions == {"AAPL": 6}


async def test_a_position_held_at_the_broker_counts_against_the_position_limit_exactly_at_its_threshold(
    bus: Bus, settings: Settings, emulator: AlpacaTradingEmulator
) -> None:
    emulator.book.cash = 9_000.0
    emulator.book.positions["AAPL"], emulator.book.cost["AAPL"] = 10.0, 1_000.0  # adopted at the first start
    config = alpaca_settings(settings, emulator, risk_max_position_pct=0.15)  # of $10,000 equity: $1,500
    await bus.publish([(ORDERS_NEW, order(1, quantity=6)), (ORDERS_NEW, order(2, quantity=5))])
    async with execution(config):
        await until_finished(bus, {"co-1", "co-2"})
    grouped = by_order(await order_events(bus))
    (over,) = grouped["co-1"]
    assert over.status == "denied"
    assert over.reason is not None
    assert over.reason.startswith("max_position: AAPL would be $1,600.00, over RISK_MAX_POSITION_PCT 15.00%")
    assert [e.status for e in grouped["co-2"]] == ["submitted", "accepted", "filled"]  # exactly $1,500
    assert emulator.book.positions == {"AAPL": 15}


async def test_a_recorded_data_gap_turns_the_alpaca_path_reducing_too(
    bus: Bus, settings: Settings, emulator: AlpacaTradingEmulator
) -> None:
    await commit_gap(bus, "AAPL")
    await bus.publish([(ORDERS_NEW, order(1))])
    async with execution(alpaca_settings(settings, emulator)):
        await until_finished(bus, {"co-1"})
    (denied,) = await order_events(bus)
    assert denied.status == "denied"
    assert denied.reason is not None
    assert denied.reason.startswith("reducing: trading is REDUCING (data gap in AAPL:")
    assert (await control.status(bus))["rule"]["code"] == "data_gap"
    assert emulator.book.submissions == 0


async def test_a_denied_order_redelivered_after_a_restart_is_not_decided_again(
    bus: Bus, settings: Settings, emulator: AlpacaTradingEmulator
) -> None:
    config = alpaca_settings(settings, emulator)
    nothing_held = order(1, side="sell")
    await bus.publish([(ORDERS_NEW, nothing_held)])
    async with execution(config):
        await until_finished(bus, {"co-1"})
    saved = await read_checkpoint(bus.redis)
    assert saved is not None
    assert "co-1" in saved["risk"]["decided"]  # the stage's memory is in the broker's checkpoint
    await bus.publish([(ORDERS_NEW, nothing_held), (ORDERS_NEW, order(2))])  # republished, then a new one
    async with execution(config):
        await until_finished(bus, {"co-2"})
    statuses = {cid: [e.status for e in evs] for cid, evs in by_order(await order_events(bus)).items()}
    assert statuses == {"co-1": ["denied"], "co-2": ["submitted", "accepted", "filled"]}
