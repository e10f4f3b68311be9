"""What the providers' pure converters share: timestamps, trade keys, validated bars.

Each provider module has one converter per record kind: live stream records arrive as the decoded
wire dicts (Alpaca msgpack, Polygon JSON), REST records as the official clients' models (alpaca-py
``Bar``, polygon ``Agg``). A converter returns a Tick or Bar, or raises one of
``CONVERSION_ERRORS`` when the record is not a valid event (a missing field, a zero price, high
below low...). Workers log, count and skip those. No I/O here.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from operator import attrgetter, itemgetter
from typing import Any

import msgpack

from tradebot.common.models import Bar, Tick, Timeframe

# pydantic's ValidationError is a ValueError; the others come from missing or mistyped fields.
CONVERSION_ERRORS = (KeyError, TypeError, ValueError, AttributeError, OverflowError)
STREAM_OHLCV = itemgetter("o", "h", "l", "c", "v")  # the same keys in Alpaca's msgpack and Polygon's JSON
REST_OHLCV = attrgetter("open", "high", "low", "close", "volume")  # alpaca-py Bar, polygon Agg
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
        moment: datetime = value.to_datetime()  # msgpack is untyped
        return moment
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
    ohlcv: Sequence[Any],
    trade_count: Any,
    vwap: Any,
    version: int | None = None,
) -> Bar:
    """A validated Bar whose id names its source and bucket, so a newer version replaces, never doubles."""
    open_, high, low, close, volume = ohlcv
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


def stream_trade(source: str, symbol: Any, timestamp: datetime, message: Mapping[str, Any]) -> Tick:
    """A trade message → Tick: both wire formats carry price ``p``, size ``s``, exchange ``x``, id ``i``."""
    trade_id = trade_key(message.get("x"), message["i"])
    return Tick.create(symbol, message["p"], message["s"], timestamp, source=source, trade_id=trade_id)


def rest_trade(
    source: str, symbol: str, timestamp: datetime, exchange: Any, trade_id: Any, price: Any, size: Any
) -> Tick:
    """A REST client's historical trade → Tick with the id and time its live print would have, so a
    trade that arrived live and again through gap repair is one row (ticks are keyed by both)."""
    exchange = getattr(exchange, "value", exchange)  # alpaca-py may give an Exchange enum
    return Tick.create(symbol, price, size, timestamp, source=source, trade_id=trade_key(exchange, trade_id))


def stream_minute_bar(source: str, symbol: Any, start: datetime, message: Mapping[str, Any], trade_count: Any) -> Bar:
    """A minute-bar message → 1m Bar: both wire formats carry ``o h l c v`` and the VWAP ``vw``."""
    return make_bar(source, symbol, "1m", start, STREAM_OHLCV(message), trade_count, message.get("vw"))


def rest_bar(source: str, symbol: str, timeframe: Timeframe, start: datetime, model: Any, trade_count: Any) -> Bar:
    """A REST client's bar model → Bar: both clients' models name ``open high low close volume vwap``."""
    return make_bar(source, symbol, timeframe, start, REST_OHLCV(model), trade_count, model.vwap)
