"""Cancel and replace on the paper broker: resting gtc orders, each request told once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from tradebot.broker.paper import PaperBroker
from tradebot.common.models import Order, OrderChange

from .test_broker import NOW, order


def resting_buy(limit: float = 95.0, quantity: float = 10) -> Order:
    return order("buy", quantity, 100.0).model_copy(
        update={"order_type": "limit", "limit_price": limit, "time_in_force": "gtc"}
    )


def change(action: str, target: str, number: int = 1, **fields: object) -> OrderChange:
    return OrderChange(
        id=f"cx-{number}", symbol="AAPL", timestamp=NOW + timedelta(seconds=number), action=action,  # type: ignore[arg-type]
        target=target, **fields,  # type: ignore[arg-type]
    )  # fmt: skip


def allow(_target: Order, _replacement: Order) -> None:
    return None


def test_a_gtc_limit_the_price_does_not_reach_rests_and_fills_at_a_later_price() -> None:
    broker = PaperBroker(10_000)
    placed = resting_buy()
    accepted = broker.execute(placed)
    assert accepted is not None
    assert accepted.status == "accepted"
    assert list(broker.resting) == [placed.id]
    assert broker.fill_resting("AAPL", 96.0, NOW) == []  # not reached yet
    (filled,) = broker.fill_resting("AAPL", 94.0, NOW)
    assert (filled.status, filled.price, filled.quantity) == ("filled", 94.0, 10)
    assert filled.id != accepted.id
    assert broker.positions["AAPL"].quantity == 10
    assert broker.resting == {}


def test_a_cancel_ends_the_resting_order_once_and_a_repeated_request_changes_nothing() -> None:
    broker = PaperBroker(10_000)
    placed = resting_buy()
    broker.execute(placed)
    cancel = change("cancel", placed.id)
    events = broker.change(cancel, allow)
    assert [(e.status, e.client_order_id) for e in events] == [("cancel_requested", placed.id), ("canceled", placed.id)]
    assert broker.change(cancel, allow) == []
    assert broker.resting == {}
    assert broker.fill_resting("AAPL", 10.0, NOW) == []


def test_a_cancel_of_an_order_that_is_not_open_is_rejected_with_the_reason() -> None:
    broker = PaperBroker(10_000)
    filled = order("buy", 1, 100.0)
    broker.execute(filled)
    (asked, rejected) = broker.change(change("cancel", filled.id), allow)
    assert (asked.status, rejected.status) == ("cancel_requested", "order_cancel_rejected")
    assert rejected.reason is not None
    assert "not open" in rejected.reason
    assert broker.positions["AAPL"].quantity == 1


def test_a_replace_ends_the_target_replaced_and_places_the_replacement() -> None:
    broker = PaperBroker(10_000)
    placed = resting_buy()
    broker.execute(placed)
    replace = change("replace", placed.id, limit_price=101.0)
    events = broker.change(replace, allow)
    assert [(e.status, e.client_order_id) for e in events] == [
        ("replace_requested", placed.id),
        ("replaced", placed.id),
        ("filled", replace.replacement_id),  # 101 reaches the last price 100
    ]
    assert broker.positions["AAPL"].quantity == 10
    assert broker.change(replace, allow) == []


def test_a_replace_the_risk_stage_refuses_leaves_the_order_as_it_was() -> None:
    broker = PaperBroker(10_000)
    placed = resting_buy()
    broker.execute(placed)
    events = broker.change(change("replace", placed.id, quantity=50), lambda _t, _r: "max_position: too big")
    assert [e.status for e in events] == ["replace_requested", "order_replace_rejected"]
    assert events[-1].reason == "max_position: too big"
    assert list(broker.resting) == [placed.id]


def test_resting_orders_survive_a_snapshot() -> None:
    broker = PaperBroker(10_000)
    placed = resting_buy()
    broker.execute(placed)
    restored = PaperBroker(10_000)
    restored.restore(broker.snapshot())
    assert restored.resting == {placed.id: placed}
    assert [e.status for e in restored.change(change("cancel", placed.id), allow)] == ["cancel_requested", "canceled"]


def test_a_replace_needs_something_to_change_and_a_cancel_nothing() -> None:
    with pytest.raises(ValidationError, match="at least one"):
        change("replace", "co-1")
    with pytest.raises(ValidationError, match="changes nothing else"):
        change("cancel", "co-1", quantity=3)


def test_a_replace_that_would_make_an_invalid_order_is_rejected_with_the_reason() -> None:
    broker = PaperBroker(10_000)
    placed = resting_buy()
    broker.execute(placed)
    events = broker.change(change("replace", placed.id, quantity=0.5), allow)  # fractional, but gtc
    assert [e.status for e in events] == ["replace_requested", "order_replace_rejected"]
    assert events[-1].reason is not None
    assert events[-1].reason.startswith("the replacement would not be a valid order: ")
    assert "must have time in force day" in events[-1].reason
    assert list(broker.resting) == [placed.id]
