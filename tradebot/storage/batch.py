"""What one positioned read hands the storage writer: values, not pydantic objects.

Storage needs a tick's six values in the ``ticks`` table's column arrays, never a Tick: building
the pydantic object per tick cost as much as decoding its JSON and kept ~2× the memory per tick in
flight. So a tick-batch entry is decoded by the strict msgspec schema straight into plain rows
(:func:`tradebot.common.codec.wire_rows`: the same checks ``decode_entry`` makes first). Only an
entry that fails that schema takes ``decode_entry``'s path (pydantic's lax rules, the reason and
index of each bad tick), so a malformed tick is dead-lettered exactly as before and its neighbours
are stored. Signals, orders and order events are decoded the same way, by the strict schemas of
:func:`tradebot.common.codec.wire_event` into plain structs with the model's fields (pydantic's
validation of one cost ~10 µs, ~2 µs per stored tick for the three); an entry a schema refuses goes
through ``decode_entry`` too, which accepts it under pydantic's rules or gives the dead-letter
reason. Every other event (bars, ticks of an older release's one-tick entries) decodes as before.

The raw entries stay with the batch: if the database rejects the batch as a whole, the reader
retries it event by event (:meth:`StorageBatch.deliveries`, the slow path, which decodes them
again with ``decode_entry``) to set the culprit aside.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tradebot.common.bus import Bus
from tradebot.common.bus.dead_letters import tick_dead_letter
from tradebot.common.bus.wire import Delivery, RawEntry, decode_entry
from tradebot.common.codec import wire_event, wire_rows
from tradebot.common.models import Tick
from tradebot.common.streams import SCHEMA_VERSION, TICKS_SCHEMA_VERSION, TICKS_TYPE
from tradebot.storage.writer import EventValues, TickValues


@dataclass
class StorageBatch:
    """One read's events for the writer: its ticks as values, every other event as values or as
    the decoded event, each kind in stream order."""

    ticks: list[TickValues] = field(default_factory=list)  # the valid ticks, in stream order
    events: list[EventValues] = field(default_factory=list)  # everything that is not a tick
    entries: list[RawEntry] = field(default_factory=list)  # the entries they came from, in order
    given: list[Delivery] = field(default_factory=list)  # the deliveries a batch was made of (of)

    def __len__(self) -> int:
        return len(self.ticks) + len(self.events)

    @classmethod
    def of(cls, deliveries: Sequence[Delivery]) -> StorageBatch:
        """A batch of decoded deliveries (the consumer group's, or one event when a batch is retried
        entry by entry)."""
        batch = cls(given=list(deliveries))
        for delivery in deliveries:
            if type(delivery.event) is Tick:
                batch.ticks.append(delivery.event)
            else:
                batch.events.append(delivery.event)
        return batch

    def deliveries(self) -> list[Delivery]:
        """Every event of the batch as a delivery (decoded again from their entries, with a tick's
        index): for the retry one event at a time, which is rare."""
        deliveries: list[Delivery] = []
        for entry in self.entries:  # each decoded before: decode_entry accepts it (its valid events)
            events, indexes, _ = decode_entry(entry.fields or {})
            deliveries += [Delivery(entry.stream, entry.entry_id, *pair) for pair in zip(events, indexes, strict=True)]
        return deliveries + self.given


Read = tuple[StorageBatch, list[tuple[RawEntry, str]], dict[str, str]]


async def read_batch(bus: Bus, positions: Mapping[str, str], lease: tuple[str, str], *, count: int) -> Read | None:
    """As :meth:`Bus.read_positioned` (the same lease-fenced XREAD script), decoded for storage:
    the batch, the entries and ticks that fail validation with the reason (for the commit's
    dead-letter records), and where each stream's read ended; None once the lease is not ours."""
    entries = await bus.read_positioned_entries(positions, lease, count=count)
    if entries is None:
        return None
    batch = StorageBatch()
    rejected: list[tuple[RawEntry, str]] = []
    ended: dict[str, str] = {}
    for entry in entries:
        fields = entry.fields or {}
        ended[entry.stream] = entry.entry_id
        version = fields.get("v")
        if version == TICKS_SCHEMA_VERSION and fields.get("type") == TICKS_TYPE:
            ticks = wire_rows(fields.get("data", ""))
            if ticks:  # every row valid under the strict schema (the usual case)
                batch.ticks += ticks
                batch.entries.append(entry)
                continue
        elif version == SCHEMA_VERSION:
            event = wire_event(fields.get("type", ""), fields.get("data", ""))
            if event is not None:  # a signal, order or order event valid under its strict schema
                batch.events.append(event)
                batch.entries.append(entry)
                continue
        _add_decoded(batch, rejected, entry)
    return batch, rejected, ended


def _add_decoded(batch: StorageBatch, rejected: list[tuple[RawEntry, str]], entry: RawEntry) -> None:
    """An entry through ``decode_entry``: its valid events into the batch, the rest into ``rejected``."""
    try:
        events, _, invalid = decode_entry(entry.fields or {})
    except ValueError as error:
        rejected.append((entry, str(error)))
        return
    rejected += [(tick_dead_letter(entry, index), reason) for index, reason in invalid]
    if events:
        batch.entries.append(entry)
    for event in events:
        if type(event) is Tick:
            batch.ticks.append(event)
        else:
            batch.events.append(event)
