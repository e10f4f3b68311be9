"""Provider records → Ticks and Bars, field by field; malformed records raise a conversion error."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgpack
import pytest
from alpaca.data.models import Bar as AlpacaBar
from polygon.rest.models import Agg

from tradebot.common.models import Bar, Tick
from tradebot.providers.alpaca import alpaca_event, alpaca_rest_bar
from tradebot.providers.convert import CONVERSION_ERRORS, as_utc
from tradebot.providers.polygon import polygon_event, polygon_rest_bar

T0 = datetime(2024, 3, 11, 14, 30, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)


def unversioned(bar: object) -> object:
    """A converted bar without its version (when it was received), to compare with a literal Bar."""
    assert isinstance(bar, Bar), bar
    assert bar.version > 0, bar
    return bar.model_copy(update={"version": 0})


def test_alpaca_trade_message_becomes_a_tick() -> None:
    message = {
        "T": "t",
        "S": "AAPL",
        "i": 52983525029461,
        "x": "V",
        "p": 190.25,
        "s": 300,
        "c": ["@"],
        "z": "C",
        "t": msgpack.Timestamp.from_datetime(T0 + timedelta(microseconds=1500)),
    }
    assert alpaca_event(message) == Tick(
        id="alpaca:AAPL:V-52983525029461",
        symbol="AAPL",
        price=190.25,
        size=300,
        timestamp=T0 + timedelta(microseconds=1500),
        source="alpaca",
    )


def test_alpaca_minute_bar_and_its_correction_become_the_same_bar() -> None:
    message = {
        "T": "b",
        "S": "MSFT",
        "o": 410.0,
        "h": 411.5,
        "l": 409.75,
        "c": 411.0,
        "v": 5300,
        "n": 61,
        "vw": 410.6,
        "t": msgpack.Timestamp.from_datetime(T0),
    }
    expected = Bar(
        id=f"alpaca:MSFT:1m:{T0.isoformat()}",
        symbol="MSFT",
        timeframe="1m",
        timestamp=T0,
        open=410.0,
        high=411.5,
        low=409.75,
        close=411.0,
        volume=5300,
        trade_count=61,
        vwap=410.6,
        source="alpaca",
    )
    bar, correction = alpaca_event(message), alpaca_event({**message, "T": "u"})
    assert isinstance(bar, Bar)
    assert isinstance(correction, Bar)
    assert unversioned(bar) == unversioned(correction) == expected  # updatedBars: same id, so it replaces
    assert correction.version > bar.version > 0  # received later: newer, whatever order storage sees them in


def test_alpaca_json_mode_timestamps_and_missing_optional_fields() -> None:
    message = {"T": "b", "S": "MSFT", "o": 1.0, "h": 1.0, "l": 1.0, "c": 1.0, "v": 0, "t": "2024-03-11T14:30:00Z"}
    bar = alpaca_event(message)
    assert isinstance(bar, Bar)
    assert bar.timestamp == T0
    assert bar.trade_count == 0
    assert bar.vwap is None
    assert as_utc("2024-03-11T14:30:00.123456789Z") == T0 + timedelta(microseconds=123456)


def test_alpaca_messages_tradebot_does_not_store_are_ignored() -> None:
    assert alpaca_event({"T": "q", "S": "AAPL", "bp": 1.0}) is None
    assert alpaca_event({"T": "subscription", "trades": ["AAPL"]}) is None


@pytest.mark.parametrize(
    "message",
    [
        {"T": "t", "S": "AAPL", "i": 1, "x": "V", "p": 0, "s": 100, "t": msgpack.Timestamp.from_datetime(T0)},
        {"T": "t", "S": "AAPL", "i": 1, "x": "V", "p": 1.0, "s": 100, "t": "2024-03-11T14:30:00"},  # no zone
        {"T": "t", "S": "aapl", "i": 1, "x": "V", "p": 1.0, "s": 100, "t": msgpack.Timestamp.from_datetime(T0)},
        {"T": "t", "S": "AAPL", "x": "V", "p": 1.0, "s": 100, "t": msgpack.Timestamp.from_datetime(T0)},  # no id
        {"T": "b", "S": "AAPL", "o": 1.0, "h": 1.0, "l": 2.0, "c": 1.0, "v": 1, "t": msgpack.Timestamp(0)},
        ["not", "a", "map"],
    ],
)
def test_malformed_alpaca_messages_raise_a_conversion_error(message: object) -> None:
    with pytest.raises(CONVERSION_ERRORS):
        alpaca_event(message)


def test_polygon_trade_becomes_a_tick() -> None:
    message = {
        "ev": "T",
        "sym": "MSFT",
        "i": "50578",
        "x": 4,
        "p": 215.9721,
        "s": 100,
        "c": [12],
        "t": T0_MS + 813,
        "q": 3,
        "z": 3,
    }
    assert polygon_event(message) == Tick(
        id="polygon:MSFT:4-50578",
        symbol="MSFT",
        price=215.9721,
        size=100,
        timestamp=T0 + timedelta(milliseconds=813),
        source="polygon",
    )


def test_polygon_minute_aggregate_becomes_a_bar_with_an_estimated_trade_count() -> None:
    message = {
        "ev": "AM",
        "sym": "AAPL",
        "v": 12_345,
        "av": 99_000,
        "op": 150.0,
        "vw": 151.87,
        "o": 150.85,
        "c": 152.9,
        "h": 153.17,
        "l": 150.5,
        "a": 151.0,
        "z": 100,
        "s": T0_MS,
        "e": T0_MS + 60_000,
    }
    assert unversioned(polygon_event(message)) == Bar(
        id=f"polygon:AAPL:1m:{T0.isoformat()}",
        symbol="AAPL",
        timeframe="1m",
        timestamp=T0,
        open=150.85,
        high=153.17,
        low=150.5,
        close=152.9,
        volume=12_345,
        trade_count=123,
        vwap=151.87,
        source="polygon",
    )
    without_size = polygon_event({k: v for k, v in message.items() if k != "z"})
    assert isinstance(without_size, Bar)
    assert without_size.trade_count == 0


def test_polygon_statuses_and_other_events_are_ignored_but_elements_need_ev() -> None:
    assert polygon_event({"ev": "Q", "sym": "AAPL"}) is None
    for element in ({"sym": "AAPL"}, "T", {"ev": "T", "sym": "AAPL", "i": "1", "p": 1.0, "s": 1, "t": "soon"}):
        with pytest.raises(CONVERSION_ERRORS):
            polygon_event(element)


def test_rest_bars_of_both_clients_become_bars_of_the_requested_timeframe() -> None:
    alpaca = AlpacaBar(
        "AAPL",
        {
            "t": "2024-03-11T04:00:00Z",
            "o": 170.0,
            "h": 172.0,
            "l": 169.0,
            "c": 171.0,
            "v": 4.1e7,
            "n": 435_528,
            "vw": 170.9,
        },
    )
    day = datetime(2024, 3, 11, 4, tzinfo=UTC)
    assert unversioned(alpaca_rest_bar(alpaca, "1d")) == Bar(
        id=f"alpaca:AAPL:1d:{day.isoformat()}",
        symbol="AAPL",
        timeframe="1d",
        timestamp=day,
        open=170.0,
        high=172.0,
        low=169.0,
        close=171.0,
        volume=4.1e7,
        trade_count=435_528,
        vwap=170.9,
        source="alpaca",
    )
    agg = Agg(
        open=74.06,
        high=75.15,
        low=73.7975,
        close=75.0875,
        volume=135_647_456,
        vwap=74.6099,
        timestamp=T0_MS,
        transactions=1,
    )
    assert unversioned(polygon_rest_bar("AAPL", agg, "1h")) == Bar(
        id=f"polygon:AAPL:1h:{T0.isoformat()}",
        symbol="AAPL",
        timeframe="1h",
        timestamp=T0,
        open=74.06,
        high=75.15,
        low=73.7975,
        close=75.0875,
        volume=135_647_456,
        trade_count=1,
        vwap=74.6099,
        source="polygon",
    )
