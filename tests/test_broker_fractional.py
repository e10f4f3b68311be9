"""Fractional orders: a part of a share, or a notional in dollars (not both), only on fractionable
assets and as market day orders for a notional: the model, the paper broker, and Alpaca (the
emulator through alpaca-py, real Redis), each with a clear reason when refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tradebot.broker.paper import PaperBroker
from tradebot.common.bus import Bus
from tradebot.common.config import Settings
from tradebot.common.models import Order
from tradebot.common.streams import ORDERS_NEW

from .broker_helpers import alpaca_settings, by_order, emulator, order, order_events, positions_from
from .emulators.alpaca_trading import AlpacaTradingEmulator
from .test_broker_worker import execution, until_finished

__all__ = ["emulator"]  # the fixture


def dollars(number: int, notional: float, symbol: str = "AAPL", **fields: object) -> Order:
    data = order(number, symbol=symbol).model_dump()
    data.pop("quantity")
    return Order.model_validate({**data, "notional": notional, **fields})


def test_a_notional_order_estimates_its_shares_at_the_reference_price_and_survives_a_round_trip() -> None:
    placed = dollars(1, 250.0)
    assert (placed.quantity, placed.fractional) == (2.5, True)
    assert Order.model_validate_json(placed.model_dump_json()) == placed


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"quantity": 7}, r"quantity \(shares\) or notional \(dollars\), not both"),
        (
            {"order_type": "limit", "limit_price": 99.0},
            "a notional order must be a market order with time in force day",
        ),
        ({"time_in_force": "gtc"}, "a notional order must be a market order with time in force day"),
    ],
)
def test_a_notional_order_breaking_alpacas_rules_is_refused_with_the_reason(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        dollars(1, 250.0, **fields)


def test_a_fractional_quantity_must_be_a_day_order() -> None:
    with pytest.raises(ValidationError, match="must have time in force day"):
        order(1, quantity=0.5, time_in_force="gtc")
    assert order(1, quantity=0.5).fractional
    assert not order(1, quantity=3).fractional


def test_the_paper_broker_spends_the_notional_at_the_fill_price() -> None:
    broker = PaperBroker(10_000, slippage_bps=100, commission_per_share=0.01)
    filled = broker.execute(dollars(1, 202.0))
    assert filled is not None
    assert (filled.status, filled.price) == ("filled", 101.0)
    assert filled.quantity == pytest.approx(2.0)
    assert broker.cash == pytest.approx(10_000 - 202.0 - 0.02)


def test_the_paper_broker_refuses_fractions_of_a_symbol_that_is_not_fractionable() -> None:
    broker = PaperBroker(10_000, not_fractionable=frozenset({"BRK.A"}))
    for fractional in (dollars(1, 500.0, symbol="BRK.A"), order(2, quantity=0.5, symbol="BRK.A")):
        event = broker.execute(fractional)
        assert event is not None
        assert (event.status, event.reason) == (
            "rejected",
            "BRK.A is not fractionable: only whole shares, no notional (dollar) orders",
        )
    whole = broker.execute(order(3, quantity=1, symbol="BRK.A"))
    assert whole is not None
    assert whole.status == "filled"
    assert broker.execute(order(4, quantity=0.5)) is not None  # AAPL is fractionable
    assert broker.positions["AAPL"].quantity == 0.5


async def test_paper_execution_over_redis_fills_notional_and_refuses_the_unfractionable(
    bus: Bus, settings: Settings
) -> None:
    paper = Settings(**{**settings.model_dump(), "paper_not_fractionable": ["MSFT"], "risk_duplicate_window_s": 0})
    await bus.publish([(ORDERS_NEW, dollars(1, 250.0)), (ORDERS_NEW, dollars(2, 250.0, symbol="MSFT"))])
    async with execution(paper):
        await until_finished(bus, {"co-1", "co-2"})
    grouped = by_order(await order_events(bus))
    fill_price = 100.0 * (1 + paper.slippage_bps / 10_000)  # the last price, 100, and the slippage
    assert [(e.status, e.quantity) for e in grouped["co-1"]] == [
        ("filled", pytest.approx(250.0 / fill_price, abs=1e-6))
    ]
    assert grouped["co-2"][-1].status == "rejected"
    assert "MSFT is not fractionable" in (grouped["co-2"][-1].reason or "")


async def test_alpaca_gets_the_notional_alone_and_the_fills_add_up_to_the_shares_it_bought(
    bus: Bus, settings: Settings, emulator: AlpacaTradingEmulator
) -> None:
    emulator.book.partial_fills = 2
    await bus.publish([(ORDERS_NEW, dollars(1, 250.0)), (ORDERS_NEW, order(2, quantity=0.5, symbol="MSFT"))])
    async with execution(alpaca_settings(settings, emulator)):
        await until_finished(bus, {"co-1", "co-2"})
    events = await order_events(bus)
    grouped = by_order(events)
    assert [e.status for e in grouped["co-1"]] == ["submitted", "accepted", "partially_filled", "filled"]
    placed = emulator.book.find_by_client_id("co-1")
    assert placed is not None
    assert float(placed["notional"]) == 250.0
    assert [e.status for e in grouped["co-2"]] == ["submitted", "accepted", "partially_filled", "filled"]
    assert positions_from(events) == pytest.approx(emulator.book.positions)
    assert emulator.book.positions == pytest.approx({"AAPL": 2.5, "MSFT": 0.5})
    assert emulator.rest.asset_requests == 2  # one look at each asset's fractionable flag


async def test_alpaca_refuses_a_fraction_of_an_asset_that_is_not_fractionable_before_sending(
    bus: Bus, settings: Settings, emulator: AlpacaTradingEmulator
) -> None:
    emulator.book.not_fractionable.add("BRK.A")
    await bus.publish([(ORDERS_NEW, dollars(1, 500.0, symbol="BRK.A")), (ORDERS_NEW, order(2, symbol="BRK.A"))])
    async with execution(alpaca_settings(settings, emulator)):
        await until_finished(bus, {"co-1", "co-2"})
    grouped = by_order(await order_events(bus))
    assert [e.status for e in grouped["co-1"]] == ["submitted", "rejected"]
    assert grouped["co-1"][-1].reason == (
        "BRK.A is not fractionable at the broker: only whole shares, no notional (dollar) orders"
    )
    assert [e.status for e in grouped["co-2"]] == ["submitted", "accepted", "filled"]  # whole shares go
    assert emulator.book.submissions == 1
