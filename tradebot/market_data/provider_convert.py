"""Pure converters from provider records to tradebot events: one function per record kind.

Live stream records arrive as the decoded wire dicts (Alpaca msgpack, Polygon JSON); REST records
as the official clients' models (alpaca-py ``Bar``, polygon ``Agg``). Each function returns a Tick
or Bar, or raises one of ``CONVERSION_ERRORS`` when the record is not a valid event (a missing
field, a zero price, high below low...). Workers log, count and skip those. No I/O here.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import msgpack
from alpaca.data.models import Bar as AlpacaBar
from polygon.rest.models import Agg

from tradebot.common.models import Bar, Tick, Timeframe

ALPACA = "alpaca"
POLYGON = "polygon"
# pydantic's ValidationError is a ValueError; the others come from missing or mistyped fields.
CONVERSION_ERRORS = (KeyError, TypeError, ValueError, AttributeError, OverflowError)
ALPACA_BAR_TYPES = {"b", "u"}  # minute bars and their late-trade corrections ("updatedBars")
_last_version = 0


def receipt_version() -> int:
    """A bar's version when the provider gives no update time: now in microseconds, strictly rising.

    Neither provider stamps its minute bars or aggregates with an update time, so the order in
    which tradebot received or fetched them stands in: a correction received later is newer.
    """
    global _last_version
    _last_version = max(time.time_ns() // 1000, _last_version + 1)
    return _last_version


def as_utc(value: Any) -> datetime:
    """A provider timestamp as aware UTC: msgpack Timestamp, aware datetime or RFC-3339 text."""
    if isinstance(value, msgpack.Timestamp):
        return value.to_datetime()
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise TypeError(f"not a timestamp: {value!r}")
    if value.tzinfo is None:
        raise ValueError(f"timestamp without a time zone: {value!r}")
    return value.astimezone(UTC)


def from_unix_ms(value: Any) -> datetime:
    """Polygon's Unix milliseconds as aware UTC."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"not Unix milliseconds: {value!r}")
    return datetime.fromtimestamp(value / 1000, UTC)


def trade_key(exchange: Any, trade_id: Any) -> str:
    """A provider trade id qualified by its exchange: both providers number trades per venue."""
    if trade_id is None or trade_id == "":
        raise KeyError("trade id")
    return f"{exchange}-{trade_id}" if exchange not in (None, "") else str(trade_id)


def make_bar(
    source: str,
    symbol: str,
    timeframe: Timeframe,
    start: datetime,
    *,
    open_: Any,
    high: Any,
    low: Any,
    close: Any,
    volume: Any,
    trade_count: Any,
    vwap: Any,
    version: int | None = None,
) -> Bar:
    """A validated Bar whose id names its source and bucket, so a newer version replaces, never doubles."""
    return Bar(
        id=Bar.bar_id(source, symbol, timeframe, start),
        symbol=symbol,
        timeframe=timeframe,
        timestamp=start,
        open=open_,
        high=high,
        low=low,
        close=close,
        volume=volume,
        trade_count=int(trade_count or 0),
        vwap=vwap if vwap else None,
        source=source,
        version=receipt_version() if version is None else version,
    )


# ----- Alpaca stream (msgpack dicts, alpaca-py raw_data=True) ----------------------------------------


def alpaca_trade(message: Mapping[str, Any]) -> Tick:
    """``{"T":"t","S","i","x","p","s","t",...}`` → Tick."""
    return Tick.create(
        message["S"],
        message["p"],
        message["s"],
        as_utc(message["t"]),
        source=ALPACA,
        trade_id=trade_key(message.get("x"), message["i"]),
    )


def alpaca_minute_bar(message: Mapping[str, Any]) -> Bar:
    """``{"T":"b"|"u","S","o","h","l","c","v","t","n","vw"}`` (``t`` = bucket start) → 1m Bar."""
    return make_bar(
        ALPACA,
        message["S"],
        "1m",
        as_utc(message["t"]),
        open_=message["o"],
        high=message["h"],
        low=message["l"],
        close=message["c"],
        volume=message["v"],
        trade_count=message.get("n"),
        vwap=message.get("vw"),
    )


def alpaca_event(message: Any) -> Tick | Bar | None:
    """The event in one Alpaca stream message; None for kinds tradebot does not store."""
    if not isinstance(message, Mapping):
        raise TypeError(f"not a message object: {message!r}")
    kind = message.get("T")
    if kind == "t":
        return alpaca_trade(message)
    if kind in ALPACA_BAR_TYPES:
        return alpaca_minute_bar(message)
    return None


# ----- Polygon stream (JSON dicts, WebSocketClient raw=True) ---------------------------------------


def polygon_trade(message: Mapping[str, Any]) -> Tick:
    """``{"ev":"T","sym","i","x","p","s","t"(ms),...}`` → Tick."""
    return Tick.create(
        message["sym"],
        message["p"],
        message["s"],
        from_unix_ms(message["t"]),
        source=POLYGON,
        trade_id=trade_key(message.get("x"), message["i"]),
    )


def polygon_minute_bar(message: Mapping[str, Any]) -> Bar:
    """``{"ev":"AM","sym","o","h","l","c","v","vw","z","s"(ms),"e"}`` → 1m Bar.

    AM carries no trade count, only the average trade size ``z``; the count is estimated as
    volume / z (0 when z is missing).
    """
    volume, average_size = message["v"], message.get("z")
    trade_count = round(volume / average_size) if average_size else 0
    return make_bar(
        POLYGON,
        message["sym"],
        "1m",
        from_unix_ms(message["s"]),
        open_=message["o"],
        high=message["h"],
        low=message["l"],
        close=message["c"],
        volume=volume,
        trade_count=trade_count,
        vwap=message.get("vw"),
    )


def polygon_event(message: Any) -> Tick | Bar | None:
    """The event in one Polygon stream element; None for statuses and kinds tradebot ignores."""
    if not isinstance(message, Mapping) or "ev" not in message:
        raise KeyError(f"element without 'ev': {message!r}")
    if message["ev"] == "T":
        return polygon_trade(message)
    if message["ev"] == "AM":
        return polygon_minute_bar(message)
    return None


# ----- REST history (client models) ------------------------------------------------------------------


def alpaca_rest_bar(bar: AlpacaBar, timeframe: Timeframe) -> Bar:
    """An alpaca-py historical Bar → Bar of ``timeframe``."""
    return make_bar(
        ALPACA,
        bar.symbol,
        timeframe,
        as_utc(bar.timestamp),
        open_=bar.open,
        high=bar.high,
        low=bar.low,
        close=bar.close,
        volume=bar.volume,
        trade_count=bar.trade_count,
        vwap=bar.vwap,
    )


def polygon_rest_bar(symbol: str, agg: Agg, timeframe: Timeframe) -> Bar:
    """A polygon ``Agg`` (``timestamp`` = window start, Unix ms) → Bar of ``timeframe``."""
    return make_bar(
        POLYGON,
        symbol,
        timeframe,
        from_unix_ms(agg.timestamp),
        open_=agg.open,
        high=agg.high,
        low=agg.low,
        close=agg.close,
        volume=agg.volume,
        trade_count=agg.transactions,
        vwap=agg.vwap,
    )
