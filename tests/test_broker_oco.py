"""OCO: an exit pair for a position held (take-profit limit + stop-loss); whichever fills first
cancels the other. The model's rules, the paper broker, and Alpaca's order_class=oco through
alpaca-py against the emulator (real Redis)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from tradebot.broker.paper import PaperBroker
from tradebot.common.bus import Bus
from tradebot.common.config import Settings
from tradebot.common.models import Order, OrderChange
from tradebot.common.streams import ORDERS_NEW

from .broker_helpers import alpaca_settings, by_order, emulator, order, order_events, positions_from
from .emulators.alpaca_trading import AlpacaTradingEmulator
from .helpers import wait_until
from .test_broker import NOW
from .test_broker_worker import execution, until_finished

__all__ = ["emulator"]  # the fixture


def oco(
    number: int = 9, quantity: float = 10, take_profit: float = 105.0, stop_loss: float = 95.0, **fields: object
) -> Order:
    return order(number, side="sell", quantity=quantity, order_class="oco", take_profit_price=take_profit,
                 stop_loss_price=stop_loss, time_in_force="gtc")  # fmt: skip


def held(quantity: float = 10) -> PaperBroker:
    broker = PaperBroker(10_000)
    broker.execute(order(1, quantity=quantity).model_copy(update={"timestamp": NOW}))
    return broker


def test_an_oco_is_the_take_profit_limit_with_a_stop_loss_leg() -> None:
    pair = oco()
    assert (pair.order_type, pair.limit_price, pair.order_class) == ("limit", 105.0, "oco")
    assert Order.model_validate_json(pair.model_dump_json()) == pair


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"side": "buy"}, "exits a position held: its side is sell"),
        ({"stop_loss_price": None}, "needs take_profit_price and stop_loss_price"),
        ({"take_profit_price": 90.0}, "must be above its stop_loss_price"),
        ({"time_in_force": "ioc"}, "is day or gtc"),
    ],
)
def test_an_oco_breaking_alpacas_rules_is_refused_with_the_reason(fields: dict, message: str) -> None:
    data = {**oco().model_dump(), "limit_price": None, "order_type": "limit", **fields}
    with pytest.raises(ValidationError, match=message):
        Order.model_validate(data)


def test_on_paper_the_take_profit_fills_and_the_stop_loss_is_canceled() -> None:
    broker = held()
    pair = oco()
    accepted = broker.execute(pair)
    assert accepted is not None
    assert accepted.status == "accepted"
    assert broker.fill_resting("AAPL", 100.0, NOW) == []  # between the legs: both rest
    events = broker.fill_resting("AAPL", 106.0, NOW + timedelta(seconds=1))
    assert [(e.client_order_id, e.status) for e in events] == [(pair.id, "filled"), (pair.stop_loss_leg_id, "canceled")]
    assert events[0].price == 106.0
    assert broker.positions["AAPL"].quantity == 0
    assert broker.fill_resting("AAPL", 90.0, NOW) == []  # nothing left


def test_on_paper_the_stop_loss_fills_and_the_take_profit_is_canceled() -> None:
    broker = held()
    pair = oco()
    broker.execute(pair)
    events = broker.fill_resting("AAPL", 94.0, NOW)
    assert [(e.client_order_id, e.status) for e in events] == [(pair.stop_loss_leg_id, "filled"), (pair.id, "canceled")]
    assert broker.positions["AAPL"].quantity == 0


def test_on_paper_an_oco_without_the_position_is_rejected_and_a_cancel_takes_both_legs() -> None:
    broker = PaperBroker(10_000)
    refused = broker.execute(oco())
    assert refused is not None
    assert (refused.status, refused.reason) == (
        "rejected",
        "an oco order exits a position held: selling 10 AAPL but holding 0",
    )
    broker = held()
    pair = oco(number=10)
    broker.execute(pair)
    cancel = OrderChange(id="cx-1", symbol="AAPL", timestamp=pair.timestamp, action="cancel", target=pair.id)
    events = broker.change(cancel, lambda _t, _r: None)
    assert [(e.client_order_id, e.status) for e in events] == [
        (pair.id, "cancel_requested"),
        (pair.id, "canceled"),
        (pair.stop_loss_leg_id, "canceled"),
    ]


async def test_paper_execution_over_redis_resolves_an_oco_on_a_later_price(bus: Bus, settings: Settings) -> None:
    paper = Settings(**{**settings.model_dump(), "risk_duplicate_window_s": 0, "slippage_bps": 0})
    later = order(3, quantity=1, symbol="AAPL").model_copy(update={"reference_price": 94.0})
    await bus.publish([(ORDERS_NEW, order(1)), (ORDERS_NEW, oco()), (ORDERS_NEW, later)])
    async with execution(paper):
        await until_finished(bus, {"co-9", "co-9-sl", "co-3"})
    grouped = by_order(await order_events(bus))
    assert [e.status for e in grouped["co-9"]] == ["accepted", "canceled"]
    assert [(e.status, e.price) for e in grouped["co-9-sl"]] == [("filled", 94.0)]


async def test_alpaca_gets_order_class_oco_and_the_first_leg_to_fill_cancels_the_other(
    bus: Bus, settings: Settings, emulator: AlpacaTradingEmulator
) -> None:
    await bus.publish([(ORDERS_NEW, order(1))])
    async with execution(alpaca_settings(settings, emulator)):
        await until_finished(bus, {"co-1"})
        await bus.publish([(ORDERS_NEW, oco())])  # the exit pair for the position now held
        await wait_until(lambda: emulator.book.find_by_client_id("co-9") is not None, 30, "the oco at the broker")
        emulator.book.set_price("AAPL", 94.0)  # the stop-loss triggers
        await until_finished(bus, {"co-9"})

        async def leg_filled() -> bool:
            return any(e.status == "filled" and e.side == "sell" for e in await order_events(bus))

        await wait_until(leg_filled, 30, "the stop-loss leg's fill")
    placed = emulator.book.find_by_client_id("co-9")
    assert placed is not None
    assert (placed["order_class"], placed["type"], placed["limit_price"]) == ("oco", "limit", 105.0)
    assert [leg["type"] for leg in placed["legs"]] == ["stop"]
    events = await order_events(bus)
    assert [e.status for e in by_order(events)["co-9"]] == ["submitted", "accepted", "canceled"]
    assert positions_from(events) == {}
    assert emulator.book.positions == {"AAPL": 0}


async def test_alpaca_path_refuses_an_oco_without_the_position_before_sending(
    bus: Bus, settings: Settings, emulator: AlpacaTradingEmulator
) -> None:
    await bus.publish([(ORDERS_NEW, oco())])
    async with execution(alpaca_settings(settings, emulator)):
        await until_finished(bus, {"co-9"})
    (denied,) = await order_events(bus)  # the risk stage says no before the order is even recorded
    assert (denied.status, denied.reason) == (
        "denied",
        "no_position: no AAPL held to sell (short selling is not supported)",
    )
    assert emulator.book.submissions == 0
