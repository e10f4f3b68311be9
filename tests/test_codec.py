"""The tick codec: pydantic's bytes and pydantic's verdicts, only faster; tick batches as rows; other
events without their defaults."""

from __future__ import annotations

import json
import re
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


# The storage worker's strict decoders of signals, orders and order events (codec.wire_event): never
# looser than pydantic, and the rows the writer makes of what they accept are pydantic's, exactly.
TRADING = (Signal, Order, OrderEvent)


def trading_events() -> list[Event]:
    """What the pipeline publishes (a strategy's signal, its order, the paper fill) and the other
    forms of the three in other_events."""
    signal = Signal(
        id="sig-1",
        symbol="BRK.A",
        timestamp=START,
        side="sell",
        price=MAX_PRICE,
        confidence=1,
        strategy="m",
        tick_id="t",
    )
    order = Order.from_signal(signal, 0.5)
    fill = OrderEvent(
        id="f", symbol="BRK.A", timestamp=START, client_order_id=order.id, status="filled", side="sell",
        quantity=0.5, price=MIN_PRICE, commission=0.0, reason=None,
    )  # fmt: skip
    return [signal, order, fill, *(e for e in other_events() if type(e) in TRADING)]


def wire_forms(event: Event) -> list[str]:
    """The event's entry data, whole, and changed in every way one field can be that matters."""
    base = json.loads(encode_event(event))
    whole = json.loads(event.model_dump_json())
    changes: list[dict[str, object]] = [
        {"timestamp": "2025-01-02T09:30:00.000005-05:00"},
        {"timestamp": "2025-01-02 14:30:00Z"},
        {"timestamp": "2025-01-02t14:30:00z"},
        {"timestamp": "2025-01-02T14:30:00.1234565Z"},
        {"timestamp": "2025-01-02T14:30:00.9999999Z"},
        {"timestamp": "2025-01-02T14:30:00-00:00"},
        {"timestamp": "2025-01-02T14:30:00+23:59"},
        {"timestamp": "2025-01-02T23:59:60Z"},
        {"timestamp": "2025-01-02T14:30:00"},
        {"timestamp": "2025-01-02T14:30Z"},
        {"timestamp": "2025-01-02"},
        {"timestamp": 1735828200},
        {"timestamp": None},
        {"symbol": "aapl"},
        {"symbol": "AAPL\n"},
        {"symbol": "\u00c4APL"},
        {"symbol": "ABCDEFGHIJK"},
        {"symbol": "A-B.C"},
        {"symbol": 5},
        {"id": ""},
        {"id": "x" * 100},
        {"id": "x" * 101},
        {"id": "\u00e9" * 100},
        {"id": 7},
        {"side": "BUY"},
        {"side": None},
        {"price": "10.5"},
        {"price": 0},
        {"price": MIN_PRICE},
        {"price": MIN_PRICE * 0.999},
        {"price": MAX_PRICE},
        {"price": MAX_PRICE * 1.0000001},
        {"price": 100},
        {"price": True},
        {"price": None},
        {"price": 0.1 + 0.2},
        {"confidence": 1.0000001},
        {"confidence": -0.0},
        {"confidence": 0},
        {"quantity": 0},
        {"quantity": MIN_QUANTITY},
        {"quantity": MAX_QUANTITY * 1.01},
        {"quantity": "3"},
        {"quantity": 12345678901234567890},
        {"reference_price": 0},
        {"notional": None},
        {"notional": 250.0},
        {"order_type": "market"},
        {"order_type": "limit"},
        {"time_in_force": "day"},
        {"time_in_force": "gtc"},
        {"extended_hours": False},
        {"order_class": None},
        {"strategy": None},
        {"strategy": 5},
        {"tick_id": None},
        {"status": "filled", "price": None},
        {"status": "partially_filled", "quantity": 0},
        {"status": "accepted", "price": None},
        {"status": "done"},
        {"commission": -1},
        {"commission": 1e300},
        {"reason": None},
        {"broker_order_id": "b-1"},
        {"filled_quantity": 2e10},
        {"filled_quantity": None},
        {"color": "red"},
    ]
    forms = [json.dumps(base), json.dumps(whole), json.dumps({**base, **{"id": base["id"]}}, indent=1)]
    forms += [json.dumps({**base, **change}) for change in changes]
    forms += [json.dumps({k: v for k, v in base.items() if k != name}) for name in base]  # each field left out
    text = json.dumps(base)
    forms += [
        text.replace('"id": ', '"id": "first", "id": ', 1),  # a repeated key: the last one counts
        text[:-1] + ', "price": NaN}',
        text[:-1] + ', "price": Infinity}',
        text[:-1] + ', "price": 1e400}',
        text[:-1],
        *(
            re.sub(r'"timestamp": "[^"]*"', lambda _, stamp=stamp: f'"timestamp": "{stamp}"', text)
            for stamp in (
                r"2025-01-02T14:30:00\u002e1234567Z",
                r"2025-01-02T14:30:00.1234567\u005a",
                r"2025-01-02T14:30:00.123456\u005a",
                "2025-01-02T14:30:00.12345678z",
                "2025-01-02T14:30:00.1234567+0000",
                "2025-01-02T09:30:00.1234567-05:00",
            )
        ),
        "null",
        "[]",
        "{}",
        "",
    ]
    return forms


def typed(row: tuple[object, ...]) -> list[tuple[str, str]]:
    """A row as its values' types and reprs: equal only when every value is the same, bit for bit."""
    return [(type(value).__name__, repr(value)) for value in row]


def test_the_strict_event_decoders_accept_only_what_pydantic_accepts_and_give_its_rows() -> None:
    from tradebot.common.codec import wire_event
    from tradebot.storage.writer import TABLES

    accepted = refused_by_both = left_to_pydantic = 0
    for event in trading_events():
        model = type(event)
        for data in wire_forms(event):
            try:
                validated: Event | None = model.model_validate_json(data)
            except ValueError:
                validated = None
            fast = wire_event(model.__name__, data)
            if fast is None:
                refused_by_both += validated is None
                left_to_pydantic += validated is not None
                continue
            assert validated is not None, f"the strict {model.__name__} decoder accepts what pydantic refuses: {data}"
            assert typed(TABLES[model].row(fast)) == typed(TABLES[model].row(validated)), data
            assert fast.timestamp.tzinfo is UTC
            accepted += 1
    # every kind of case came up
    assert accepted > 100
    assert refused_by_both > 300
    assert left_to_pydantic > 20


def test_the_signals_orders_and_fills_the_pipeline_publishes_take_the_strict_path() -> None:
    from tradebot.common.codec import wire_event

    for event in trading_events()[:3]:
        assert wire_event(type(event).__name__, encode_event(event)) is not None, event
    assert wire_event("Bar", encode_event(other_events()[-4])) is None  # no strict schema: pydantic decodes it


@pytest.mark.parametrize("symbol", ["aapl", "AAPL\n", "\u00c4APL", "ABCDEFGHIJK", "", "A B"])
def test_a_tick_row_with_a_bad_symbol_fails_the_strict_decode_and_alone(symbol: str) -> None:
    from tradebot.common.codec import wire_rows

    good = encode_rows(ticks()[:2])
    rows = json.loads(good)
    assert wire_rows(good) is not None
    rows[1][1] = symbol
    bad = json.dumps(rows)
    assert wire_rows(bad) is None  # the symbol is checked even after that of the same row was seen valid
    first, second = decode_rows(bad)
    assert isinstance(first, Tick)
    assert isinstance(second, str)
    assert second.startswith("invalid Tick: symbol: String should match pattern"), second
