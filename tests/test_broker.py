"""The paper broker as a pure class: orders in, fills and an account out."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from tradebot.broker.paper import PaperBroker, event_id
from tradebot.common.models import Order, OrderChange

NOW = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)


def order(side: str, quantity: float, price: float, symbol: str = "AAPL", number: int = 0) -> Order:
    return Order(
        id=f"co-{symbol}-{side}-{number}",
        symbol=symbol,
        side=side,
        quantity=quantity,  # type: ignore[arg-type]
        reference_price=price,
        signal_id=f"sig-{number}",
        timestamp=NOW,
    )


def test_a_buy_fills_above_the_reference_price_and_pays_commission() -> None:
    broker = PaperBroker(10_000, slippage_bps=10, commission_per_share=0.01)
    event = broker.execute(order("buy", 10, 200.0))
    assert event is not None
    assert event.status == "filled"
    assert event.price == pytest.approx(200.2)
    assert event.commission == pytest.approx(0.10)
    assert event.id == event_id("co-AAPL-buy-0")
    assert event.client_order_id == "co-AAPL-buy-0"
    assert broker.cash == pytest.approx(10_000 - 2002.0 - 0.10)
    position = broker.positions["AAPL"]
    assert position.quantity == 10
    assert position.average_cost == pytest.approx(200.21)


def test_a_sell_fills_below_the_reference_price_and_realises_pnl() -> None:
    broker = PaperBroker(10_000, slippage_bps=10, commission_per_share=0.01)
    broker.execute(order("buy", 10, 200.0))
    event = broker.execute(order("sell", 10, 210.0, number=1))
    assert event is not None
    assert event.status == "filled"
    assert event.price == pytest.approx(209.79)
    position = broker.positions["AAPL"]
    assert position.quantity == 0
    assert position.average_cost == 0
    assert position.realised_pnl == pytest.approx((2097.9 - 0.10) - 2002.10)
    assert broker.cash == pytest.approx(10_000 + position.realised_pnl)


def test_unrealised_pnl_marks_the_open_position_at_the_last_reference_price() -> None:
    broker = PaperBroker(10_000)
    broker.execute(order("buy", 10, 100.0))
    broker.execute(order("sell", 5, 110.0, number=1))
    broker.execute(order("sell", 50, 120.0, number=2))  # rejected, but the price still marks the position
    position = broker.positions["AAPL"]
    assert position.realised_pnl == pytest.approx(50.0)
    assert position.unrealised_pnl == pytest.approx(5 * (120.0 - 100.0))
    account = broker.account()
    assert account["unrealised_pnl"] == pytest.approx(100.0)
    assert account["realised_pnl"] == pytest.approx(50.0)


def test_cash_positions_and_pnl_reconcile_with_the_fills() -> None:
    broker = PaperBroker(50_000, slippage_bps=2, commission_per_share=0.005)
    prices = [101.0, 99.5, 103.2, 98.7, 104.4, 100.1, 97.3, 102.8]
    events = []
    for number, price in enumerate(prices):
        for symbol in ("AAPL", "MSFT"):
            side = "buy" if number % 3 != 2 else "sell"
            events.append(broker.execute(order(side, 7, price, symbol, number)))
    fills = [e for e in events if e is not None and e.status == "filled"]
    signed = {"buy": -1, "sell": 1}
    cash = 50_000 + sum(signed[f.side] * f.quantity * f.price - f.commission for f in fills)
    assert broker.cash == pytest.approx(cash)
    for symbol, position in broker.positions.items():
        held = sum(-signed[f.side] * f.quantity for f in fills if f.symbol == symbol)
        assert position.quantity == pytest.approx(held)
    account = broker.account()
    assert account["commissions"] == pytest.approx(sum(f.commission for f in fills))
    total_pnl = account["realised_pnl"] + account["unrealised_pnl"]
    assert account["equity"] - 50_000 == pytest.approx(total_pnl)


def test_a_buy_beyond_the_cash_is_rejected_with_the_reason() -> None:
    broker = PaperBroker(1_000, commission_per_share=0.01)
    event = broker.execute(order("buy", 10, 100.0))
    assert event is not None
    assert event.status == "rejected"
    assert event.price is None
    assert event.reason is not None
    assert "insufficient cash" in event.reason
    assert "$1,000.10" in event.reason
    assert broker.cash == 1_000
    assert broker.positions["AAPL"].quantity == 0


def test_a_sell_beyond_the_position_is_rejected_no_shorting() -> None:
    broker = PaperBroker(10_000)
    broker.execute(order("buy", 5, 100.0))
    event = broker.execute(order("sell", 10, 100.0, number=1))
    assert event is not None
    assert event.status == "rejected"
    assert event.reason is not None
    assert "holding 5" in event.reason
    assert "short selling" in event.reason
    assert broker.positions["AAPL"].quantity == 5


def test_a_repeated_client_order_id_is_never_filled_twice() -> None:
    broker = PaperBroker(10_000)
    first = broker.execute(order("buy", 10, 100.0))
    assert first is not None
    before = broker.snapshot()
    assert broker.execute(order("buy", 10, 100.0)) is None
    assert broker.snapshot() == before


def test_a_restored_account_remembers_executed_orders() -> None:
    broker = PaperBroker(10_000, slippage_bps=1, commission_per_share=0.005)
    broker.execute(order("buy", 10, 100.0))
    restored = PaperBroker(10_000, slippage_bps=1, commission_per_share=0.005)
    restored.restore(broker.snapshot())
    assert restored.account() == broker.account()
    assert restored.execute(order("buy", 10, 100.0)) is None
    after = order("sell", 10, 101.0, number=1)
    assert restored.execute(after) == broker.execute(after)


def test_an_old_order_republished_days_later_is_not_filled_twice() -> None:
    broker = PaperBroker(1e12)
    first = order("buy", 1, 1.0)
    assert broker.execute(first) is not None
    for number in range(1, 3_001):  # far more orders than the old 1,000-id window, over 6 days
        later = order("buy", 1, 1.0, number=number).model_copy(
            update={"timestamp": first.timestamp + timedelta(minutes=3 * number)}
        )
        broker.execute(later)
    restored = PaperBroker(1e12)
    restored.restore(json.loads(json.dumps(broker.snapshot())))
    assert restored.execute(first) is None


def test_remembered_order_ids_are_forgotten_after_the_age_limit() -> None:
    broker = PaperBroker(1e12, remember_days=1)
    first = order("buy", 1, 1.0)
    broker.execute(first)
    late = order("buy", 1, 1.0, number=1).model_copy(update={"timestamp": first.timestamp + timedelta(days=2)})
    broker.execute(late)
    assert list(broker.snapshot()["seen_order_ids"]) == [late.id]


def test_an_order_older_than_the_memory_of_ids_is_rejected_not_filled_again() -> None:
    broker = PaperBroker(1e12, remember_days=1)
    first = order("buy", 1, 1.0)
    assert broker.execute(first).status == "filled"  # type: ignore[union-attr]
    broker.execute(order("buy", 1, 1.0, number=1).model_copy(update={"timestamp": first.timestamp + timedelta(days=2)}))
    cash, positions = broker.cash, broker.snapshot()["positions"]
    again = broker.execute(first)  # its id is forgotten: it must not fill a second time
    assert again is not None
    assert again.status == "rejected"
    assert again.id == event_id(first.id)  # the one event of that order id, as its fill was
    assert "ORDER_MEMORY_DAYS=1" in (again.reason or "")
    assert "2.0 days behind" in (again.reason or "")
    assert (broker.cash, broker.snapshot()["positions"]) == (cash, positions)
    assert first.id not in broker.snapshot()["seen_order_ids"]
    fresh = order("buy", 1, 1.0, number=2).model_copy(update={"timestamp": first.timestamp + timedelta(days=1.5)})
    assert broker.execute(fresh).status == "filled"  # type: ignore[union-attr]  # within the memory: as ever


def test_a_change_older_than_the_memory_of_ids_is_refused() -> None:
    broker = PaperBroker(1e12, remember_days=1)
    resting = order("buy", 1, 1.0).model_copy(
        update={"order_type": "limit", "limit_price": 0.5, "time_in_force": "gtc"}
    )
    assert broker.execute(resting).status == "accepted"  # type: ignore[union-attr]
    broker.execute(order("buy", 1, 1.0, number=1).model_copy(update={"timestamp": NOW + timedelta(days=2)}))
    cancel = OrderChange(
        id="chg-1", symbol="AAPL", target=resting.id, action="cancel", timestamp=NOW, reason="operator"
    )
    events = broker.change(cancel, lambda target, replacement: None)
    assert [event.status for event in events] == ["cancel_requested", "order_cancel_rejected"]
    assert "cannot be checked for a duplicate" in (events[-1].reason or "")
    assert resting.id in broker.resting


def test_a_checkpoint_with_the_old_id_list_still_recognises_its_orders() -> None:
    broker = PaperBroker(10_000)
    broker.execute(order("buy", 1, 1.0))
    snapshot = broker.snapshot()
    snapshot["seen_order_ids"] = list(snapshot["seen_order_ids"])
    restored = PaperBroker(10_000)
    restored.restore(snapshot)
    assert restored.execute(order("buy", 1, 1.0)) is None


@pytest.mark.parametrize(
    ("fields", "status", "price"),
    [
        ({"order_type": "limit", "limit_price": 101.0}, "filled", 100.1),
        ({"order_type": "limit", "limit_price": 100.05}, "filled", 100.05),  # never worse than the limit
        ({"order_type": "limit", "limit_price": 99.0}, "expired", None),
        ({"order_type": "limit", "limit_price": 99.0, "time_in_force": "ioc"}, "canceled", None),
        ({"order_type": "stop", "stop_price": 99.0}, "filled", 100.1),
        ({"order_type": "stop", "stop_price": 101.0, "time_in_force": "fok"}, "canceled", None),
        ({"order_type": "stop", "stop_price": 101.0, "time_in_force": "gtc"}, "accepted", None),  # rests
        ({"order_type": "stop_limit", "stop_price": 99.0, "limit_price": 100.0}, "filled", 100.0),
        ({"order_type": "trailing_stop", "trail_percent": 1.0}, "accepted", None),  # rests (resting.py)
    ],
)
def test_order_types_fill_or_end_at_the_reference_price(fields: dict, status: str, price: float | None) -> None:
    broker = PaperBroker(10_000, slippage_bps=10)
    event = broker.execute(order("buy", 10, 100.0).model_copy(update=fields))
    assert event is not None
    assert event.status == status
    assert event.price == (pytest.approx(price) if price else None)
    assert (event.reason is None) == (status == "filled")
    assert broker.positions["AAPL"].quantity == (10 if status == "filled" else 0)
