"""The tick codec: pydantic's bytes and pydantic's verdicts, only faster; tick batches as rows; other
events without their defaults."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from tradebot.common.bus.wire import decode, encode, encode_entries, tick_entries
from tradebot.common.codec import decode_event, decode_rows, encode_event, encode_rows, row_entry_data
from tradebot.common.models import (
    MAX_PRICE,
    MAX_QUANTITY,
    MIN_PRICE,
    MIN_QUANTITY,
    Bar,
    ControlEvent,
    EquitySample,
    Event,
    Gap,
    Order,
    OrderChange,
    OrderEvent,
    Signal,
    Tick,
)
from tradebot.market_data.mock_feed import MockFeed, stepping_clock

START = datetime(2025, 1, 2, 14, 30, tzinfo=UTC)


def ticks() -> list[Tick]:
    edges = [
        Tick.create("BRK.A", MAX_PRICE, MAX_QUANTITY, START + timedelta(microseconds=1)),
        Tick.create("X", MIN_PRICE, MIN_QUANTITY, START, source="polygon", trade_id="p-1"),
        Tick.create("AAPL", 0.1 + 0.2, 1e-7, START + timedelta(milliseconds=123)),
    ]
    feed = MockFeed(["AAPL", "MSFT", "NVDA", "ZZZQ"], 3, clock=stepping_clock(START), step=timedelta(microseconds=7))
    return edges + feed.take(3000)


def test_ticks_are_written_byte_for_byte_as_pydantic_writes_them() -> None:
    for tick in ticks():
        assert encode_event(tick) == tick.model_dump_json()


def test_decoded_ticks_equal_validated_ones() -> None:
    for tick in ticks():
        decoded = decode_event(Tick, encode_event(tick))
        assert decoded == Tick.model_validate_json(tick.model_dump_json()) == tick
        assert decoded.timestamp.tzinfo is UTC
        assert decoded.model_dump_json() == tick.model_dump_json()


def data(**changes: object) -> str:
    tick = json.loads(Tick.create("AAPL", 10.0, 5, START).model_dump_json())
    return json.dumps({**tick, **changes})


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"symbol": "AAPL\n"}, "invalid Tick: symbol: String should match pattern"),
        ({"symbol": "aapl"}, "invalid Tick: symbol: String should match pattern"),
        ({"price": 0}, "invalid Tick: price: Input should be greater than or equal to 0.000001"),
        ({"size": 2e10}, "invalid Tick: size: Input should be less than or equal to 10000000000"),
        ({"id": ""}, "invalid Tick: id: String should have at least 1 character"),
        (
            {"timestamp": "2025-01-02T14:30:00"},
            "invalid Tick: timestamp: Value error, timestamp must be timezone-aware",
        ),
        ({"color": "red"}, "invalid Tick: color: Extra inputs are not permitted"),
    ],
)
def test_what_pydantic_refuses_is_refused_with_its_reason(changes: dict[str, object], reason: str) -> None:
    with pytest.raises(ValueError, match=r"^invalid Tick") as refused:
        decode_event(Tick, data(**changes))
    assert str(refused.value).startswith(reason)


def test_what_only_pydantic_accepts_is_still_accepted() -> None:
    assert decode_event(Tick, data(price="10.5")) == Tick.model_validate_json(data(price="10.5"))
    eastern = decode_event(Tick, data(timestamp="2025-01-02T09:30:00-05:00"))
    assert eastern.timestamp == START
    assert eastern.timestamp.tzinfo is UTC
    with pytest.raises(ValueError, match="invalid Tick: payload: Invalid JSON"):
        decode_event(Tick, "{not json")


def test_other_events_keep_pydantic() -> None:
    signal = Signal(
        id="s", symbol="AAPL", timestamp=START, side="buy", price=1.0, confidence=0.5, strategy="x", tick_id="t"
    )
    assert encode_event(signal) == signal.model_dump_json()
    assert decode_event(Signal, encode_event(signal)) == signal


def test_a_batch_of_ticks_round_trips_as_rows_in_the_tick_field_order() -> None:
    sent = ticks()
    data = encode_rows(sent)
    assert decode_rows(data) == sent
    first = json.loads(data)[0]
    assert first == list(json.loads(sent[0].model_dump_json()).values())  # the Tick's values, its field order
    assert encode_rows(decode_rows(data)) == data  # fixed bytes: regenerated ticks give the same entry


@pytest.mark.parametrize("per_entry", [1, 7, 16, 1000])
def test_the_feeds_rows_make_the_entries_its_ticks_make(per_entry: int) -> None:
    """The mock feed publishes its ticks' values (``MockFeed.rows``, ``wire.tick_entries``), not
    Ticks: the entries are those ``encode_entries`` makes of the ticks, byte for byte."""

    def feed() -> MockFeed:
        return MockFeed(["AAPL", "BRK.B", "ZZZQ"], 5, clock=stepping_clock(START), step=timedelta(microseconds=3))

    rows, sent = feed().rows(2000), feed().take(2000)
    assert tick_entries("s", rows, per_entry) == encode_entries([("s", tick) for tick in sent], per_entry)
    assert [Tick.model_validate(tick.model_dump()) for tick in sent] == sent  # built as validation builds them


def test_a_bad_row_fails_alone_with_pydantics_reason_and_its_neighbours_decode() -> None:
    sent = ticks()[:3]
    rows = json.loads(encode_rows(sent))
    rows[1][3] = 0  # price
    rows.insert(2, "not a row")
    rows.append([*rows[0][:3], "10.5", 5, "mock"])  # a number as a string: pydantic's lax rules accept it
    decoded = decode_rows(json.dumps(rows))
    assert decoded[0] == sent[0]
    assert decoded[3] == sent[2]
    assert decoded[1] == "invalid Tick: price: Input should be greater than or equal to 0.000001"
    assert str(decoded[2]).startswith("invalid Tick: row: not an array")
    assert isinstance(decoded[4], Tick)
    assert decoded[4].price == 10.5
    assert json.loads(row_entry_data(json.dumps(rows), 1)) == [rows[1]]  # as it was, for the dead letter


@pytest.mark.parametrize("data", ["[", "[]", '{"id": "x"}', "5"])
def test_an_entry_that_is_no_batch_at_all_is_refused_whole(data: str) -> None:
    with pytest.raises(ValueError, match=r"^invalid Ticks: payload"):
        decode_rows(data)


def other_events() -> list[Event]:
    """One of every other event type, with and without the fields that have defaults."""
    at = START + timedelta(microseconds=5)
    market = Order(
        id="co-1", symbol="AAPL", timestamp=at, side="buy", quantity=3, reference_price=101.5, signal_id="s-1"
    )
    return [
        market,
        market.model_copy(update={"strategy": "ma_crossover_5_20", "quantity": 0.5}),
        Order(id="co-2", symbol="AAPL", timestamp=at, side="buy", notional=250.0, reference_price=100.0, signal_id="s"),
        Order(
            id="co-3",
            symbol="AAPL",
            timestamp=at,
            side="buy",
            quantity=1,
            reference_price=100.0,
            signal_id="s",
            order_type="limit",
            limit_price=99.5,
            time_in_force="gtc",
            take_profit_price=110.0,
            stop_loss_price=95.0,
            order_class="bracket",
        ),
        Order(
            id="co-4",
            symbol="AAPL",
            timestamp=at,
            side="sell",
            quantity=1,
            reference_price=100.0,
            signal_id="s",
            take_profit_price=110.0,
            stop_loss_price=95.0,
            order_class="oco",
        ),  # its limit price and type come from a validator: written, they must read back alike
        Order(
            id="co-5",
            symbol="AAPL",
            timestamp=at,
            side="sell",
            quantity=1,
            reference_price=100.0,
            signal_id="s",
            order_type="trailing_stop",
            trail_percent=1.5,
            time_in_force="gtc",
        ),
        OrderChange(id="ch-1", symbol="AAPL", timestamp=at, action="replace", target="co-3", limit_price=99.0),
        OrderChange(id="ch-2", symbol="AAPL", timestamp=at, action="cancel", target="co-3", reason="by hand"),
        OrderEvent(
            id="e-1",
            symbol="AAPL",
            timestamp=at,
            client_order_id="co-1",
            status="filled",
            side="buy",
            quantity=3,
            price=101.5123,
            commission=0.015,
        ),
        OrderEvent(
            id="e-2",
            symbol="AAPL",
            timestamp=at,
            client_order_id="co-1",
            status="denied",
            side="buy",
            quantity=3,
            reason="rate: too many",
        ),
        Signal(id="s", symbol="AAPL", timestamp=at, side="buy", price=1.0, confidence=0.5, strategy="x", tick_id="t"),
        Bar(
            id="b",
            symbol="AAPL",
            timestamp=START,
            timeframe="1m",
            open=1,
            high=2,
            low=0.5,
            close=1.5,
            volume=10,
            trade_count=3,
        ),
        Bar(
            id="b",
            symbol="AAPL",
            timestamp=START,
            timeframe="1m",
            open=1,
            high=2,
            low=0.5,
            close=1.5,
            volume=10,
            trade_count=3,
            vwap=1.2,
            source="polygon",
            version=7,
        ),
        Gap.create("polygon", "AAPL", START, at, 12),
        ControlEvent(id="c", timestamp=at, action="halt", state="HALTED", actor="op", reason="why", version=2),
        EquitySample(
            id="q",
            timestamp=at,
            cash=1.0,
            equity=2.0,
            gross_exposure=1.0,
            realised_pnl=-0.5,
            unrealised_pnl=0.25,
            drawdown=0.1,
        ),
    ]


def test_other_events_are_written_without_their_defaults_and_read_back_equal() -> None:
    for event in other_events():
        data = encode_event(event)
        assert data == event.model_dump_json(exclude_defaults=True)
        read = decode(encode(event))  # through the bus's decode, as every reader of the streams
        assert read == event
        assert type(read) is type(event)
        assert encode_event(read) == data  # a regenerated event is byte for byte the one written
        assert decode_event(type(event), event.model_dump_json()) == event  # entries written whole still read
    order = json.loads(encode_event(other_events()[0]))
    assert not {"notional", "order_type", "extended_hours", "limit_price"} & set(order)
    assert len(encode_event(other_events()[1])) < len(other_events()[1].model_dump_json()) * 0.6
