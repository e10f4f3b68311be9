"""The JSON of bus events, fast where it counts: ticks through msgspec, everything else through pydantic.

Ticks are nearly every entry on the bus, and pydantic costs several microseconds to validate or
dump each one. msgspec does the same work for the :class:`Tick` schema in a fraction of that and
writes the same bytes pydantic writes for a tick (field order, ``Z`` timestamps, shortest floats;
checked by tests/test_codec.py), so the wire format is unchanged (schema version 1): old and new
entries read alike, and a regenerated tick is byte-identical to the one published before.

Decoding never accepts what pydantic would refuse. The msgspec schema below is pydantic's
:class:`Tick` made stricter, never looser (RFC 3339 timestamps only, numbers as numbers); an entry it
refuses goes through pydantic, which either accepts it (with its lax rules) or gives the reason the
dead-letter record shows. Other events are rare (a signal per few ticks), so they keep pydantic,
and are written without the fields that hold their defaults (:func:`encode_event`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from pydantic import ValidationError

from tradebot.common.models import (
    MAX_PRICE,
    MAX_QUANTITY,
    MIN_PRICE,
    MIN_QUANTITY,
    Event,
    Tick,
    built,
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


_decode_tick = msgspec.json.Decoder(_WireTick).decode
_encode = msgspec.json.Encoder().encode


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


def wire_tick(data: str) -> WireTick | None:
    """The tick in a tick entry's ``data`` as a plain struct (id, symbol, timestamp, price, size,
    source) when it passes the strict schema decode_event tries first; None when it does not (then
    only decode_event can say whether it is valid). For readers that need a tick's values, not a
    Tick: building the pydantic object costs as much as the decoding."""
    try:
        return _decode_tick(data)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
