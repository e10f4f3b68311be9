"""The execution worker trading at the Alpaca emulator through the real alpaca-py, in process."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from tradebot.common.bus import Bus
from tradebot.common.bus.wire import decode
from tradebot.common.config import Settings
from tradebot.common.models import ControlEvent, Signal
from tradebot.common.streams import CONTROL_EVENTS, ORDERS_NEW, dead_letter_stream
from tradebot.execution import service
from tradebot.risk import control
from tradebot.risk.store import seen_versions

from .broker_helpers import (
    alpaca_settings,
    by_order,
    emulator,
    finished,
    order,
    order_events,
    positions_from,
)
from .emulators.alpaca_trading import AlpacaTradingEmulator
from .helpers import wait_until

__all__ = ["emulator"]  # the fixture


@asynccontextmanager
async def execution(settings: Settings) -> AsyncIterator[Counter]:
    stop, counters = asyncio.Event(), Counter()
    task = asyncio.create_task(service.run(settings, stop=stop, counters=counters))
    try:
        yield counters
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


async def rule_events(bus: Bus) -> list[ControlEvent]:
    events = [decode(fields) for _, fields in await bus.redis.xrange(CONTROL_EVENTS)]
    return [e for e in events if isinstance(e, ControlEvent) and e.action == "rule"]


async def until_finished(bus: Bus, client_ids: set[str], timeout: float = 30.0) -> None:
    async def done() -> bool:
        return finished(await order_events(bus), client_ids)

    await wait_until(done, timeout, f"terminal events of {len(client_ids)} orders")


async def test_a_market_order_lives_submitted_accepted_partially_filled_filled(
    bus: Bus, settings: Settings, emulator: AlpacaTradingEmulator
) -> None:
    emulator.book.partial_fills, emulator.book.drift = 3, 0.5
    await bus.publish([(ORDERS_NEW, order(1, quantity=9))])
    async with execution(alpaca_settings(settings, emulator)):
        await until_finished(bus, {"co-1"})
    events = await order_events(bus)
    assert [e.status for e in events] == ["submitted", "accepted", "partially_filled", "partially_filled", "filled"]
    fills = [e for e in events if e.status in ("partially_filled", "filled")]
    assert [(e.quantity, e.price) for e in fills] == [(3, 100.0), (3, 100.5), (3, 101.0)]
    assert emulator.book.positions == {"AAPL": 9}


@pytest.mark.parametrize("muted", [False, True], ids=["stream", "no-stream"])
@pytest.mark.parametrize("fault", ["drop", "500", "slow", "duplicate", "429"])
async def test_an_ambiguous_or_refused_submission_never_becomes_two_orders(
    bus: Bus, settings: Settings, emulator: AlpacaTradingEmulator, fault: str, muted: bool
) -> None:
    emulator.stream.muted = muted  # without updates, only lookups and polls can settle the outcome
    emulator.fault_next(fault)
    await bus.publish([(ORDERS_NEW, order(1)), (ORDERS_NEW, order(2, side="sell", quantity=4))])
    async with execution(alpaca_settings(settings, emulator)) as counters:
        await until_finished(bus, {"co-1", "co-2"})
    assert emulator.book.submissions == 2  # one broker order per order of ours
    assert emulator.rest.faults_served[fault] == 1
    events = by_order(await order_events(bus))
    for client_id in ("co-1", "co-2"):
        statuses = [e.status for e in events[client_id]]
        assert statuses == ["submitted", "accepted", "filled"], (client_id, statuses)
    assert positions_from(await order_events(bus)) == emulator.book.positions == {"AAPL": 6}
    if fault in ("drop", "500", "slow", "duplicate"):
        # at least the scripted one: on a loaded machine an ordinary answer can also outlast the 0.5 s timeout
        assert counters[f"submit_{'duplicate' if fault == 'duplicate' else 'ambiguous'}"] >= 1
        if muted:
            assert emulator.rest.requests_to("/v2/orders:by_client_order_id"), "settled by a lookup"
        assert emulator.book.duplicate_submissions == 0, "nothing was sent again: the lookup found it"


async def test_a_rejected_order_ends_rejected_with_the_reason(
    bus: Bus, settings: Settings, emulator: AlpacaTradingEmulator
) -> None:
    await bus.publish([(ORDERS_NEW, order(1))])
    emulator.fault_next("403")
    async with execution(alpaca_settings(settings, emulator)):
        await until_finished(bus, {"co-1"})
    (submitted, rejected) = await order_events(bus)
    assert (submitted.status, rejected.status) == ("submitted", "rejected")
    assert rejected.reason is not None
    assert "insufficient buying power" in rejected.reason
    assert emulator.book.submissions == 0


async def test_limit_orders_rest_and_cancels_and_expiries_end_them(
    bus: Bus, settings: Settings, emulator: AlpacaTradingEmulator
) -> None:
    resting = order(1, order_type="limit", limit_price=90.0)
    stop = order(2, side="sell", quantity=5, order_type="stop", stop_price=95.0, time_in_force="gtc")
    ioc = order(3, order_type="limit", limit_price=50.0, time_in_force="ioc")
    await bus.publish([(ORDERS_NEW, o) for o in (resting, stop, ioc)])
    async with execution(alpaca_settings(settings, emulator)):
        await until_finished(bus, {"co-3"})
        await wait_until(lambda: emulator.book.submissions == 3, 30, "three orders at the broker")
        emulator.book.set_price("AAPL", 89.0)  # the buy limit fills, the sell stop triggers
        await until_finished(bus, {"co-1", "co-2"})
        await bus.publish([(ORDERS_NEW, order(4, order_type="limit", limit_price=10.0))])
        await wait_until(lambda: emulator.book.find_by_client_id("co-4") is not None, 30, "co-4 at the broker")
        assert emulator.book.expire_day_orders() == 1
        await until_finished(bus, {"co-4"})
    final = {cid: [e.status for e in evs][-1] for cid, evs in by_order(await order_events(bus)).items()}
    assert final == {"co-1": "filled", "co-2": "filled", "co-3": "canceled", "co-4": "expired"}


async def test_fills_missed_while_the_stream_is_down_are_polled_and_evented_once(
    bus: Bus, settings: Settings, emulator: AlpacaTradingEmulator
) -> None:
    emulator.book.partial_fills = 4
    emulator.stream.drop_after_fills = 1  # every fill update is followed by a dropped connection
    await bus.publish([(ORDERS_NEW, order(n, quantity=8)) for n in range(5)])
    async with execution(alpaca_settings(settings, emulator)):
        await until_finished(bus, {f"co-{n}" for n in range(5)})
    events = await order_events(bus)
    assert emulator.stream.drops >= 1
    assert len({e.id for e in events}) == len(events)
    for evs in by_order(events).values():
        assert sum(e.quantity for e in evs if e.status in ("partially_filled", "filled")) == 8
        assert [e.status for e in evs].count("filled") == 1
    assert positions_from(events) == emulator.book.positions == {"AAPL": 40}


async def test_orders_and_fills_at_the_broker_while_execution_was_down_are_adopted_at_start(
    bus: Bus, settings: Settings, emulator: AlpacaTradingEmulator
) -> None:
    config = alpaca_settings(settings, emulator)
    await bus.publish([(ORDERS_NEW, order(1, order_type="limit", limit_price=90.0, time_in_force="gtc"))])
    async with execution(config):
        await wait_until(lambda: emulator.book.find_by_client_id("co-1") is not None, 30, "co-1 at the broker")
    emulator.book.set_price("AAPL", 80.0)  # fills while no execution runs
    external = {"symbol": "MSFT", "qty": "3", "side": "buy", "type": "market", "time_in_force": "day"}
    emulator.book.submit({**external, "client_order_id": "placed-by-hand"})
    await wait_until(lambda: emulator.book.positions.get("MSFT") == 3, 30, "the external fill")
    async with execution(config):
        await until_finished(bus, {"co-1", "placed-by-hand"})
    events = await order_events(bus)
    assert [e.status for e in by_order(events)["co-1"]] == ["submitted", "accepted", "filled"]
    assert positions_from(events) == emulator.book.positions == {"AAPL": 10, "MSFT": 3}


@pytest.mark.timeout(240)  # above its own waits' deadlines, which bound a hang on a loaded machine
async def test_a_position_the_broker_does_not_share_halts_trading_until_the_operator_resumes(
    bus: Bus, settings: Settings, emulator: AlpacaTradingEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    config = alpaca_settings(settings, emulator)
    async with execution(config):
        await wait_until(lambda: emulator.rest.requests_to("/v2/positions"), 30, "the first reconciliation")
    # Behind our back (not through an order the stream or the order list would show), the broker moves.
    emulator.book.positions["NVDA"], emulator.book.cost["NVDA"] = 7.0, 700.0
    async with execution(config):
        await wait_until(lambda: "positions disagree" in caplog.text, 30, "the halt line")
        await wait_until(lambda: rule_events(bus), 30, "the broker_mismatch rule's control event")
        status = await control.status(bus)
        assert status["state"] == "HALTED"
        assert status["rule"]["code"] == "broker_mismatch"
        assert "NVDA ours 0 broker 7" in status["rule"]["reason"]
        await bus.publish([(ORDERS_NEW, order(1))])
        await until_finished(bus, {"co-1"})
        (denied,) = await order_events(bus)
        assert denied.status == "denied"
        assert denied.reason
        assert denied.reason.startswith("halted: trading is HALTED (positions disagree")
        assert "NVDA ours 0 broker 7" in denied.reason
        # The operator puts the broker right and resumes: orders flow again.
        del emulator.book.positions["NVDA"]
        await wait_until(lambda: "the broker agrees again" in caplog.text, 30, "a reconciliation that agrees")
        resumed = await control.apply_action(bus, "resume", actor="test", reason="NVDA was a manual trade, now undone")

        async def seen() -> bool:
            return resumed.version in (await seen_versions(bus.redis)).values()

        await wait_until(seen, 30, "the execution worker to see the resume")
        await bus.publish([(ORDERS_NEW, order(2))])
        await until_finished(bus, {"co-2"})
    assert [e.status for e in by_order(await order_events(bus))["co-2"]] == ["submitted", "accepted", "filled"]
    assert emulator.book.submissions == 1
    assert sum("no new orders are sent" in r.getMessage() for r in caplog.records) == 1
    (rule,) = await rule_events(bus)
    assert (rule.action, rule.state, rule.actor) == ("rule", "HALTED", "risk:broker_mismatch")
    assert (await control.status(bus))["state"] == "ACTIVE"


async def test_an_order_replaced_at_the_broker_ends_replaced_and_its_successor_is_followed(
    bus: Bus, settings: Settings, emulator: AlpacaTradingEmulator
) -> None:
    await bus.publish([(ORDERS_NEW, order(1, order_type="limit", limit_price=90.0, time_in_force="gtc"))])
    async with execution(alpaca_settings(settings, emulator)):
        await wait_until(lambda: emulator.book.find_by_client_id("co-1") is not None, 30, "co-1 at the broker")
        old = emulator.book.find_by_client_id("co-1")
        assert old is not None
        emulator.book.replace(old["id"], {"limit_price": "120", "client_order_id": "co-1-r1"})
        await until_finished(bus, {"co-1", "co-1-r1"})
    grouped = by_order(await order_events(bus))
    assert [e.status for e in grouped["co-1"]] == ["submitted", "accepted", "replaced"]
    assert [e.status for e in grouped["co-1-r1"]] == ["accepted", "filled"]
    assert positions_from(await order_events(bus)) == emulator.book.positions == {"AAPL": 10}


async def test_while_the_market_is_closed_only_orders_that_may_wait_are_sent(
    bus: Bus, settings: Settings, emulator: AlpacaTradingEmulator
) -> None:
    emulator.book.market_open = False
    waiting = [order(2, time_in_force="gtc"), order(3, time_in_force="opg"), order(4, time_in_force="cls")]
    await bus.publish([(ORDERS_NEW, order(1)), *((ORDERS_NEW, o) for o in waiting)])
    async with execution(alpaca_settings(settings, emulator)):
        await until_finished(bus, {"co-1", "co-2", "co-3", "co-4"})
    grouped = by_order(await order_events(bus))
    sent = [emulator.book.find_by_client_id(f"co-{n}") for n in (2, 3, 4)]
    assert [o["time_in_force"] for o in sent if o] == ["gtc", "opg", "cls"]  # the auctions' orders wait for them
    assert [e.status for e in grouped["co-1"]] == ["submitted", "rejected"]
    assert grouped["co-1"][-1].reason
    assert grouped["co-1"][-1].reason.startswith("market closed (next open")
    assert [e.status for e in grouped["co-2"]] == ["submitted", "accepted", "filled"]
    assert emulator.rest.requests_to("/v2/clock")


async def test_a_trailing_stop_by_dollars_or_percent_reaches_alpaca_as_asked_and_fills_on_the_turn(
    bus: Bus, settings: Settings, emulator: AlpacaTradingEmulator
) -> None:
    buy = order(1, quantity=10)
    by_dollars = order(2, side="sell", quantity=5, order_type="trailing_stop", trail_price=2.0, time_in_force="gtc")
    by_percent = order(3, side="sell", quantity=5, order_type="trailing_stop", trail_percent=5.0, time_in_force="gtc")
    await bus.publish([(ORDERS_NEW, o) for o in (buy, by_dollars, by_percent)])
    async with execution(alpaca_settings(settings, emulator)):
        await until_finished(bus, {"co-1"})
        await wait_until(lambda: emulator.book.submissions == 3, 30, "three orders at the broker")
        placed = [emulator.book.find_by_client_id(cid) for cid in ("co-2", "co-3")]
        assert [(o["type"], o["trail_price"], o["trail_percent"]) for o in placed if o] == [
            ("trailing_stop", "2", None),
            ("trailing_stop", None, "5"),
        ]
        emulator.book.set_price("AAPL", 110.0)  # the marks rise
        for cid in ("co-2", "co-3"):
            await wait_until(
                lambda c=cid: (emulator.book.find_by_client_id(c) or {}).get("hwm") == "110", 10, "the mark"
            )
        emulator.book.set_price("AAPL", 108.0)  # 110 - 2: the dollar trail fills, 5 % (104.5) not yet
        await until_finished(bus, {"co-2"})
        emulator.book.set_price("AAPL", 104.5)
        await until_finished(bus, {"co-3"})
    fills = {
        cid: [(e.status, e.price) for e in evs if e.status == "filled"]
        for cid, evs in by_order(await order_events(bus)).items()
    }
    assert (fills["co-2"], fills["co-3"]) == ([("filled", 108.0)], [("filled", 104.5)])


async def test_take_profit_and_stop_loss_make_a_bracket_at_the_broker(
    bus: Bus, settings: Settings, emulator: AlpacaTradingEmulator
) -> None:
    bracket = order(1, take_profit_price=120.0, stop_loss_price=90.0, time_in_force="gtc")
    oto = order(2, stop_loss_price=90.0, time_in_force="gtc")
    await bus.publish([(ORDERS_NEW, bracket), (ORDERS_NEW, oto)])
    async with execution(alpaca_settings(settings, emulator)):
        await until_finished(bus, {"co-1", "co-2"})
    placed = [emulator.book.find_by_client_id(cid) for cid in ("co-1", "co-2")]
    assert [(o["order_class"], [leg["type"] for leg in o["legs"]]) for o in placed if o] == [
        ("bracket", ["limit", "stop"]),
        ("oto", ["stop"]),
    ]


async def test_something_other_than_an_order_is_dead_lettered_and_trading_goes_on(
    bus: Bus, settings: Settings, emulator: AlpacaTradingEmulator
) -> None:
    stray = Signal(
        id="sig-x", symbol="AAPL", timestamp=order(0).timestamp, side="buy", price=1.0, confidence=1, strategy="s",
        tick_id="t",
    )  # fmt: skip
    await bus.publish([(ORDERS_NEW, stray), (ORDERS_NEW, order(1))])
    async with execution(alpaca_settings(settings, emulator)):
        await until_finished(bus, {"co-1"})
    (dead,) = await bus.redis.xrange(dead_letter_stream(ORDERS_NEW))
    assert dead[1]["reason"] == f"expected an Order, OrderChange or flatten on {ORDERS_NEW}, got a Signal"


async def test_a_halt_stops_every_new_order_before_the_broker_sees_it(
    bus: Bus, settings: Settings, emulator: AlpacaTradingEmulator
) -> None:
    await control.apply_action(bus, "halt", actor="test", reason="broker outage drill")
    await bus.publish([(ORDERS_NEW, order(1))])
    async with execution(alpaca_settings(settings, emulator)):
        await until_finished(bus, {"co-1"})
    (denied,) = await order_events(bus)
    assert denied.status == "denied"
    assert denied.reason is not None
    assert denied.reason.startswith("halted: trading is HALTED")
    assert emulator.book.submissions == 0
