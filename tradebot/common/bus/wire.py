"""The wire format of an entry, and entry ids.

An entry is ``{"v": schema version, "type": event class name, "data": event JSON}``; ticks go
several to an entry (``{"v": "2", "type": "Ticks", "data": rows}``, see :func:`encode_entries`), and
every reader takes an entry's events with :func:`decode_entry`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from tradebot.common.codec import (
    TickRow,
    decode_event,
    decode_rows,
    encode_event,
    encode_row_values,
    encode_rows,
    row_count,
)
from tradebot.common.models import EVENT_TYPES, Event, Tick
from tradebot.common.streams import SCHEMA_VERSION, TICKS_SCHEMA_VERSION, TICKS_TYPE

TICKS_PER_ENTRY = 16  # BUS_TICKS_PER_ENTRY's default


@dataclass(frozen=True)
class Delivery:
    """One event handed to a consumer: the entry it came from and the decoded event. The ticks of a
    tick-batch entry are one delivery each, with the entry's id and their ``index`` in it (None for
    an entry of one event); an entry's deliveries always come in the same read, in order."""

    stream: str
    entry_id: str
    event: Event
    index: int | None = None


class RawEntry(NamedTuple):
    """A stream entry as Redis returns it, before decoding; ``fields`` is None or empty once trimmed.
    With ``row``, one tick of a tick-batch entry (its index there), ``fields`` a single-tick entry of
    it (a dead letter)."""

    stream: str
    entry_id: str
    fields: dict[str, str] | None
    row: int | None = None


def encode(event: Event) -> dict[str, str]:
    """The wire fields of an entry holding only ``event`` (a tick: a tick-batch entry of one)."""
    if type(event) is Tick:
        return {"v": TICKS_SCHEMA_VERSION, "type": TICKS_TYPE, "data": encode_rows([event])}
    return {"v": SCHEMA_VERSION, "type": type(event).__name__, "data": encode_event(event)}


def encode_entries(
    items: Iterable[tuple[str, Event]], ticks_per_entry: int = TICKS_PER_ENTRY
) -> list[tuple[str, dict[str, str]]]:
    """The entries that publish ``items``: each stream's run of ticks (up to ``ticks_per_entry``,
    until another event of that stream) in one tick-batch entry, every other event in one of its
    own. Each stream keeps its order; streams come in the order they first appear. The same items
    always give the same entries, byte for byte (the mock feed regenerates what it published)."""
    per_stream: dict[str, list[dict[str, str]]] = {}
    open_ticks: dict[str, list[Tick]] = {}
    for stream, event in items:
        entries = per_stream.setdefault(stream, [])
        if type(event) is Tick:
            run = open_ticks.setdefault(stream, [])
            if not run:
                entries.append({})  # filled in once the run is complete (keeps the stream's order)
            run.append(event)
            if len(run) >= ticks_per_entry:
                _close_run(entries, run)
                open_ticks[stream] = []
            continue
        _close_run(entries, open_ticks.pop(stream, None))
        entries.append(encode(event))
    for stream, run in open_ticks.items():
        _close_run(per_stream[stream], run)
    return [(stream, fields) for stream, entries in per_stream.items() for fields in entries]


def tick_entries(
    stream: str, rows: Sequence[TickRow], ticks_per_entry: int = TICKS_PER_ENTRY
) -> list[tuple[str, dict[str, str]]]:
    """The entries :func:`encode_entries` makes of ticks of one stream, byte for byte, from the
    ticks' values in the Tick's field order (``codec.encode_row_values``): the mock feed publishes
    its ticks without making Tick objects of them."""
    return [
        (
            stream,
            {"v": TICKS_SCHEMA_VERSION, "type": TICKS_TYPE, "data": encode_row_values(rows[at : at + ticks_per_entry])},
        )
        for at in range(0, len(rows), ticks_per_entry)
    ]


def _close_run(entries: list[dict[str, str]], run: list[Tick] | None) -> None:
    if run:
        entries[-1].update({"v": TICKS_SCHEMA_VERSION, "type": TICKS_TYPE, "data": encode_rows(run)})


class EntryEvents(NamedTuple):
    """What :func:`decode_entry` finds in an entry."""

    events: list[Event]  # the valid ones, in order
    indexes: list[int | None]  # each one's index in a tick-batch entry (None: an entry of one event)
    invalid: list[tuple[int, str]]  # a tick-batch entry's ticks that are not valid: (index, reason)


def decode_entry(fields: Mapping[str, str]) -> EntryEvents:
    """The events of an entry (a tick-batch entry's ticks, or an entry's one event); raises
    ValueError with the reason when the entry as a whole is unreadable (a version or type this
    release does not know, bad JSON, an entry of one event that is not valid). A tick of a batch
    that is not valid is listed in ``invalid``, and its neighbours come back as usual."""
    version, kind = fields.get("v"), fields.get("type", "")
    if version not in (SCHEMA_VERSION, TICKS_SCHEMA_VERSION):
        raise ValueError(f"unsupported schema version {version!r}")
    if version == TICKS_SCHEMA_VERSION and kind == TICKS_TYPE:
        events: list[Event] = []
        indexes: list[int | None] = []
        invalid: list[tuple[int, str]] = []
        for index, tick in enumerate(decode_rows(fields.get("data", ""))):
            if isinstance(tick, str):
                invalid.append((index, tick))
            else:
                events.append(tick)
                indexes.append(index)
        return EntryEvents(events, indexes, invalid)
    model = EVENT_TYPES.get(kind) if version == SCHEMA_VERSION else None
    if model is None:
        raise ValueError(f"unknown event type {fields.get('type')!r} (schema version {version})")
    return EntryEvents([decode_event(model, fields.get("data", ""))], [None], [])


def entry_events(fields: Mapping[str, str]) -> int:
    """How many events an entry holds (a tick-batch entry: its ticks), without validating them:
    what counts of ticks (bench figures, tools) add up."""
    if fields.get("v") == TICKS_SCHEMA_VERSION and fields.get("type") == TICKS_TYPE:
        return row_count(fields.get("data", ""))
    return 1


def decode(fields: Mapping[str, str]) -> Event:
    """The one event of an entry that holds one (a tick-batch entry of one tick too); raises
    ValueError with the reason when it is not a valid one, or holds several (use :func:`decode_entry`)."""
    events, _, invalid = decode_entry(fields)
    if invalid:
        raise ValueError(invalid[0][1])
    if len(events) != 1:
        raise ValueError(f"an entry of {len(events)} events, not one")
    return events[0]


def decode_all(fields: Mapping[str, str]) -> list[Event]:
    """Every event of an entry; raises ValueError when the entry, or one of its ticks, is not valid
    (for tools and tests reading results back; a worker dead-letters a bad tick alone instead)."""
    events, _, invalid = decode_entry(fields)
    if invalid:
        raise ValueError(f"tick {invalid[0][0]} of the entry: {invalid[0][1]}")
    return events


def entry_ms(entry_id: str) -> int:
    """The millisecond time part of a stream entry id (Redis server time at XADD)."""
    return int(entry_id.split("-", 1)[0])


def entry_order(entry_id: str) -> tuple[int, int]:
    """Stream ids compare as (milliseconds, sequence), not as strings."""
    millis, _, sequence = entry_id.partition("-")
    return int(millis), int(sequence or 0)


def entry_fields(raw: list[str] | dict[str, str] | None) -> dict[str, str] | None:
    """An entry's fields as a dict, from a script's flat [field, value, …] reply or redis-py's dict
    (None for a trimmed entry)."""
    if not raw:
        return None
    if isinstance(raw, dict):
        return raw
    return dict(zip(raw[::2], raw[1::2], strict=True))
