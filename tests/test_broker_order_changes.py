"""Cancel and replace through the execution worker: the Alpaca emulator with the real alpaca-py,
and the paper broker, over real Redis; each request's events once, every doubt settled by lookup."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tradebot.common.bus import Bus
from tradebot.common.config import Settings
from tradebot.common.models import OrderChange, OrderEvent
from tradebot.common.streams import ORDERS_NEW, TRADING_STATE_SEEN_KEY
from tradebot.risk import control

from .broker_helpers import alpaca_settings, by_order, emulator, order, order_events
from .emulators.alpaca_trading import AlpacaTradingEmulator
from .helpers import wait_until
from .test_broker_worker import execution, until_finished

__all__ = ["emulator"]  # the fixture


def change(number: int, action: str, target: str, **fields: object) -> OrderChange:
    return OrderChange(
        id=f"cx-{number}", symbol="AAPL", timestamp=datetime.now(UTC), action=action,  # type: ignore[arg-type]
        target=target, **fields,  # type: ignore[arg-type]
    )  # fmt: skip


def resting(number: int, limit: float = 90.0, **fields: object) -> object:
    return order(number, order_type="limit", limit_price=limit, time_in_force="gtc", **fields)


def statuses(events: list[OrderEvent], client_id: str) -> list[str]:
    return [e.status for e in by_order(events)[client_id]]


def told(events: list[OrderEvent], client_id: str) -> list[str]:
    """The statuses of an order with its request's ``…_requested`` put first (a request recorded
    in the batch of its order is told before the broker accepts the order), ending as told."""
    got = statuses(events, client_id)
    asked = [s for s in got if s.endswith("_requested")]
    return asked + [s for s in got if not s.endswith("_requested")]


async def until_statuses(bus: Bus, client_id: str, *wanted: str, timeout: float = 30.0) -> list[OrderEvent]:
    async def seen() -> bool:
        got = statuses(await order_events(bus), client_id)
        return all(status in got for status in wanted)

    await wait_until(seen, timeout, f"{', '.join(wanted)} of {client_id}")
    return await order_events(bus)


def once_each(events: list[OrderEvent]) -> None:
    assert len({e.id for e in events}) == len(events), "an event was published twice"


async def test_a_strategy_cancel_of_a_resting_order_ends_it_canceled_at_alpaca(
    bus: Bus, settings: Settings, emulator: AlpacaTradingEmulator
) -> None:
    await bus.publish([(ORDERS_NEW, resting(1)), (ORDERS_NEW, change(1, "cancel", "co-1"))])
    async with execution(alpaca_settings(settings, emulator)):
        events = await until_statuses(bus, "co-1", "canceled")
    assert told(events, "co-1") == ["cancel_requested", "submitted", "accepted", "canceled"]
    placed = emulator.book.find_by_client_id("co-1")
    assert placed is not None
    assert placed["status"] == "canceled"
    assert emulator.rest.change_requests["DELETE"] == 1
    once_each(events)


async def test_a_replace_ends_the_order_replaced_and_the_replacement_lives_as_ours(
    bus: Bus, settings: Settings, emulator: AlpacaTradingEmulator
) -> None:
    replace = change(1, "replace", "co-1", limit_price=120.0)  # now marketable at 100: it fills
    await bus.publish([(ORDERS_NEW, resting(1)), (ORDERS_NEW, replace)])
    async with execution(alpaca_settings(settings, emulator)):
        await until_finished(bus, {"co-1", replace.replacement_id})
    events = await order_events(bus)
    assert told(events, "co-1") == ["replace_requested", "submitted", "accepted", "replaced"]
    assert statuses(events, replace.replacement_id) == ["submitted", "accepted", "filled"]
    assert emulator.book.positions == {"AAPL": 10}
    assert emulator.rest.change_requests["PATCH"] == 1
    once_each(events)


@pytest.mark.parametrize("fault", ["drop", "500", "slow"])
@pytest.mark.parametrize("action", ["cancel", "replace"])
async def test_an_ambiguous_cancel_or_replace_is_settled_by_lookup_never_resent(
    bus: Bus, settings: Settings, emulator: AlpacaTradingEmulator, fault: str, action: str
) -> None:
    emulator.stream.muted = True  # only lookups can tell what happened
    emulator.fault_next_change(fault)
    request = change(1, action, "co-1", **({"limit_price": 85.0} if action == "replace" else {}))
    await bus.publish([(ORDERS_NEW, resting(1)), (ORDERS_NEW, request)])
    ended = "canceled" if action == "cancel" else "replaced"
    async with execution(alpaca_settings(settings, emulator)):
        events = await until_statuses(bus, "co-1", ended)
        if action == "replace":
            events = await until_statuses(bus, request.replacement_id, "accepted")
    assert told(events, "co-1") == [f"{action}_requested", "submitted", "accepted", ended]
    assert emulator.rest.change_requests["DELETE" if action == "cancel" else "PATCH"] == 1, "never sent again"
    assert emulator.rest.requests_to("/v2/orders:by_client_order_id"), "settled by a lookup"
    if action == "replace":
        assert [o["client_order_id"] for o in emulator.book.orders.values()] == ["co-1", request.replacement_id]
    once_each(events)


async def test_a_cancel_that_comes_after_the_fill_is_rejected_with_the_reason(
    bus: Bus, settings: Settings, emulator: AlpacaTradingEmulator
) -> None:
    await bus.publish([(ORDERS_NEW, order(1))])
    async with execution(alpaca_settings(settings, emulator)):
        await until_finished(bus, {"co-1"})
        await bus.publish([(ORDERS_NEW, change(1, "cancel", "co-1"))])
        events = await until_statuses(bus, "co-1", "order_cancel_rejected")
    assert statuses(events, "co-1") == ["submitted", "accepted", "filled", "cancel_requested", "order_cancel_rejected"]
    assert emulator.rest.change_requests["DELETE"] == 0


async def test_while_halted_a_cancel_goes_through_and_a_growing_replace_is_refused(
    bus: Bus, settings: Settings, emulator: AlpacaTradingEmulator
) -> None:
    await bus.publish([(ORDERS_NEW, resting(1)), (ORDERS_NEW, resting(2))])
    async with execution(alpaca_settings(settings, emulator)):
        await wait_until(lambda: emulator.book.submissions == 2, 30, "both at the broker")
        await control.apply_action(bus, "halt", actor="test", reason="drill")

        async def obeyed() -> bool:  # the execution worker has taken the halt in
            return "1" in (await bus.redis.hgetall(TRADING_STATE_SEEN_KEY)).values()

        await wait_until(obeyed, 30, "the halt seen by execution")
        await bus.publish(
            [(ORDERS_NEW, change(1, "cancel", "co-1")), (ORDERS_NEW, change(2, "replace", "co-2", quantity=50))]
        )
        events = await until_statuses(bus, "co-1", "canceled")
        events = await until_statuses(bus, "co-2", "order_replace_rejected")
    rejected = by_order(events)["co-2"][-1]
    assert rejected.reason is not None
    assert "HALTED" in rejected.reason
    assert emulator.rest.change_requests == {"DELETE": 1, "PATCH": 0}


async def test_the_paper_broker_cancels_and_replaces_resting_orders_once(bus: Bus, settings: Settings) -> None:
    replace = change(2, "replace", "co-2", limit_price=99.0, quantity=5)
    await bus.publish(
        [
            (ORDERS_NEW, resting(1)),
            (ORDERS_NEW, resting(2)),
            (ORDERS_NEW, change(1, "cancel", "co-1")),
            (ORDERS_NEW, change(1, "cancel", "co-1")),  # republished: one effect
            (ORDERS_NEW, replace),
            (ORDERS_NEW, order(3, symbol="AAPL", quantity=1).model_copy(update={"reference_price": 98.0})),
        ]
    )
    paper = Settings(**{**settings.model_dump(), "risk_duplicate_window_s": 0})  # three buys of AAPL at once
    async with execution(paper):
        events = await until_statuses(bus, replace.replacement_id, "filled")
    assert told(events, "co-1") == ["cancel_requested", "accepted", "canceled"]
    assert told(events, "co-2") == ["replace_requested", "accepted", "replaced"]
    assert statuses(events, replace.replacement_id) == ["accepted", "filled"]  # rests at 99, fills at 98
    once_each(events)
