"""The paper broker's resting orders on later prices: each type triggers exactly at its threshold
(and not a cent before), trailing stops follow their high-water mark (kept in the snapshot),
brackets and OTOs leave their legs once the entry filled, and a price judged twice fills nothing twice."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tradebot.broker.paper import PaperBroker
from tradebot.common.models import Order, OrderChange

from .test_broker import NOW


def order(number: int = 1, side: str = "buy", price: float = 100.0, **fields: object) -> Order:
    return Order(
        id=f"co-{number}",
        symbol="AAPL",
        side=side,  # type: ignore[arg-type]
        quantity=10,
        reference_price=price,
        signal_id=f"sig-{number}",
        timestamp=NOW,
        **{"time_in_force": "gtc", **fields},  # type: ignore[arg-type]
    )


def at(seconds: int) -> object:
    return NOW + timedelta(seconds=seconds)


def held(quantity: float = 10) -> PaperBroker:
    broker = PaperBroker(10_000)
    filled = broker.execute(order(0, time_in_force="day").model_copy(update={"quantity": quantity}))
    assert filled is not None
    assert filled.status == "filled"
    return broker


def statuses(events: list) -> list[tuple[str, str, float | None]]:
    return [(e.client_order_id, e.status, e.price) for e in events]


@pytest.mark.parametrize(
    ("fields", "not_yet", "reaches"),
    [
        ({"side": "buy", "order_type": "limit", "limit_price": 95.0}, 95.01, 95.0),
        ({"side": "sell", "order_type": "limit", "limit_price": 105.0}, 104.99, 105.0),
        ({"side": "buy", "order_type": "stop", "stop_price": 105.0}, 104.99, 105.0),
        ({"side": "sell", "order_type": "stop", "stop_price": 95.0}, 95.01, 95.0),
    ],
)
def test_a_resting_order_fills_exactly_at_its_threshold(fields: dict, not_yet: float, reaches: float) -> None:
    broker = held()
    accepted = broker.execute(order(**fields))
    assert accepted is not None
    assert accepted.status == "accepted"
    assert broker.on_price("AAPL", not_yet, at(1)) == []
    assert statuses(broker.on_price("AAPL", reaches, at(2))) == [("co-1", "filled", reaches)]
    assert broker.on_price("AAPL", reaches, at(2)) == []  # the same price again: nothing twice
    assert broker.resting == {}


def test_a_stop_limit_triggers_at_its_stop_then_rests_as_its_limit() -> None:
    broker = PaperBroker(10_000)
    placed = broker.execute(order(order_type="stop_limit", stop_price=105.0, limit_price=105.5))
    assert placed is not None
    assert placed.status == "accepted"
    assert broker.on_price("AAPL", 104.99, at(1)) == []
    assert broker.on_price("AAPL", 106.0, at(2)) == []  # triggered, above its limit
    assert broker.resting["co-1"].order_type == "limit"
    assert statuses(broker.on_price("AAPL", 104.0, at(3))) == [("co-1", "filled", 104.0)]  # below the stop: a limit now


@pytest.mark.parametrize(
    ("trail", "stop_after_110"),
    [({"trail_percent": 5.0}, 104.5), ({"trail_price": 3.0}, 107.0)],
)
def test_a_trailing_sell_stop_follows_the_high_water_mark(trail: dict, stop_after_110: float) -> None:
    broker = held()
    placed = broker.execute(order(side="sell", order_type="trailing_stop", **trail))
    assert placed is not None
    assert placed.status == "accepted"
    assert broker.on_price("AAPL", 110.0, at(1)) == []  # the mark rises to 110
    assert broker.marks["co-1"] == 110.0
    assert broker.on_price("AAPL", 108.0, at(2)) == []  # the mark stays
    assert broker.on_price("AAPL", round(stop_after_110 + 0.01, 2), at(3)) == []
    restored = PaperBroker(10_000)
    restored.restore(broker.snapshot())  # the mark is in the checkpoint
    assert statuses(restored.on_price("AAPL", stop_after_110, at(4))) == [("co-1", "filled", stop_after_110)]
    assert restored.positions["AAPL"].quantity == 0


def test_a_trailing_buy_stop_follows_the_low_water_mark() -> None:
    broker = PaperBroker(10_000)
    assert broker.execute(order(order_type="trailing_stop", trail_percent=10.0)) is not None
    assert broker.on_price("AAPL", 80.0, at(1)) == []  # stop now 88
    assert broker.on_price("AAPL", 87.99, at(2)) == []
    assert statuses(broker.on_price("AAPL", 88.0, at(3))) == [("co-1", "filled", 88.0)]


def test_a_trailing_stop_ignores_prices_from_before_it_and_ioc_cancels_it() -> None:
    broker = held()
    assert broker.execute(order(side="sell", order_type="trailing_stop", trail_price=1.0)) is not None
    assert broker.on_price("AAPL", 50.0, NOW - timedelta(seconds=1)) == []  # stamped before the order
    ioc = broker.execute(order(2, side="sell", order_type="trailing_stop", trail_price=1.0, time_in_force="ioc"))
    assert ioc is not None
    assert ioc.status == "canceled"


def test_a_bracket_leaves_its_legs_after_the_entry_and_the_first_leg_cancels_the_other() -> None:
    broker = PaperBroker(10_000)
    entry = order(
        order_type="limit", limit_price=99.0, take_profit_price=110.0, stop_loss_price=95.0, order_class="bracket"
    )
    assert [e.status for e in broker.place(entry)] == ["accepted"]  # no legs before the entry fills
    assert broker.on_price("AAPL", 99.01, at(1)) == []
    events = broker.on_price("AAPL", 99.0, at(2))
    assert statuses(events) == [("co-1", "filled", 99.0), ("co-1-tp", "accepted", None), ("co-1-sl", "accepted", None)]
    assert broker.on_price("AAPL", 95.01, at(3)) == []
    assert broker.on_price("AAPL", 109.99, at(4)) == []
    events = broker.on_price("AAPL", 110.0, at(5))
    assert statuses(events) == [("co-1-tp", "filled", 110.0), ("co-1-sl", "canceled", None)]
    assert broker.positions["AAPL"].quantity == 0
    assert broker.resting == {}


def test_a_market_bracket_entry_fills_at_once_and_its_stop_loss_can_fill_first() -> None:
    broker = PaperBroker(10_000)
    entry = order(time_in_force="day", take_profit_price=110.0, stop_loss_price=95.0, order_class="bracket")
    assert [e.status for e in broker.place(entry)] == ["filled", "accepted", "accepted"]
    events = broker.on_price("AAPL", 95.0, at(1))
    assert statuses(events) == [("co-1-sl", "filled", 95.0), ("co-1-tp", "canceled", None)]


def test_a_cancel_of_a_brackets_stop_loss_leg_takes_both_legs() -> None:
    broker = PaperBroker(10_000)
    broker.place(order(time_in_force="day", take_profit_price=110.0, stop_loss_price=95.0, order_class="bracket"))
    cancel = OrderChange(id="cx-1", symbol="AAPL", timestamp=at(1), action="cancel", target="co-1-sl")
    events = broker.change(cancel, lambda _target, _replacement: None)
    assert [(e.client_order_id, e.status) for e in events] == [
        ("co-1-sl", "cancel_requested"), ("co-1-tp", "canceled"), ("co-1-sl", "canceled"),
    ]  # fmt: skip
    assert broker.resting == {}


@pytest.mark.parametrize(
    ("legs", "leg", "not_yet", "reaches"),
    [({"take_profit_price": 110.0}, "co-1-tp", 109.99, 110.0), ({"stop_loss_price": 95.0}, "co-1-sl", 95.01, 95.0)],
)
def test_an_oto_leaves_its_one_leg(legs: dict, leg: str, not_yet: float, reaches: float) -> None:
    broker = PaperBroker(10_000)
    events = broker.place(order(time_in_force="day", order_class="oto", **legs))
    assert statuses(events) == [("co-1", "filled", 100.0), (leg, "accepted", None)]
    assert broker.on_price("AAPL", not_yet, at(1)) == []
    assert statuses(broker.on_price("AAPL", reaches, at(2))) == [(leg, "filled", reaches)]


def test_a_bracket_the_paper_broker_cannot_take_is_rejected_with_the_reason() -> None:
    broker = held()
    sell = order(side="sell", time_in_force="day", take_profit_price=90.0, stop_loss_price=110.0, order_class="bracket")
    (event,) = broker.place(sell)
    assert event.status == "rejected"
    assert "long only" in (event.reason or "")
    upside_down = order(2, take_profit_price=90.0, stop_loss_price=95.0, order_class="bracket")
    (event,) = broker.place(upside_down)
    assert event.status == "rejected"
    assert "must be above its stop-loss" in (event.reason or "")


def test_a_trailing_stop_is_replaced_with_a_new_trail() -> None:
    broker = held()
    broker.execute(order(side="sell", order_type="trailing_stop", trail_percent=5.0))
    replace = OrderChange(id="cx-2", symbol="AAPL", timestamp=at(1), action="replace", target="co-1", trail_price=2.0)
    events = broker.change(replace, lambda _target, _replacement: None)
    assert [e.status for e in events] == ["replace_requested", "replaced", "accepted"]
    (replacement,) = broker.resting.values()
    assert (replacement.trail_price, replacement.trail_percent) == (2.0, None)
    assert [e.status for e in broker.on_price("AAPL", 98.0, at(2))] == ["filled"]  # 100 - 2
