"""What one positioned read hands the storage writer: tick values, not Tick objects.

Storage needs a tick's six values in the ``ticks`` table's column arrays, never a Tick: building
the pydantic object per tick cost as much as decoding its JSON and kept ~2× the memory per tick in
flight. So a tick-batch entry is decoded by the strict msgspec schema straight into plain rows
(:func:`tradebot.common.codec.wire_rows`: the same checks ``decode_entry`` makes first). Only an
entry that fails that schema takes ``decode_entry``'s path (pydantic's lax rules, the reason and
index of each bad tick), so a malformed tick is dead-lettered exactly as before and its neighbours
are stored. Every other event (signals, orders, ticks of an older release's one-tick entries)
decodes as before.

The raw tick entries stay with the batch: if the database rejects the batch as a whole, the reader
retries it event by event (:meth:`StorageBatch.deliveries`, the slow path) to set the culprit aside.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tradebot.common.bus import Bus
from tradebot.common.bus.dead_letters import tick_dead_letter
from tradebot.common.bus.wire import Delivery, RawEntry, decode_entry
from tradebot.common.codec import wire_rows
from tradebot.common.models import Tick
from tradebot.common.streams import TICKS_SCHEMA_VERSION, TICKS_TYPE
from tradebot.storage.writer import TickValues


@dataclass
class StorageBatch:
    """One read's events for the writer: its ticks as values, every other event as a delivery."""

    ticks: list[TickValues] = field(default_factory=list)  # the valid ticks, in stream order
    tick_entries: list[RawEntry] = field(default_factory=list)  # the entries they came from
    events: list[Delivery] = field(default_factory=list)  # everything that is not a tick

    def __len__(self) -> int:
        return len(self.ticks) + len(self.events)

    @classmethod
    def of(cls, deliveries: Sequence[Delivery]) -> StorageBatch:
        """A batch of decoded deliveries (one event at a time, when a batch is retried entry by entry)."""
        batch = cls()
        for delivery in deliveries:
            if type(delivery.event) is Tick:
                batch.ticks.append(delivery.event)
            else:
                batch.events.append(delivery)
        return batch

    def deliveries(self) -> list[Delivery]:
        """Every event of the batch as a delivery (the ticks decoded again from their entries, with
        their index): for the retry one event at a time, which is rare."""
        deliveries: list[Delivery] = []
        for entry in self.tick_entries:
            events, indexes, _ = decode_entry(entry.fields or {})
            deliveries += [Delivery(entry.stream, entry.entry_id, *pair) for pair in zip(events, indexes, strict=True)]
        return deliveries + self.events


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
        if fields.get("v") == TICKS_SCHEMA_VERSION and fields.get("type") == TICKS_TYPE:
            ticks = wire_rows(fields.get("data", ""))
            if ticks:  # every row valid under the strict schema (the usual case)
                batch.ticks += ticks
                batch.tick_entries.append(entry)
                continue
        _add_decoded(batch, rejected, entry)
    return batch, rejected, ended


def _add_decoded(batch: StorageBatch, rejected: list[tuple[RawEntry, str]], entry: RawEntry) -> None:
    """An entry through ``decode_entry``: its valid events into the batch, the rest into ``rejected``."""
    try:
        events, indexes, invalid = decode_entry(entry.fields or {})
    except ValueError as error:
        rejected.append((entry, str(error)))
        return
    rejected += [(tick_dead_letter(entry, index), reason) for index, reason in invalid]
    ticks = [event for event in events if type(event) is Tick]
    if ticks:
        batch.ticks += ticks
        batch.tick_entries.append(entry)
    batch.events += [
        Delivery(entry.stream, entry.entry_id, event, index)
        for event, index in zip(events, indexes, strict=True)
        if type(event) is not Tick
    ]
