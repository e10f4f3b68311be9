"""Reading through consumer groups (XREADGROUP, XAUTOCLAIM): decoded deliveries, the entries that
fail validation or were delivered too often dead-lettered on the way, trimmed ones acked."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from redis.exceptions import ResponseError

from tradebot.common.bus.connection import by_slot, is_cluster
from tradebot.common.bus.dead_letters import DeadLettering, tick_dead_letter
from tradebot.common.bus.wire import Delivery, RawEntry, decode_entry, entry_fields

log = logging.getLogger(__name__)


class GroupReads(DeadLettering):
    """Read, reclaim and (with what fails) dead-letter entries through consumer groups."""

    async def ensure_group(self, stream: str, group: str) -> None:
        """Create the group at the start of the stream; an existing group is fine (BUSYGROUP only)."""
        try:
            await self.redis.xgroup_create(stream, group, id="0", mkstream=True)
        except ResponseError as error:
            if not str(error).startswith("BUSYGROUP"):
                raise

    async def read(
        self,
        streams: Sequence[str],
        group: str,
        consumer: str,
        *,
        count: int,
        block_ms: int | None,
        pending: bool = False,
    ) -> list[Delivery]:
        """New entries (or, with ``pending``, this consumer's unacked ones), decoded.

        Entries that fail validation, or were delivered too often, go to the dead-letter stream
        here and are never returned; an empty list therefore always means "nothing to read".
        """
        start = "0" if pending else ">"
        while True:
            entries = await self._read_group(streams, group, consumer, start, count, None if pending else block_ms)
            if not entries:
                return []
            if pending:
                entries = await self._drop_overdelivered(group, consumer, await self._drop_trimmed(group, entries))
            deliveries = await self._decode_or_dead_letter(group, entries)
            if deliveries:
                return deliveries

    async def _read_group(
        self, streams: Sequence[str], group: str, consumer: str, start: str, count: int, block_ms: int | None
    ) -> list[RawEntry]:
        """One XREADGROUP; on a cluster one per slot: a look at every slot first, then, if all were
        empty, a blocking read of each in turn with a share of ``block_ms`` (so no slot waits long)."""
        slots = by_slot(streams) if is_cluster(self.redis) else [list(streams)]
        blocks: list[int | None] = [None] if len(slots) > 1 or block_ms is None else [block_ms]
        if len(slots) > 1 and block_ms is not None:
            blocks.append(max(1, block_ms // len(slots)))
        for block in blocks:
            entries: list[RawEntry] = []
            for slot in slots:
                reply = await self.redis.xreadgroup(group, consumer, {s: start for s in slot}, count=count, block=block)
                entries += [RawEntry(stream, entry_id, fields) for stream, rows in reply for entry_id, fields in rows]
                if entries and block is not None:
                    return entries
            if entries:
                return entries
        return []

    async def read_fenced(
        self, streams: Sequence[str], group: str, consumer: str, lease: tuple[str, str], *, count: int, pending: bool
    ) -> list[Delivery] | None:
        """Like :meth:`read` without blocking, but only while ``lease`` is held; None once it is not.

        The lease check and the XREADGROUP run as one script, so a worker that lost its lease can
        no longer take entries that belong, in order, to the partition's new owner. On a cluster
        that holds for the streams in the lease's slot; a stream in another slot (execution reads
        every partition's orders) is read right after a check of the lease, its pending entries
        first: a stale owner paused between its check and its read may have taken some for this
        consumer, and they come next, in order.
        """
        start = "0" if pending else ">"
        while True:
            entries: list[RawEntry] = []
            for streams_of_slot, fenced in self._fence_groups(lease[0], streams):
                if fenced:
                    keys = [lease[0], *streams_of_slot]
                    reply = await self._fenced_read(keys=keys, args=[lease[1], group, consumer, count, start])
                elif await self.redis.get(lease[0]) != lease[1]:
                    reply = 0
                else:
                    reply = await self.redis.xreadgroup(
                        group, consumer, dict.fromkeys(streams_of_slot, "0"), count=count
                    )
                    if not pending and not any(rows for _, rows in reply):
                        wanted = dict.fromkeys(streams_of_slot, ">")
                        reply = await self.redis.xreadgroup(group, consumer, wanted, count=count)
                if reply == 0:
                    return None
                for stream, rows in reply or []:
                    entries += [RawEntry(stream, entry_id, entry_fields(raw)) for entry_id, raw in rows]
            live = await self._drop_trimmed(group, entries)
            deliveries = await self._decode_or_dead_letter(group, live)
            if deliveries or not entries:
                return deliveries

    async def reclaim_idle(
        self, stream: str, group: str, consumer: str, *, min_idle_ms: int, count: int = 100
    ) -> list[Delivery]:
        """Take over entries another (presumably dead) consumer left unacked for too long."""
        claimed: list[RawEntry] = []
        cursor = "0-0"
        while True:
            reply = await self.redis.xautoclaim(stream, group, consumer, min_idle_ms, cursor, count=count)
            cursor, rows = reply[0], reply[1]
            claimed.extend(RawEntry(stream, entry_id, fields) for entry_id, fields in rows if entry_id is not None)
            if any(entry_id is None for entry_id, _ in rows):  # Redis 6.2: trimmed entries come back id-less
                await self._ack_vanished(stream, group, consumer)
            if len(reply) > 2 and reply[2]:  # Redis 7: ids of trimmed entries, already dropped from the PEL
                for entry_id in reply[2]:
                    self._note_trimmed(stream, entry_id, group)
            if cursor == "0-0" or len(claimed) >= count:
                break
        live = await self._drop_trimmed(group, claimed)
        if live:
            live = await self._drop_overdelivered(group, consumer, live)
        return await self._decode_or_dead_letter(group, live)

    async def _drop_overdelivered(self, group: str, consumer: str, entries: list[RawEntry]) -> list[RawEntry]:
        """Dead-letter entries delivered more than ``max_deliveries`` times; return the rest."""
        times: dict[str, int] = {}
        for stream in {entry.stream for entry in entries}:
            ids = [entry.entry_id for entry in entries if entry.stream == stream]
            rows = await self.redis.xpending_range(
                stream, group, min=ids[0], max=ids[-1], count=len(ids) + 1000, consumername=consumer
            )
            times.update((row["message_id"], row["times_delivered"]) for row in rows)
        keep = []
        for stream, entry_id, fields, _ in entries:
            delivered = times.get(entry_id, 0)
            if delivered > self.max_deliveries:
                last = self.last_errors.get(entry_id, "no ack (handler failed or worker died)")
                await self.dead_letter(
                    group, stream, entry_id, fields, f"delivered {delivered} times without ack; last error: {last}"
                )
            else:
                keep.append(RawEntry(stream, entry_id, fields))
        return keep

    async def _ack_vanished(self, stream: str, group: str, consumer: str) -> None:
        """Ack this consumer's pending entries whose data is gone (Redis 6.2 claims them as nil, id-less)."""
        for row in await self.redis.xpending_range(stream, group, min="-", max="+", count=1000, consumername=consumer):
            entry_id = row["message_id"]
            if not await self.redis.xrange(stream, min=entry_id, max=entry_id):
                await self.redis.xack(stream, group, entry_id)
                self._note_trimmed(stream, entry_id, group)

    async def _drop_trimmed(self, group: str, entries: list[RawEntry]) -> list[RawEntry]:
        """Ack pending entries whose data was trimmed away (nothing left to process); return the rest.

        XADD needs at least one field, so an entry without fields can only be a trimmed one.
        """
        gone = [(entry.stream, entry.entry_id) for entry in entries if not entry.fields]
        for stream, entry_id in gone:
            await self.redis.xack(stream, group, entry_id)
            self._note_trimmed(stream, entry_id, group)
        return [entry for entry in entries if entry.fields]

    def _note_trimmed(self, stream: str, entry_id: str, group: str) -> None:
        """A pending entry whose data is gone (someone trimmed or deleted it): counted and logged, never silent."""
        self.stats["trimmed_before_ack"] += 1
        log.error(
            "%s %s was deleted before %s acked it: its event is lost to this group (trimmed by hand, "
            "or with MAXLEN by another tool?)",
            stream,
            entry_id,
            group,
        )

    async def _decode_or_dead_letter(self, group: str, entries: list[RawEntry]) -> list[Delivery]:
        deliveries = []
        for entry in entries:
            stream, entry_id, fields = entry.stream, entry.entry_id, entry.fields
            try:
                events, indexes, invalid = decode_entry(fields or {})  # trimmed ones are gone by now
            except ValueError as error:
                await self.dead_letter(group, stream, entry_id, fields, str(error))
                continue
            for index, reason in invalid:  # the entry's valid ticks go on (their ack acks the entry)
                bad = tick_dead_letter(entry, index)
                await self.dead_letter(group, stream, entry_id, bad.fields, reason, index=index, last=not events)
            deliveries += [Delivery(stream, entry_id, *pair) for pair in zip(events, indexes, strict=True)]
        return deliveries
