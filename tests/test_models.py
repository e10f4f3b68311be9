"""Event validation and stable ids (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from hashlib import blake2b

import pytest
from pydantic import ValidationError

from tradebot.common.bus.wire import decode, encode
from tradebot.common.models import Bar, Order, OrderEvent, Signal, Tick, stable_id

NOW = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)


def bar(**changes: object) -> Bar:
    fields = dict(
        id="b1",
        symbol="AAPL",
        timestamp=NOW,
        timeframe="1m",
        open=10,
        high=12,
        low=9,
        close=11,
        volume=100,
        trade_count=5,
        vwap=10.5,
    )
    return Bar(**(fields | changes))  # type: ignore[arg-type]


@pytest.mark.parametrize("symbol", ["aapl", "1ABC", "TOOLONGSYMBOL", "", "A B"])
def test_symbols_must_match_the_ticker_pattern(symbol: str) -> None:
    with pytest.raises(ValidationError, match="symbol"):
        Tick.create(symbol, 1.0, 1, NOW)


def test_valid_tickers_with_class_suffixes_pass() -> None:
    assert Tick.create("BRK.B", 400.0, 1, NOW).symbol == "BRK.B"


@pytest.mark.parametrize("field", ["price", "size"])
def test_prices_and_sizes_must_be_positive(field: str) -> None:
    values = {"price": 1.0, "size": 1.0} | {field: 0}
    with pytest.raises(ValidationError, match=field):
        Tick(id="t", symbol="AAPL", timestamp=NOW, **values)  # type: ignore[arg-type]


def test_naive_timestamps_are_rejected_and_aware_ones_become_utc() -> None:
    with pytest.raises(ValidationError, match="timezone-aware"):
        Tick.create("AAPL", 1.0, 1, NOW.replace(tzinfo=None))
    eastern = NOW.astimezone(timezone(timedelta(hours=-5)))
    assert Tick.create("AAPL", 1.0, 1, eastern).timestamp.utcoffset() == timedelta(0)


def test_events_are_frozen_and_reject_unknown_fields() -> None:
    tick = Tick.create("AAPL", 1.0, 1, NOW)
    with pytest.raises(ValidationError):
        tick.price = 2.0  # type: ignore[misc]
    with pytest.raises(ValidationError, match="extra"):
        Tick(id="t", symbol="AAPL", timestamp=NOW, price=1, size=1, color="red")  # type: ignore[call-arg]


def test_bars_need_a_consistent_range() -> None:
    with pytest.raises(ValidationError, match="high must be >= low"):
        bar(high=8, low=9, open=8.5, close=8.5)
    with pytest.raises(ValidationError, match="within"):
        bar(close=13)
    assert bar().high == 12


def test_ids_are_stable_from_signal_to_order() -> None:
    tick = Tick.create("AAPL", 220.0, 5, NOW, trade_id=7)
    assert tick.id == Tick.create("AAPL", 220.0, 5, NOW, trade_id=7).id == "mock:AAPL:7"
    signal = Signal(
        id="s1", symbol="AAPL", timestamp=NOW, side="buy", price=220.0, confidence=0.5, strategy="sma", tick_id=tick.id
    )
    assert Order.from_signal(signal, 10).id == Order.from_signal(signal, 10).id
    assert Order.from_signal(signal, 10).reference_price == 220.0


def test_a_fill_needs_a_price() -> None:
    with pytest.raises(ValidationError, match="price"):
        OrderEvent(id="f", symbol="AAPL", timestamp=NOW, client_order_id="co", status="filled", side="buy", quantity=1)


def test_the_wire_format_round_trips_and_names_what_is_wrong() -> None:
    tick = Tick.create("AAPL", 1.5, 2, NOW)
    assert decode(encode(tick)) == tick
    with pytest.raises(ValueError, match="unknown event type 'Nope'"):
        decode({**encode(tick), "type": "Nope"})
    with pytest.raises(ValueError, match="unsupported schema version '9'"):
        decode({**encode(tick), "v": "9"})


@pytest.mark.parametrize(
    ("price", "size"), [(1e200, 1.0), (100.0, 1e200), (float("inf"), 1.0), (1e-200, 1.0), (100.0, 1e-200)]
)
def test_absurd_prices_and_sizes_are_rejected(price: float, size: float) -> None:
    with pytest.raises(ValidationError):
        Tick.create("BIG", price, size, NOW)


def test_stable_ids_are_the_blake2b_of_the_parts_joined_whatever_their_types() -> None:
    # ids are idempotency keys already stored: the two-string fast path must give the very same bytes
    class Kind(str):  # a str subclass goes through str(), as every part always did
        def __str__(self) -> str:
            return "kind"

    def expected(text: str) -> str:
        return blake2b(text.encode(), digest_size=12).hexdigest()

    assert stable_id("fill", "co-abc") == expected("fill|co-abc")
    assert stable_id("order-change", "x", "filled") == expected("order-change|x|filled")
    assert stable_id("2025-01-02T14:30:00+00:00", 187.25, 3) == expected("2025-01-02T14:30:00+00:00|187.25|3")
    assert stable_id(Kind("fill"), "co-abc") == expected("kind|co-abc")
    assert stable_id("only") == expected("only")
    # the kept hash of "<kind>|" is copied, never updated: again and again the same id, and so past
    # the bound on kinds kept (hashed from scratch there) and for non-ASCII text
    for attempt in range(3):
        assert stable_id("fill", "co-abc") == expected("fill|co-abc"), attempt
    for number in range(400):
        assert stable_id(f"kind-{number}", f"x{number}") == expected(f"kind-{number}|x{number}")
    assert stable_id("stratégie", "tick-é") == expected("stratégie|tick-é")
    assert stable_id("", "") == expected("|")
