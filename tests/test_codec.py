"""The tick codec: pydantic's bytes and pydantic's verdicts, only faster; tick batches as rows."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from tradebot.common.codec import decode_event, decode_rows, encode_event, encode_rows, row_entry_data
from tradebot.common.models import MAX_PRICE, MAX_QUANTITY, MIN_PRICE, MIN_QUANTITY, Signal, Tick
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
