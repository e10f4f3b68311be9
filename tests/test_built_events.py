"""Events built inside from validated values (models.built) are the events validation would give.

The strategy's signal, the book's order and the paper broker's fill skip pydantic's validation when
the values they derive are plainly valid; these tests pin that the result is indistinguishable
(equal, same JSON, same fields set) and that anything out of range still goes through the model and
fails the way it always did. Bad input at the edges is dead-lettered as before (tests/test_models.py).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from tradebot.broker.paper import PaperBroker
from tradebot.common.bus.wire import decode, encode
from tradebot.common.models import MAX_QUANTITY, Order, OrderEvent, Signal, Tick, built
from tradebot.strategy.moving_average import MovingAverageCrossover

AT = datetime(2025, 1, 2, 14, 30, tzinfo=UTC)


def signal() -> Signal:
    return MovingAverageCrossover().signal("AAPL", AT, "buy", 187.25, 0.4, "mock:AAPL:7")


def test_a_built_event_equals_the_validated_one_and_writes_the_same_json() -> None:
    values = {"id": "s1", "symbol": "AAPL", "timestamp": AT, "side": "buy", "price": 1.5, "confidence": 0.5,
              "strategy": "x", "tick_id": "t"}  # fmt: skip
    made, validated = built(Signal, **dict(reversed(values.items()))), Signal(**values)  # type: ignore[arg-type]
    assert made == validated
    assert made.model_dump_json() == validated.model_dump_json()  # field order too, whatever order given
    assert made.model_fields_set == validated.model_fields_set
    order = built(Order, id="co-1", symbol="AAPL", side="buy", quantity=2.0, reference_price=1.5, signal_id="s1",
                  timestamp=AT)  # fmt: skip
    assert order == Order(id="co-1", symbol="AAPL", side="buy", quantity=2.0, reference_price=1.5, signal_id="s1",
                          timestamp=AT)  # fmt: skip
    assert order.order_type == "market"
    assert order.time_in_force == "day"
    assert order.limit_price is None


def test_signal_order_and_fill_of_the_live_path_round_trip_the_bus_unchanged() -> None:
    first = signal()
    order = Order.from_signal(first, 10.0)
    event = PaperBroker(100_000.0, 1.0, 0.005).execute(order)
    assert event is not None
    assert event.status == "filled"
    for made in (first, order, event):
        assert decode(encode(made)) == made  # what the next worker reads (validated there) is the same
        assert type(made).model_validate(made.model_dump()) == made


def test_an_int_quantity_or_an_out_of_range_one_goes_through_validation() -> None:
    assert Order.from_signal(signal(), 3).quantity == 3.0  # type: ignore[arg-type]  # converted, as before
    assert type(Order.from_signal(signal(), 3).quantity) is float  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="less than or equal"):
        Order.from_signal(signal(), MAX_QUANTITY * 10)


def test_a_strategy_signal_out_of_range_still_fails_with_its_reason() -> None:
    strategy = MovingAverageCrossover()
    with pytest.raises(ValidationError, match="greater than or equal"):
        strategy.signal("AAPL", AT, "buy", 0.0, 0.5, "t")
    with pytest.raises(ValidationError, match="'buy' or 'sell'"):
        strategy.signal("AAPL", AT, "BUY", 1.0, 0.5, "t")  # type: ignore[arg-type]
    eastern = AT.astimezone(timezone(timedelta(hours=-5)))
    assert strategy.signal("AAPL", eastern, "buy", 1.0, 0.5, "t").timestamp.tzinfo is UTC  # converted


def test_a_paper_fill_priced_out_of_range_is_refused_as_before() -> None:
    broker = PaperBroker(1e12, 0.0, 0.0)
    tiny = Order(id="co-t", symbol="AAPL", side="buy", quantity=1.0, reference_price=0.00001, signal_id="s",
                 timestamp=AT)  # fmt: skip
    with pytest.raises(ValidationError, match="greater than or equal"):  # the fill price rounds to $0.0000
        broker.execute(tiny)


def test_a_tick_decoded_from_the_bus_is_built_like_before() -> None:
    tick = Tick.create("AAPL", 187.25, 100.0, AT)
    read = decode(encode(tick))
    assert read == tick
    assert type(read) is Tick
    assert read.model_fields_set == tick.model_fields_set


def test_events_built_alike_share_no_state_a_copy_can_change() -> None:
    first, second = signal(), MovingAverageCrossover().signal("MSFT", AT, "sell", 10.5, 0.2, "mock:MSFT:1")
    changed = first.model_copy(update={"confidence": 0.9})
    assert changed.model_fields_set == first.model_fields_set  # confidence was given already
    copied = Order.from_signal(first, 1.0).model_copy(update={"limit_price": 2.0})
    assert "limit_price" in copied.model_fields_set
    assert "limit_price" not in Order.from_signal(second, 1.0).model_fields_set  # its own set is untouched
    assert second.confidence == 0.2
    assert first.__dict__ is not second.__dict__


def test_the_live_paths_events_are_their_validated_twins_field_for_field_and_byte_for_byte() -> None:
    # the strategy's signal, Order.from_signal and the paper broker's fills (models.builder: the
    # layout found once) against the same values validated: equal, same fields set, same bus entry
    broker = PaperBroker(100_000.0, 1.0, 0.005)
    bought = signal()
    sold = MovingAverageCrossover().signal("AAPL", AT + timedelta(seconds=1), "sell", 188.5, 0.7, "mock:AAPL:8")
    made: list[Signal | Order | OrderEvent] = []
    for decided in (bought, sold):
        order = Order.from_signal(decided, 10.0)
        fill = broker.execute(order)
        assert fill is not None
        assert fill.status == "filled"
        made += [decided, order, fill]
    for event in made:
        twin = type(event).model_validate(event.model_dump(exclude_unset=True))  # the names it was given
        assert event == twin
        assert event.model_fields_set == twin.model_fields_set
        assert event.model_dump_json() == twin.model_dump_json()
        assert encode(event) == encode(twin)
