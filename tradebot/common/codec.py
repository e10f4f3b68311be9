"""The JSON of bus events, fast where it counts: ticks through msgspec, everything else through pydantic.

Ticks are nearly every entry on the bus, and pydantic costs several microseconds to validate or
dump each one. msgspec does the same work for the :class:`Tick` schema in a fraction of that and
writes the same bytes pydantic writes for a tick (field order, ``Z`` timestamps, shortest floats;
checked by tests/test_codec.py).

On the bus ticks travel several to an entry (schema version 2, type ``Ticks``): ``data`` is a JSON
array of rows, one per tick, each the tick's values in the Tick's field order (``["id", "AAPL",
"2025-01-02T14:30:00Z", 10.5, 100.0, "mock"]``): no field names, and one entry's overhead for many
ticks. The encoding is fixed (msgspec, the same shortest floats and ``Z`` timestamps), so ticks
regenerated into the same entries give the same bytes. A row that fails validation fails alone:
:func:`decode_rows` says which one and why, and its neighbours decode (a single-tick entry of it
is what a dead-letter record keeps, see :func:`row_entry_data`).

Decoding never accepts what pydantic would refuse. The msgspec schema below is pydantic's
:class:`Tick` made stricter, never looser (RFC 3339 timestamps only, numbers as numbers); an entry it
refuses goes through pydantic, which either accepts it (with its lax rules) or gives the reason the
dead-letter record shows. Other events are rare (a signal per few ticks), so they keep pydantic,
and are written without the fields that hold their defaults (:func:`encode_event`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from sys import intern
from typing import Annotated, Any, Literal

import msgspec
from pydantic import ValidationError

from tradebot.common.models import (
    MAX_PRICE,
    MAX_QUANTITY,
    MIN_PRICE,
    MIN_QUANTITY,
    Event,
    Order,
    OrderEvent,
    OrderStatus,
    Side,
    Signal,
    Tick,
    built,
    check_fill,
)

# pydantic's pattern is matched to the very end; Python's ``$`` would also allow a trailing newline.
_SYMBOL = r"^[A-Z][A-Z0-9.\-]{0,9}\Z"


class _WireTick(msgspec.Struct, forbid_unknown_fields=True):
    """A tick's JSON as pydantic's Tick accepts it, minus its lax conversions."""

    id: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    symbol: Annotated[str, msgspec.Meta(pattern=_SYMBOL)]
    timestamp: Annotated[datetime, msgspec.Meta(tz=True)]
    price: Annotated[float, msgspec.Meta(ge=MIN_PRICE, le=MAX_PRICE)]
    size: Annotated[float, msgspec.Meta(ge=MIN_QUANTITY, le=MAX_QUANTITY)]
    source: str = "mock"


class _WireRow(msgspec.Struct, array_like=True, forbid_unknown_fields=True, gc=False):
    """One row of a tick-batch entry: a tick's values in the Tick's field order, as _WireTick checks
    them, but for the symbol's pattern: :func:`_symbols_valid` checks each symbol once, not each row
    (the pattern was ~40 % of decoding a row). Untracked by the cycle collector: it holds no containers."""

    id: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    symbol: str
    timestamp: Annotated[datetime, msgspec.Meta(tz=True)]
    price: Annotated[float, msgspec.Meta(ge=MIN_PRICE, le=MAX_PRICE)]
    size: Annotated[float, msgspec.Meta(ge=MIN_QUANTITY, le=MAX_QUANTITY)]
    source: str


_decode_tick = msgspec.json.Decoder(_WireTick).decode
_decode_rows = msgspec.json.Decoder(list[_WireRow]).decode
_symbol_match = re.compile(_SYMBOL).match  # what msgspec's pattern does (a search from ``^``: a match)
_KNOWN_SYMBOLS_KEPT = 100_000  # bounded: a feed of ever new symbols only checks them again
_known_symbols: set[str] = set()  # symbols of rows already found valid


def _symbols_valid(rows: list[_WireRow]) -> bool:
    """Whether every row's symbol matches the symbol pattern (each new symbol checked once)."""
    known = _known_symbols
    for row in rows:
        symbol = row.symbol
        if symbol not in known:
            if _symbol_match(symbol) is None:
                return False
            if len(known) >= _KNOWN_SYMBOLS_KEPT:
                known.clear()
            known.add(symbol)
    return True


_decode_any = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode
_TICK_FIELDS = ("id", "symbol", "timestamp", "price", "size", "source")
# A tick's values in the Tick's field order: a row of a tick-batch entry, before encoding.
TickRow = tuple[str, str, datetime, float, float, str]


def built_tick(id: str, symbol: str, timestamp: datetime, price: float, size: float, source: str) -> Tick:
    """A Tick from values already known to be valid (a UTC timestamp, floats in range), unvalidated
    (``models.built``); only callers that checked the values themselves (the decoder above, the
    mock feed) may use it."""
    return built(Tick, id=id, symbol=symbol, timestamp=timestamp, price=price, size=size, source=source)


def encode_event(event: Event) -> str:
    """The ``data`` field of an event: the JSON pydantic would write, written faster for ticks.

    Other events leave out the fields that hold their default (most of an order's are None):
    decoding puts the defaults back, so the event read equals the one written, entries written
    whole (before) read alike, and the schema version stays. The same event is always the same bytes.
    """
    if type(event) is Tick:
        return _encode(event.__dict__).decode()
    return event.model_dump_json(exclude_defaults=True)


def encode_rows(ticks: list[Tick]) -> str:
    """The ``data`` field of a tick-batch entry: one row per tick, in order (fixed bytes for given ticks)."""
    return encode_row_values([(t.id, t.symbol, t.timestamp, t.price, t.size, t.source) for t in ticks])


def encode_row_values(rows: Sequence[TickRow | _WireRow]) -> str:
    """:func:`encode_rows` of ticks given as their values in the Tick's field order (a UTC timestamp,
    floats in range: unchecked here, as for ``built_tick``), or as rows :func:`wire_rows` decoded:
    the same bytes, without Tick objects."""
    return _encode(rows).decode()


def decode_rows(data: str) -> list[Tick | str]:
    """The ticks of a tick-batch entry's ``data``, in order; a row that is not a valid tick comes
    back as the reason it is not (its neighbours are unaffected). Raises ValueError when ``data``
    as a whole is no batch (not JSON, not a non-empty array)."""
    try:
        wires = _decode_rows(data)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return _rows_one_by_one(data)  # which rows fail, and why (rare: only malformed entries)
    if not _symbols_valid(wires):
        return _rows_one_by_one(data)
    if not wires:
        raise ValueError("invalid Ticks: payload: not a non-empty array of rows")
    return [_tick_of(wire) for wire in wires]


def _rows_one_by_one(data: str) -> list[Tick | str]:
    try:
        rows = _decode_any(data)
    except msgspec.DecodeError as error:
        raise ValueError(f"invalid Ticks: payload: {error}") from None
    if not isinstance(rows, list) or not rows:
        raise ValueError("invalid Ticks: payload: not a non-empty array of rows")
    return [_row_or_reason(row) for row in rows]


def _row_or_reason(row: Any) -> Tick | str:
    """A row as a tick (the strict schema first, then pydantic's lax rules, as for a single tick), else why not."""
    if not isinstance(row, list) or len(row) != len(_TICK_FIELDS):
        return f"invalid Tick: row: not an array of the {len(_TICK_FIELDS)} values {', '.join(_TICK_FIELDS)}"
    try:
        tick = decode_event(Tick, _encode(dict(zip(_TICK_FIELDS, row, strict=True))).decode())
    except ValueError as error:
        return str(error)
    assert isinstance(tick, Tick)
    return tick


def _tick_of(wire: _WireRow) -> Tick:
    stamp = wire.timestamp if wire.timestamp.tzinfo is UTC else wire.timestamp.astimezone(UTC)
    # A decoded batch gives each tick its own copy of the symbol and source; interned, the ticks a
    # reader holds (a batch, the entries since a snapshot) share one string each (~100 B a tick less).
    return built_tick(wire.id, intern(wire.symbol), stamp, wire.price, wire.size, intern(wire.source))


def row_entry_data(data: str, index: int) -> str:
    """The ``data`` of a single-tick batch entry holding row ``index`` of ``data`` as it is (valid or
    not): what the dead-letter record of one tick of a batch keeps, for ``tradebot dlq replay``."""
    return _encode([_decode_any(data)[index]]).decode()


_decode_row_count = msgspec.json.Decoder(list[msgspec.Raw]).decode


def row_count(data: str) -> int:
    """How many rows (ticks, valid or not) a tick-batch entry's ``data`` holds, without decoding
    them; 1 when it is no array at all (the entry counts as one, if only as a dead letter)."""
    try:
        return len(_decode_row_count(data)) or 1
    except (msgspec.ValidationError, msgspec.DecodeError):
        return 1


def decode_event(model: type[Event], data: str) -> Event:
    """The event of type ``model`` in ``data``; raises ValueError with the first reason it is invalid."""
    if model is Tick:
        try:
            wire = _decode_tick(data)
        except (msgspec.ValidationError, msgspec.DecodeError):
            pass  # maybe valid under pydantic's lax rules; pydantic decides below, and says why not
        else:
            stamp = wire.timestamp if wire.timestamp.tzinfo is UTC else wire.timestamp.astimezone(UTC)
            return built_tick(wire.id, wire.symbol, stamp, wire.price, wire.size, wire.source)
    try:
        return model.model_validate_json(data)
    except ValidationError as error:
        raise ValueError(f"invalid {model.__name__}: {_first_error(error)}") from None


def _first_error(error: ValidationError) -> str:
    first: dict[str, Any] = dict(error.errors()[0])
    where = ".".join(str(part) for part in first["loc"]) or "payload"
    return f"{where}: {first['msg']}"


WireTick = _WireTick  # what wire_tick gives
WireRow = _WireRow  # what wire_rows gives


def wire_tick(data: str) -> WireTick | None:
    """The tick in a tick entry's ``data`` as a plain struct (id, symbol, timestamp, price, size,
    source) when it passes the strict schema decode_event tries first; None when it does not (then
    only decode_event can say whether it is valid). For readers that need a tick's values, not a
    Tick: building the pydantic object costs as much as the decoding."""
    try:
        return _decode_tick(data)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None


def wire_rows(data: str) -> list[WireRow] | None:
    """As :func:`wire_tick`, for a tick-batch entry's ``data``: its rows as plain structs when every
    one passes the strict schema, else None (then :func:`decode_rows` says which)."""
    try:
        rows = _decode_rows(data)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    return rows if _symbols_valid(rows) else None


def tick_json(row: WireRow) -> str:
    """The JSON object of a tick (as :func:`encode_event` writes it) from a row of a batch entry."""
    return _encode({name: getattr(row, name) for name in _TICK_FIELDS}).decode()


# Signals, orders and order events as the storage worker reads them: one per ~16 ticks each, and
# pydantic's validation of one cost ~10 µs (~2 µs per stored tick for the three). Each schema is the
# model's made stricter, never looser, as _WireTick is Tick's: the same fields, bounds and
# literals, RFC 3339 timestamps and numbers as numbers only, and the model's own rules (an order:
# only a plain market day order, which passes every rule of Order; an order event: check_fill).
# An entry a schema refuses goes through decode_event: pydantic accepts it or says why not.
_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
_Symbol = Annotated[str, msgspec.Meta(pattern=_SYMBOL)]
_Stamp = Annotated[datetime, msgspec.Meta(tz=True)]
_Price = Annotated[float, msgspec.Meta(ge=MIN_PRICE, le=MAX_PRICE)]


class _WireEvent(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    id: _Id
    symbol: _Symbol
    timestamp: _Stamp

    def __post_init__(self) -> None:
        if self.timestamp.tzinfo is not UTC:  # the model's timestamps are UTC
            self.timestamp = self.timestamp.astimezone(UTC)


class _WireSignal(_WireEvent):
    side: Side
    price: _Price
    confidence: Annotated[float, msgspec.Meta(ge=0, le=1)]
    strategy: str
    tick_id: str


class _WireOrder(_WireEvent):
    side: Side
    quantity: Annotated[float, msgspec.Meta(ge=MIN_QUANTITY, le=MAX_QUANTITY)]
    reference_price: _Price
    signal_id: str
    order_type: Literal["market"] = "market"
    time_in_force: Literal["day"] = "day"
    strategy: str | None = None


class _WireOrderEvent(_WireEvent):
    client_order_id: str
    status: OrderStatus
    side: Side
    quantity: Annotated[float, msgspec.Meta(ge=0, le=MAX_QUANTITY)]
    price: _Price | None = None
    commission: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    reason: str | None = None
    broker_order_id: str | None = None
    filled_quantity: Annotated[float, msgspec.Meta(ge=0, le=MAX_QUANTITY)] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fill(self.status, self.price, self.quantity)  # a ValueError: msgspec's ValidationError


WireSignal = _WireSignal  # what wire_event gives
WireOrder = _WireOrder
WireOrderEvent = _WireOrderEvent
WireEvent = WireSignal | WireOrder | WireOrderEvent
# the model each is a strict form of (its table, its name on the wire)
WIRE_MODELS: dict[type[WireEvent], type[Event]] = {WireSignal: Signal, WireOrder: Order, WireOrderEvent: OrderEvent}
_wire_decoders = {model.__name__: msgspec.json.Decoder(wire).decode for wire, model in WIRE_MODELS.items()}
# A time with more than six fractional digits (digits right before a time zone are a time's fraction,
# never a JSON number's): msgspec rounds the seventh, pydantic truncates it, so such an event is left
# to pydantic; so is one with an escape (``\u002e`` spells a time's dot as well). ~0.25 µs an event.
_long_fraction = re.compile(r"\.[0-9]{7,}[Zz+-]").search


def wire_event(kind: str, data: str) -> WireEvent | None:
    """The event of type ``kind`` (a Signal, an Order or an OrderEvent) in an entry's ``data`` as a
    plain struct with the model's fields when it passes the strict schema; None when it does not
    (then only decode_event can say whether it is valid) or ``kind`` has none. For the storage
    worker, which needs an event's values, not the pydantic object."""
    decoder = _wire_decoders.get(kind)
    if decoder is None or "\\" in data or _long_fraction(data):
        return None
    try:
        event: WireEvent = decoder(data)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    return event
